"""Small fakes behind the project's own seams (no patching of internals)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from infra.errors import StoreError
from schemas.codec import encode_headers, encode_key, encode_value
from schemas.events import Event


class FakePublisher:
    """Behaves like KafkaEventPublisher: records what was published, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.flushes = 0

    def publish(self, topic: str, event: Event) -> None:
        self.publish_raw(topic, encode_key(event), encode_value(event), encode_headers(event))

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self.sent.append((topic, key, value, list(headers or [])))

    def flush(self, timeout_s: float = 30.0) -> None:
        self.flushes += 1

    def on(self, topic: str) -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]]:
        return [s for s in self.sent if s[0] == topic]


class FakeSink:
    """An in-memory projection store with ClickHouse's dedup-token and replacing semantics."""

    def __init__(self, fail_times: int = 0, down: bool = False) -> None:
        self.tables: dict[str, dict[Any, dict[str, Any]]] = {}
        self.tokens: set[str] = set()
        self.inserts: list[tuple[str, int, str]] = []
        self.fail_times = fail_times
        self.down = down
        self.erased: list[str] = []

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise StoreError("injected failure")
        if dedup_token in self.tokens:
            return
        self.tokens.add(dedup_token)
        self.inserts.append((table, len(rows), dedup_token))
        store = self.tables.setdefault(table, {})
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            if table == "training_progress":
                store[(record["request_id"], record["source_partition"], record["source_offset"])] = record
                continue
            key = (
                record.get("pair_id")
                or record.get("example_id")
                or record.get("request_id")
                or record.get("feedback_event_id")
                or len(store)
            )
            store[key] = record

    def update_pairs(
        self,
        user_id: str,
        pair_ids: Sequence[Any],
        version: int,
        is_active: bool | None = None,
        training_weight: float | None = None,
    ) -> None:
        for pair_id in pair_ids:
            row = self.tables.get("preference_pairs", {}).get(pair_id)
            if row is None or row["user_id"] != user_id or row["version"] >= version:
                continue
            row.update(version=version)
            if is_active is not None:
                row["is_active"] = is_active
            if training_weight is not None:
                row["training_weight"] = training_weight

    def dataset_uris(self, user_id: str) -> list[str]:
        return [r["dataset_uri"] for r in self.tables.get("training_requests", {}).values() if r["user_id"] == user_id]

    def request_ids(self, user_id: str) -> list[str]:
        return sorted(
            str(r["request_id"]) for r in self.tables.get("training_requests", {}).values() if r["user_id"] == user_id
        )

    def erase_user(self, user_id: str) -> dict[str, int]:
        from schemas.ddl import USER_DATA

        removed = {}
        for declared in USER_DATA:
            if declared.on_erase == "none":
                continue
            rows = self.tables.get(declared.table, {})
            mine = [k for k, r in rows.items() if any(r.get(c) == user_id for c in declared.columns)]
            for key in mine:
                del rows[key]
            removed[declared.table] = len(mine)
        self.erased.append(user_id)
        return removed

    def active_pairs(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        pairs = self.tables.get("preference_pairs", {}).values()
        return [dict(r) for r in pairs if r["user_id"] in user_ids and r["is_active"]]

    def labelled_examples(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        examples = self.tables.get("labelled_examples", {}).values()
        return [dict(r) for r in examples if r["user_id"] in user_ids]

    def ping(self) -> bool:
        return not self.down
