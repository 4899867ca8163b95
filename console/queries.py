"""What the console reads from the projections store: one function per question, parameterized SQL.

Every read uses ``FINAL`` (or reads a view that does): the console shows exact states, not rows
waiting for a merge. The store client is synchronous; the routes call these off the event loop.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any, Protocol

from console.diff import word_diff
from console.errors import NotFound
from console.filters import PairFilter
from schemas.ids import feedback_event_id


class Store(Protocol):
    """The part of ``infra.clickhouse.ClickHouseStore`` the console uses (tests pass a real chDB)."""

    database: str

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def raw_query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        fmt: str = "JSONEachRow",
        settings: dict[str, Any] | None = None,
    ) -> bytes: ...


PAIR_FIELDS = (
    "pair_id, user_id, prompt, chosen_response, rejected_response, confidence_score, "
    "quality_score, feedback_type, created_at, is_active, training_weight, metadata, "
    "feedback_event_id, version"
)
# TRL's preference columns first (``samtuner pairs export`` writes the same ones).
EXPORT_FIELDS = (
    "prompt, chosen_response AS chosen, rejected_response AS rejected, toString(pair_id) AS pair_id, user_id, "
    "training_weight, quality_score, confidence_score, feedback_type, created_at"
)


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) and text else {}
    except json.JSONDecodeError:
        return {}


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()  # the store keeps UTC
    return value.isoformat() if isinstance(value, date) else value


def _value(v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, list | tuple):
        return [_value(x) for x in v]
    return _iso(v)


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in row.items()}


class ConsoleQueries:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.database

    # -- preference data ---------------------------------------------------------------------------

    def pairs_page(self, f: PairFilter, page: int, size: int) -> dict[str, Any]:
        where, params = f.where()
        # Page the keys first, then read the texts of that page only: the sort never carries the texts.
        keys = (
            f"SELECT user_id, pair_id FROM {self.db}.preference_pairs FINAL WHERE {where} "
            "ORDER BY created_at DESC, pair_id LIMIT {size:UInt32} OFFSET {offset:UInt64}"
        )
        rows = self.store.query_dicts(
            f"SELECT {PAIR_FIELDS} FROM {self.db}.preference_pairs FINAL WHERE (user_id, pair_id) IN ({keys}) "
            "ORDER BY created_at DESC, pair_id",
            {**params, "size": size, "offset": page * size},
        )
        total = int(
            self.store.query(f"SELECT count() FROM {self.db}.preference_pairs FINAL WHERE {where}", params)[0][0]
        )
        return {
            "total": total,
            "page": page,
            "size": size,
            "rows": [self._pair(r) for r in rows],
            "filter": f.model_dump(mode="json", exclude_none=True),
        }

    def _pair(self, r: dict[str, Any]) -> dict[str, Any]:
        out = _clean(r)
        meta = _json(r.get("metadata"))
        out["metadata"] = meta
        out["near_identical"] = bool(meta.get("near_identical", False))
        out["similarity"] = meta.get("similarity")
        out["diff"] = word_diff(r["rejected_response"], r["chosen_response"])
        return out

    def pair(self, pair_id: str) -> dict[str, Any]:
        rows = self.store.query_dicts(
            f"SELECT {PAIR_FIELDS} FROM {self.db}.preference_pairs FINAL WHERE pair_id = {{pid:UUID}}", {"pid": pair_id}
        )
        if not rows:
            raise NotFound(f"no pair {pair_id}")
        return self._pair(rows[0])

    def matching_keys(
        self,
        f: PairFilter,
        extra: str = "",
        extra_params: dict[str, Any] | None = None,
    ) -> list[tuple[str, uuid.UUID, int]]:
        """(user, pair id, row version) of every pair matching ``f`` (and ``extra``): a bulk action's rows."""
        where, params = f.where()
        if extra:
            where = f"({where}) AND ({extra})"
        rows = self.store.query(
            f"SELECT user_id, pair_id, version FROM {self.db}.preference_pairs FINAL "
            f"WHERE {where} ORDER BY user_id, pair_id",
            {**params, **(extra_params or {})},
        )
        return [(str(u), p if isinstance(p, uuid.UUID) else uuid.UUID(str(p)), int(v)) for u, p, v in rows]

    def count(self, f: PairFilter) -> int:
        where, params = f.where()
        return int(
            self.store.query(f"SELECT count() FROM {self.db}.preference_pairs FINAL WHERE {where}", params)[0][0]
        )

    def export(self, f: PairFilter, fmt: str, batch: int = 50_000) -> Iterator[bytes]:
        """The filtered pairs in TRL's preference columns, formatted by ClickHouse itself: JSONL in
        batches in key order (each batch starts after the last key of the one before: keyset paging on
        the table's sort key, never OFFSET), or one Parquet file."""
        where, params = f.where()
        if fmt == "parquet":
            yield self.store.raw_query(
                f"SELECT {EXPORT_FIELDS} FROM (SELECT * FROM {self.db}.preference_pairs FINAL WHERE {where} "
                "ORDER BY user_id, pair_id)",
                params,
                fmt="Parquet",
                settings={"output_format_parquet_compression_method": "zstd"},
            )
            return
        after: dict[str, str] | None = None
        while True:
            cond = (
                where if after is None else (f"({where}) AND (user_id, pair_id) > ({{a_user:String}}, {{a_pair:UUID}})")
            )
            extra = {} if after is None else {"a_user": after["user_id"], "a_pair": after["pair_id"]}
            data = self.store.raw_query(
                f"SELECT {EXPORT_FIELDS} FROM (SELECT * FROM {self.db}.preference_pairs FINAL WHERE {cond} "
                "ORDER BY user_id, pair_id LIMIT {size:UInt32})",
                {**params, **extra, "size": batch},
                fmt="JSONEachRow",
                settings={"output_format_json_quote_64bit_integers": 0},
            )
            if not data:
                return
            yield data
            lines = data.rstrip(b"\n").rsplit(b"\n", 1)
            if data.count(b"\n") < batch:
                return
            after = json.loads(lines[-1])

    def rejected(self, reason: str | None, user: str | None, page: int, size: int) -> dict[str, Any]:
        conds: list[str] = ["1"]
        params: dict[str, Any] = {"size": size, "offset": page * size}
        if reason:
            conds.append("has(reason_codes, {reason:String})")
            params["reason"] = reason
        if user:
            conds.append("user_id = {user:String}")
            params["user"] = user
        where = " AND ".join(conds)
        rows = self.store.query_dicts(
            "SELECT feedback_event_id, user_id, feedback_type, reason_codes, "
            "reason_details, quality_score, prompt, chosen_response, rejected_response, created_at "
            f"FROM {self.db}.rejected_feedback FINAL WHERE {where} ORDER BY created_at DESC, feedback_event_id "
            "LIMIT {size:UInt32} OFFSET {offset:UInt64}",
            params,
        )
        total = int(
            self.store.query(f"SELECT count() FROM {self.db}.rejected_feedback FINAL WHERE {where}", params)[0][0]
        )
        reasons = self.store.query(
            f"SELECT reason, count() FROM {self.db}.rejected_feedback FINAL ARRAY JOIN reason_codes AS reason "
            "GROUP BY reason ORDER BY count() DESC, reason"
        )
        return {
            "total": total,
            "page": page,
            "size": size,
            "rows": [_clean(r) for r in rows],
            "reasons": [{"reason": r, "count": int(n)} for r, n in reasons],
        }

    def dead_letters(self, reason: str | None, page: int, size: int) -> dict[str, Any]:
        params: dict[str, Any] = {"size": size, "offset": page * size}
        where = "1"
        if reason:
            where, params["reason"] = "reason = {reason:String}", reason
        rows = self.store.query_dicts(
            "SELECT source_topic, source_partition, source_offset, stage, reason, error, key, payload_preview, "
            f"payload_bytes, payload_sha256, failed_at FROM {self.db}.dead_letters FINAL WHERE {where} "
            "ORDER BY failed_at DESC, payload_sha256 LIMIT {size:UInt32} OFFSET {offset:UInt64}",
            params,
        )
        total = int(self.store.query(f"SELECT count() FROM {self.db}.dead_letters FINAL WHERE {where}", params)[0][0])
        reasons = self.store.query(
            f"SELECT reason, count() FROM {self.db}.dead_letters FINAL GROUP BY reason ORDER BY count() DESC, reason"
        )
        return {
            "total": total,
            "page": page,
            "size": size,
            "rows": [_clean(r) for r in rows],
            "reasons": [{"reason": r, "count": int(n)} for r, n in reasons],
        }

    # -- training ----------------------------------------------------------------------------------

    def users(self, min_new_pairs: int) -> list[dict[str, Any]]:
        """Per user: pairs, active pairs, and new pairs since the last training request (toward the threshold)."""
        rows = self.store.query_dicts(
            "SELECT p.user_id AS user_id, count() AS pairs, countIf(p.is_active) AS active_pairs, "
            "countIf(p.created_at > r.last_at) AS new_pairs, any(r.generation) AS generation "
            f"FROM (SELECT user_id, created_at, is_active FROM {self.db}.preference_pairs FINAL) AS p "
            "LEFT JOIN (SELECT user_id, max(triggered_at) AS last_at, max(generation) AS generation "
            f"FROM {self.db}.training_requests FINAL GROUP BY user_id) AS r ON r.user_id = p.user_id "
            "GROUP BY p.user_id ORDER BY p.user_id"
        )
        return [
            {**_clean(r), "threshold": min_new_pairs, "progress": f"{int(r['new_pairs'])} / {min_new_pairs}"}
            for r in rows
        ]

    def jobs(self, user: str | None, limit: int = 200, request_id: str | None = None) -> list[dict[str, Any]]:
        conds: list[str] = ["1"]
        params: dict[str, Any] = {}
        if user:
            conds.append("j.user_id = {user:String}")
            params["user"] = user
        if request_id:
            conds.append("j.request_id = {rid:UUID}")
            params["rid"] = request_id
        rows = self.store.query_dicts(
            "SELECT j.request_id AS request_id, j.user_id AS user_id, j.status AS status, "
            "j.attempt AS attempt, j.step AS step, j.total_steps AS total_steps, j.loss AS loss, "
            "j.adapter_version AS adapter_version, j.cause AS cause, j.metrics AS metrics, "
            "j.updated_at AS updated_at, j.worker AS worker, j.epoch AS epoch, j.eta_s AS eta_s, "
            "r.generation AS generation, r.trigger AS trigger, r.requested_at AS requested_at, "
            "r.dataset_rows AS dataset_rows, r.dpo_overrides AS dpo_overrides "
            f"FROM {self.db}.training_jobs AS j FINAL "
            f"LEFT JOIN (SELECT * FROM {self.db}.training_requests FINAL) AS r ON r.request_id = j.request_id "
            f"WHERE {' AND '.join(conds)} ORDER BY r.requested_at DESC, j.updated_at DESC LIMIT {int(limit)}",
            params,
        )
        return [{**_clean(r), "metrics": _json(r["metrics"]), "dpo_overrides": _json(r["dpo_overrides"])} for r in rows]

    def job(self, request_id: str) -> dict[str, Any]:
        rows = self.jobs(None, limit=1, request_id=request_id)
        if not rows:
            raise NotFound(f"no training job {request_id}")
        return rows[0]

    def progress(self, request_id: str) -> list[dict[str, Any]]:
        rows = self.store.query_dicts(
            "SELECT attempt, step, total_steps, epoch, loss, eval_loss, reward_accuracy, reward_margin, eta_s, "
            f"occurred_at FROM {self.db}.training_progress FINAL WHERE request_id = {{rid:UUID}} "
            "ORDER BY attempt, step, source_partition, source_offset",
            {"rid": request_id},
        )
        return [_clean(r) for r in rows]

    # -- models ------------------------------------------------------------------------------------

    def adapters(self, user: str) -> list[dict[str, Any]]:
        rows = self.store.query_dicts(
            "SELECT user_id, version, request_id, uri, base_model, dataset_sha256, metrics, "
            "baseline_metrics, published_at, config_sha256, train_pair_ids, heldout_pair_ids, parent_version, "
            f"revoked, libraries FROM {self.db}.adapters FINAL WHERE user_id = {{user:String}} ORDER BY version DESC",
            {"user": user},
        )
        return [
            {
                **_clean(r),
                "metrics": _json(r["metrics"]),
                "baseline_metrics": _json(r["baseline_metrics"]),
                "libraries": _json(r["libraries"]),
            }
            for r in rows
        ]

    def adapter_users(self) -> list[dict[str, Any]]:
        rows = self.store.query_dicts(
            "SELECT user_id, max(version) AS latest_version, count() AS versions, max(published_at) AS last_published "
            f"FROM {self.db}.adapters FINAL GROUP BY user_id ORDER BY user_id"
        )
        return [_clean(r) for r in rows]

    def correction_rates(self, user: str) -> list[dict[str, Any]]:
        rows = self.store.query_dicts(
            "SELECT l.arm AS arm, l.adapter_version AS adapter_version, uniqExact(l.answer_id) AS answers, "
            "uniqExactIf(l.answer_id, f.feedback_type = 'correction') AS corrected, "
            "round(corrected / answers, 4) AS correction_rate "
            f"FROM {self.db}.inference_log AS l FINAL "
            f"LEFT JOIN (SELECT answer_id, feedback_type FROM {self.db}.answer_feedback FINAL) AS f "
            "ON f.answer_id = l.answer_id WHERE l.user_id = {user:String} "
            "GROUP BY l.arm, l.adapter_version ORDER BY l.arm, l.adapter_version",
            {"user": user},
        )
        return [_clean(r) for r in rows]

    # -- trace -------------------------------------------------------------------------------------

    def trace(self, ident: str, user: str | None = None) -> dict[str, Any]:
        """The chain around a feedback event, an answer, or a pair; ``user`` + SAM's feedback id works too."""
        ident = ident.strip().removeprefix("chatcmpl-")
        candidates = []
        with contextlib.suppress(ValueError):
            candidates.append(str(uuid.UUID(ident)))
        if user:
            candidates.append(str(feedback_event_id(user, ident)))
        for cid in candidates:
            answer = self._answer(cid)
            if answer is not None:
                return self._answer_chain(answer)
            chain = self._feedback_chain(cid)
            if chain is not None:
                return chain
        dead = self._dead_letters_mentioning(ident)
        if dead:
            return {"kind": "dead_letter", "id": ident, "steps": [{**d, "step": "dead_letter"} for d in dead]}
        raise NotFound(
            f"nothing found for {ident!r}: not an answer id, a feedback event id or a pair id"
            + ("" if user else " (for SAM's own feedback id, give the user too)")
        )

    def _answer(self, answer_id: str) -> dict[str, Any] | None:
        rows = self.store.query_dicts(
            "SELECT answer_id, user_id, node_id, arm, adapter_version, fallback_reason, "
            f"latency_ms, completion_tokens, served_at FROM {self.db}.inference_log FINAL "
            "WHERE answer_id = {aid:UUID}",
            {"aid": answer_id},
        )
        return _clean(rows[0]) if rows else None

    def _feedback_chain(self, fid: str) -> dict[str, Any] | None:
        pairs = self.store.query_dicts(
            f"SELECT {PAIR_FIELDS} FROM {self.db}.preference_pairs FINAL "
            "WHERE feedback_event_id = {fid:UUID} OR pair_id = {fid:UUID}",
            {"fid": fid},
        )
        if pairs:
            pair = self._pair(pairs[0])
            steps: list[dict[str, Any]] = [
                {
                    "step": "feedback",
                    "feedback_event_id": pair["feedback_event_id"],
                    "user_id": pair["user_id"],
                    "feedback_type": pair["feedback_type"],
                    "at": pair["created_at"],
                },
                {**pair, "step": "pair"},
            ]
            steps += self._training_of_pair(pair["user_id"], pair["pair_id"])
            return {"kind": "pair", "id": fid, "user_id": pair["user_id"], "steps": steps}
        rejected = self.store.query_dicts(
            "SELECT feedback_event_id, user_id, feedback_type, reason_codes, "
            "reason_details, quality_score, prompt, chosen_response, rejected_response, created_at "
            f"FROM {self.db}.rejected_feedback FINAL WHERE feedback_event_id = {{fid:UUID}}",
            {"fid": fid},
        )
        if rejected:
            r = _clean(rejected[0])
            return {
                "kind": "rejected",
                "id": fid,
                "user_id": r["user_id"],
                "steps": [
                    {
                        "step": "feedback",
                        "feedback_event_id": fid,
                        "user_id": r["user_id"],
                        "feedback_type": r["feedback_type"],
                        "at": r["created_at"],
                    },
                    {
                        **r,
                        "step": "rejected",
                        "reasons": [
                            {"code": c, "detail": d}
                            for c, d in zip(r["reason_codes"], r["reason_details"], strict=False)
                        ],
                    },
                ],
            }
        return None

    def _training_of_pair(self, user: str, pair_id: str) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        requests = self.store.query_dicts(
            "SELECT request_id, generation, trigger, triggered_at, dataset_uri, dataset_rows, "
            f"requested_at FROM {self.db}.training_requests FINAL WHERE user_id = {{user:String}} "
            "AND has(pair_ids, {pid:UUID}) ORDER BY generation",
            {"user": user, "pid": pair_id},
        )
        if not requests:
            return [
                {
                    "step": "threshold",
                    "pending": True,
                    "note": "not in any training request yet: the user's threshold has not been reached since",
                }
            ]
        for req in requests:
            req = _clean(req)
            steps.append({**req, "step": "threshold"})
            steps.append({**self._job_or_none(req["request_id"]), "step": "job"})
            adapter = self.store.query_dicts(
                "SELECT version, uri, metrics, published_at, toBool(has(train_pair_ids, {pid:UUID})) AS trained_on, "
                f"toBool(has(heldout_pair_ids, {{pid:UUID}})) AS held_out FROM {self.db}.adapters FINAL "
                "WHERE user_id = {user:String} AND request_id = {rid:UUID}",
                {"user": user, "pid": pair_id, "rid": req["request_id"]},
            )
            if adapter:
                a = {**_clean(adapter[0]), "metrics": _json(adapter[0]["metrics"])}
                steps.append({**a, "user_id": user, "step": "adapter"})
                steps.append({**self._answers_with(user, int(a["version"])), "step": "answers"})
        return steps

    def _job_or_none(self, request_id: str) -> dict[str, Any]:
        try:
            return self.job(request_id)
        except NotFound:
            return {"request_id": request_id, "status": "not started"}

    def _answers_with(self, user: str, version: int, limit: int = 10) -> dict[str, Any]:
        params = {"user": user, "v": version}
        rows = self.store.query_dicts(
            "SELECT answer_id, node_id, arm, served_at, latency_ms "
            f"FROM {self.db}.inference_log FINAL WHERE user_id = {{user:String}} AND adapter_version = {{v:UInt32}} "
            f"ORDER BY served_at DESC LIMIT {int(limit)}",
            params,
        )
        total = int(
            self.store.query(
                f"SELECT count() FROM {self.db}.inference_log FINAL WHERE user_id = "
                "{user:String} AND adapter_version = {v:UInt32}",
                params,
            )[0][0]
        )
        return {"adapter_version": version, "total": total, "rows": [_clean(r) for r in rows]}

    def _answer_chain(self, answer: dict[str, Any]) -> dict[str, Any]:
        user, version = answer["user_id"], answer["adapter_version"]
        steps: list[dict[str, Any]] = [{**answer, "step": "answer"}]
        if version is not None:
            adapter = [a for a in self.adapters(user) if int(a["version"]) == int(version)]
            if adapter:
                a = adapter[0]
                steps.append(
                    {
                        **{k: v for k, v in a.items() if k not in ("train_pair_ids", "heldout_pair_ids")},
                        "train_pairs": len(a["train_pair_ids"]),
                        "heldout_pairs": len(a["heldout_pair_ids"]),
                        "step": "adapter",
                    }
                )
                steps.append({**self._job_or_none(a["request_id"]), "step": "job"})
        feedback = self.store.query_dicts(
            "SELECT feedback_event_id, feedback_type, received_at "
            f"FROM {self.db}.answer_feedback FINAL WHERE answer_id = {{aid:UUID}} ORDER BY received_at",
            {"aid": answer["answer_id"]},
        )
        for fb in feedback:
            fb = _clean(fb)
            outcome = self._feedback_chain(fb["feedback_event_id"])
            steps.append({**fb, "outcome": outcome["kind"] if outcome else "pending", "step": "answer_feedback"})
        return {"kind": "answer", "id": answer["answer_id"], "user_id": user, "steps": steps}

    def _dead_letters_mentioning(self, text: str) -> list[dict[str, Any]]:
        if len(text) < 6:
            return []
        rows = self.store.query_dicts(
            "SELECT source_topic, source_partition, source_offset, stage, reason, error, key, payload_preview, "
            f"failed_at FROM {self.db}.dead_letters FINAL WHERE position(payload_preview, {{t:String}}) > 0 "
            "ORDER BY failed_at LIMIT 20",
            {"t": text},
        )
        return [_clean(r) for r in rows]
