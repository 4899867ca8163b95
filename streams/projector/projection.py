"""The projector: event topics -> ClickHouse tables, in idempotent batches; and dataset snapshots.

It is the only writer of the store. Each batch is written with an insert deduplication token derived
from the topic-partition-offset ranges it covers, into ``ReplacingMergeTree`` tables keyed by
deterministic ids, one insert per table for each run of the batch between events that change rows
already written (a deactivation, a reweight, an erasure): those first flush every earlier row of
the batch, so they see exactly the log before them. Thresholds are cut at the end of their run:

* ``TrainingThresholdReached`` -> the user's active pairs and labelled examples at the threshold's
  place in the log, as a content-addressed Parquet snapshot, and one ``TrainingRequested`` per (user,
  generation) (requests already in the log are not sent again). The run's thresholds share one read
  of the store, made before the run's rows are written; each adds its user's rows of the run that
  come before it (``streams/projector/snapshots.py``). Their requests are published once the run's
  rows are written;
* ``PairDeactivated`` / ``PairReweighted`` (and the bulk ``PairsDeactivated`` / ``PairsReweighted``)
  -> the pairs' rows again, changed, with a higher version, in one statement;
* ``UserForgotten`` (the decider forgot the user) -> the user's rows deleted from every table that
  ``schemas/ddl.py`` declares (``USER_DATA``), their adapters revoked, their snapshots, checkpoints
  and adapter files removed; ``AdapterRevoked`` and ``UserErased`` (with the report) published.

Everything here is synchronous; it runs in the projector's consumer thread, which commits a batch's
offsets only after this returns.

``effects=False`` (``samtuner projections rebuild``, ``streams/projector/rebuild.py``) writes rows only: no
snapshot is cut, nothing is published, no file is removed. What those effects produced is in the log
already (``TrainingRequested``, ``AdapterRevoked``, the projector's dead letters), and replays from there.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.errors import PathEscapeError, StoreError
from infra.kafka import EventPublisher, RawMessage
from infra.logcontext import correlation
from schemas.codec import decode
from schemas.ddl import USER_DATA
from schemas.dead_letters import dead_letter_headers, headers_dict
from schemas.errors import EventDecodeError
from schemas.events import (
    AdapterPublished,
    AdapterRevoked,
    AnswerServed,
    DatasetRef,
    ErasureReport,
    Event,
    FeedbackReceived,
    LabelledExampleAccepted,
    PairAccepted,
    PairDeactivated,
    PairRejected,
    PairReweighted,
    PairsDeactivated,
    PairsReweighted,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
    TrainingThresholdReached,
    UserErased,
    UserForgotten,
)
from schemas.ids import derived_event_id, training_request_id, user_key
from schemas.snapshot import EXAMPLE_COLUMNS, SNAPSHOT_COLUMNS, snapshot_bytes
from schemas.topics import Topics
from streams.projector import rows as R
from streams.projector import snapshots as S

log = logging.getLogger("samtuner.streams.projector.projection")

# What an erasure leaves, said in every report.
KEPT = (
    "Kafka: the history topics (feedback, pairs, training, control, inference, dlq) keep the user's events until "
    "their retention removes them; the adapter registry (compacted) keeps AdapterRevoked as the user's last value",
    "the decider: the user's counters (generation, epoch) under their user key, and one-way hashes of their event "
    "and command ids (so a replay stays erased)",
    "adapters: one revoked row per version, under the user key, without pair ids or files",
)


class ProjectionSink(Protocol):
    """The store seam: inserts with dedup tokens, and the reads and updates the projector needs."""

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None: ...

    def active_pairs(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        """The active pairs of these users (``user_id`` and the snapshot's columns), in one read."""
        ...

    def labelled_examples(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        """The labelled examples of these users (``user_id`` and the snapshot's columns), in one read."""
        ...

    def update_pairs(
        self,
        user_id: str,
        pair_ids: Sequence[uuid.UUID],
        version: int,
        is_active: bool | None = None,
        training_weight: float | None = None,
    ) -> None: ...

    def dataset_uris(self, user_id: str) -> list[str]: ...

    def request_ids(self, user_id: str) -> list[str]: ...

    def erase_user(self, user_id: str) -> dict[str, int]: ...

    def ping(self) -> bool: ...


class ClickHouseSink:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.db = store.database

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None:
        self.store.insert(table, rows, columns, dedup_token=dedup_token)

    def active_pairs(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        cols = ", ".join(("user_id", *SNAPSHOT_COLUMNS))
        return self.store.query_dicts(
            f"SELECT {cols} FROM {self.db}.preference_pairs FINAL "
            "WHERE user_id IN {users:Array(String)} AND is_active ORDER BY user_id, pair_id",
            {"users": sorted(user_ids)},
        )

    def labelled_examples(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        cols = ", ".join(("user_id", *EXAMPLE_COLUMNS))
        return self.store.query_dicts(
            f"SELECT {cols} FROM {self.db}.labelled_examples FINAL WHERE user_id IN {{users:Array(String)}} "
            "ORDER BY user_id, example_id",
            {"users": sorted(user_ids)},
        )

    def update_pairs(
        self,
        user_id: str,
        pair_ids: Sequence[uuid.UUID],
        version: int,
        is_active: bool | None = None,
        training_weight: float | None = None,
    ) -> None:
        # A ReplacingMergeTree update: the rows again, changed, with a higher version. Server-side, so
        # the texts never travel. Columns of the SELECT are the table's, in order.
        changes = ["{version:UInt64} AS version", "now64(3) AS updated_at"]
        params: dict[str, Any] = {"user": user_id, "pairs": [str(p) for p in pair_ids], "version": version}
        if is_active is not None:
            changes.append("{active:Bool} AS is_active")
            params["active"] = is_active
        if training_weight is not None:
            changes.append("{weight:Float64} AS training_weight")
            params["weight"] = training_weight
        # The filter sits in a subquery: in ClickHouse a WHERE may see the SELECT's aliases, and
        # ``version`` is one of them.
        self.store.command(
            f"INSERT INTO {self.db}.preference_pairs SELECT * REPLACE ({', '.join(changes)}) FROM "
            f"(SELECT * FROM {self.db}.preference_pairs FINAL WHERE user_id = {{user:String}} "
            "AND pair_id IN {pairs:Array(UUID)} AND version < {version:UInt64})",
            params,
        )

    def dataset_uris(self, user_id: str) -> list[str]:
        rows = self.store.query(
            f"SELECT DISTINCT dataset_uri FROM {self.db}.training_requests FINAL WHERE user_id = {{user:String}}",
            {"user": user_id},
        )
        return [str(r[0]) for r in rows]

    def request_ids(self, user_id: str) -> list[str]:
        rows = self.store.query(
            f"SELECT toString(request_id) FROM {self.db}.training_requests WHERE user_id = {{user:String}} UNION "
            f"DISTINCT SELECT toString(request_id) FROM {self.db}.training_jobs WHERE user_id = {{user:String}}",
            {"user": user_id},
        )
        return sorted(str(r[0]) for r in rows)

    def erase_user(self, user_id: str) -> dict[str, int]:
        """Every declared table (``schemas/ddl.py`` USER_DATA): rows deleted or revoked; rows per table."""
        removed: dict[str, int] = {}
        params = {"user": user_id, "key": f"erased:{user_key(user_id)}"}
        for declared in USER_DATA:
            if declared.on_erase == "none":
                continue
            table = f"{self.db}.{declared.table}"
            where = " OR ".join(f"{column} = {{user:String}}" for column in declared.columns)
            removed[declared.table] = int(self.store.query(f"SELECT count() FROM {table} WHERE {where}", params)[0][0])
            if not removed[declared.table]:
                continue
            if declared.on_erase == "revoke":
                # The versions stay known (revoked), but no longer under the user's id, nor with the pairs.
                # The filter sits in a subquery: a WHERE would see the replaced user_id.
                self.store.command(
                    f"INSERT INTO {table} SELECT * REPLACE ({{key:String}} AS user_id, true AS revoked, '' AS uri, "
                    f"'{{}}' AS files, [] AS train_pair_ids, [] AS heldout_pair_ids) FROM "
                    f"(SELECT * FROM {table} FINAL WHERE {where})",
                    params,
                )
            # A mutation that rewrites the parts: the rows are gone from disk when it returns.
            self.store.command(f"ALTER TABLE {table} DELETE WHERE {where} SETTINGS mutations_sync = 1", params)
        return removed

    def ping(self) -> bool:
        try:
            self.store.query("SELECT 1")
            return True
        except StoreError:
            return False


@dataclass
class ProjectedBatch:
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: int = 0
    training_requests: list[TrainingRequested] = field(default_factory=list)
    erased_users: int = 0


@dataclass
class _Pending:
    """Rows waiting to be written, and the positions they came from (for the dedup token); and, for the
    thresholds cut before they are written, each user's snapshot rows among them, in log order."""

    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    of_user: dict[tuple[str, str], list[list[Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, table: str, row: list[Any], msg: RawMessage, user_id: str) -> None:
        self.rows[table].append(row)
        if table in SNAPSHOT_TABLES:
            self.of_user[(table, user_id)].append(row)
        span = self.ranges.setdefault((msg.topic, msg.partition), [msg.offset, msg.offset])
        span[0] = min(span[0], msg.offset)
        span[1] = max(span[1], msg.offset)

    def mark(self, user_id: str) -> dict[str, int]:
        """How many snapshot rows of the user are pending now: a threshold's place in the batch."""
        return {table: len(self.of_user.get((table, user_id), ())) for table in SNAPSHOT_TABLES}

    def before(self, table: str, user_id: str, mark: dict[str, int]) -> list[list[Any]]:
        return self.of_user.get((table, user_id), [])[: mark[table]]

    def token(self, table: str) -> str:
        spans = ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))
        return f"{table}@{spans}"

    def clear(self) -> None:
        self.rows.clear()
        self.ranges.clear()
        self.of_user.clear()


@dataclass(frozen=True)
class _Cut:
    """A threshold waiting for its snapshot, and its place among the pending rows."""

    event: TrainingThresholdReached
    mark: dict[str, int]


@dataclass(frozen=True)
class _Snapshot:
    """A threshold's dataset, computed; written and announced once the batch's rows are."""

    event: TrainingThresholdReached
    pairs: list[dict[str, Any]]
    examples: list[dict[str, Any]]


SNAPSHOT_TABLES = ("preference_pairs", "labelled_examples")

COLUMNS = {
    "preference_pairs": R.PAIR_COLUMNS,
    "rejected_feedback": R.REJECTED_COLUMNS,
    "labelled_examples": R.EXAMPLE_COLUMNS,
    "dead_letters": R.DEAD_LETTER_COLUMNS,
    "training_requests": R.TRAINING_REQUEST_COLUMNS,
    "training_jobs": R.JOB_COLUMNS,
    "training_attempts": R.ATTEMPT_COLUMNS,
    "adapters": R.ADAPTER_COLUMNS,
    "inference_log": R.INFERENCE_LOG_COLUMNS,
    "answer_feedback": R.ANSWER_FEEDBACK_COLUMNS,
    "training_progress": R.PROGRESS_COLUMNS,
}
# Events that change rows already written: the rows before them are written first.
ACTING = (
    PairDeactivated,
    PairReweighted,
    PairsDeactivated,
    PairsReweighted,
    UserForgotten,
    UserErased,
)


class Projector:
    def __init__(
        self,
        sink: ProjectionSink,
        artifacts: ArtifactStore,
        publisher: EventPublisher,
        topics: Topics,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 4,
        known_requests: Iterable[str] = (),
        effects: bool = True,
    ) -> None:
        self.sink = sink
        self.artifacts = artifacts
        self.publisher = publisher
        self.topics = topics
        self._sleep = sleep
        self._max_attempts = max_attempts
        # Requests already in the training log: a threshold processed again does not send its twin.
        self.known_requests: set[str] = set(known_requests)
        # False: a rebuild from the log, which must leave the log and the artifact root as they are.
        self.effects = effects

    def project(self, messages: Sequence[RawMessage]) -> ProjectedBatch:
        """Project a batch read from any of the event topics, in order; then flush the publisher.

        Rows are written in one insert per table for each run of the batch between events that change
        written rows (a deactivation, a reweight, an erasure). Thresholds are cut at the end of their
        run, each from the store plus its user's rows before it (``streams/projector/snapshots.py``):
        what it would have read had the rows before it been written first."""
        result = ProjectedBatch()
        pending = _Pending()
        cuts: list[_Cut] = []
        for msg in messages:
            if msg.topic == self.topics.dlq:
                pending.add("dead_letters", R.dead_letter_row(headers_dict(msg.headers), msg.key, msg.value), msg, "")
                continue
            if msg.topic == self.topics.feedback and not R.mentions_answer(msg.value):
                continue  # feedback is the decider's; here only feedback about a served answer is projected
            try:
                event = decode(msg.value)
            except EventDecodeError as exc:
                if msg.topic == self.topics.feedback:
                    continue  # the decider dead-letters bad feedback
                if self.effects:  # else its dead letter is on the dlq topic already, and replays from there
                    self._dead_letter(msg, exc.reason, exc.detail)
                result.dead_letters += 1
                continue
            if isinstance(event, TrainingThresholdReached):
                # Its TrainingRequested, if one was sent, is on the training topic (a rebuild cuts nothing).
                if self.effects:
                    cuts.append(_Cut(event, pending.mark(event.user_id)))
                continue
            if isinstance(event, ACTING):
                self._write(pending, cuts, result)
                with correlation(event.correlation_id):
                    self._act(event, msg, result)
                continue
            if isinstance(event, TrainingRequested):
                self.known_requests.add(str(event.request_id))
            for table, row in self._rows_for(event, msg):
                pending.add(table, row, msg, event.user_id)
        self._write(pending, cuts, result)
        if self.effects:
            self.publisher.flush()
        return result

    def _write(self, pending: _Pending, cuts: list[_Cut], result: ProjectedBatch) -> None:
        """The pending thresholds' snapshots (read before the rows land), the rows, then the requests."""
        snapshots = self._snapshots(pending, cuts)
        cuts.clear()
        self._flush(pending, result)
        for snapshot in snapshots:
            with correlation(snapshot.event.correlation_id):
                result.training_requests.append(self._request(snapshot))

    # -- rows ----------------------------------------------------------------------------------

    def _rows_for(self, event: Event, msg: RawMessage) -> list[tuple[str, list[Any]]]:
        out: list[tuple[str, list[Any]]] = []
        if isinstance(event, PairAccepted):
            out.append(("preference_pairs", R.pair_row(event, version=msg.offset)))
        elif isinstance(event, PairRejected):
            out.append(("rejected_feedback", R.rejected_row(event)))
        elif isinstance(event, LabelledExampleAccepted):
            out.append(("labelled_examples", R.example_row(event)))
        elif isinstance(event, AdapterPublished):
            out.append(("adapters", R.adapter_row(event)))
        elif isinstance(event, AnswerServed):
            out.append(("inference_log", R.inference_log_row(event)))
        elif isinstance(event, TrainingProgressed):
            out.append(("training_progress", R.progress_row(event, msg.partition, msg.offset)))
        elif isinstance(event, FeedbackReceived):
            answer_row = R.answer_feedback_row(event)
            if answer_row is not None:
                out.append(("answer_feedback", answer_row))
        if isinstance(event, TrainingRequested):
            out.append(("training_requests", R.training_request_row(event)))
        elif isinstance(event, TrainingStarted):
            out.append(("training_attempts", R.attempt_row(event)))
        job = R.job_row(event, version=msg.offset)
        if job is not None:
            out.append(("training_jobs", job))
        return out

    def _flush(self, pending: _Pending, result: ProjectedBatch) -> None:
        for table, rows in pending.rows.items():
            token = pending.token(table)
            insert = functools.partial(self.sink.insert, table, rows, COLUMNS[table], token)
            self._retrying(f"insert into {table}", insert)
            result.written[table] += len(rows)
        pending.clear()

    def _retrying(self, what: str, action: Callable[[], Any]) -> Any:
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except StoreError as exc:
                if attempt < self._max_attempts or not self.sink.ping():
                    # Transient, or the store is down: wait and retry; the batch stays un-acked.
                    log.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, delay, exc)
                    self._sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise

    # -- events that act on what is already written ----------------------------------------------

    def _act(self, event: Event, msg: RawMessage, result: ProjectedBatch) -> None:
        if isinstance(event, PairDeactivated):
            self._retrying(
                "deactivate a pair",
                lambda: self.sink.update_pairs(event.user_id, [event.pair_id], msg.offset, is_active=False),
            )
        elif isinstance(event, PairReweighted):
            self._retrying(
                "reweight a pair",
                lambda: self.sink.update_pairs(
                    event.user_id, [event.pair_id], msg.offset, training_weight=event.training_weight
                ),
            )
        elif isinstance(event, PairsDeactivated):
            self._retrying(
                "deactivate pairs",
                lambda: self.sink.update_pairs(event.user_id, event.pair_ids, msg.offset, is_active=False),
            )
        elif isinstance(event, PairsReweighted):
            self._retrying(
                "reweight pairs",
                lambda: self.sink.update_pairs(
                    event.user_id, event.pair_ids, msg.offset, training_weight=event.training_weight
                ),
            )
        elif isinstance(event, UserForgotten):
            self._erase(event)
            result.erased_users += 1
        elif isinstance(event, UserErased) and not event.report.rows:
            # Written by a decider from before UserForgotten existed: erase, report nothing new.
            self._erase(event, report=False)
            result.erased_users += 1

    def _snapshots(self, pending: _Pending, cuts: Sequence[_Cut]) -> list[_Snapshot]:
        """Each new threshold's dataset: one read of the store for all their users, then each user's
        pending rows before it on top."""
        fresh: list[_Cut] = []
        seen: set[str] = set()
        for cut in cuts:
            rid = str(training_request_id(cut.event.user_id, cut.event.generation))
            if rid not in self.known_requests and rid not in seen:  # a twin request is never sent
                seen.add(rid)
                fresh.append(cut)
        if not fresh:
            return []
        users = {cut.event.user_id for cut in fresh}
        stored_pairs = _by_user(self._retrying("read active pairs", lambda: self.sink.active_pairs(users)))
        # Thumbs up/down without a correction train too (KTO, training.method), so they are in the snapshot.
        stored_examples = _by_user(self._retrying("read labelled examples", lambda: self.sink.labelled_examples(users)))
        out = []
        for cut in fresh:
            user = cut.event.user_id
            pairs = S.active_pairs_at(stored_pairs.get(user, []), pending.before("preference_pairs", user, cut.mark))
            examples = S.examples_at(stored_examples.get(user, []), pending.before("labelled_examples", user, cut.mark))
            out.append(_Snapshot(cut.event, pairs, examples))
        return out

    def _request(self, snapshot: _Snapshot) -> TrainingRequested:
        event, pairs, examples = snapshot.event, snapshot.pairs, snapshot.examples
        request_id = training_request_id(event.user_id, event.generation)
        data = snapshot_bytes(pairs, examples)
        uri, sha = self.artifacts.put_dataset(data)
        request = TrainingRequested(
            event_id=request_id,
            occurred_at=event.occurred_at,
            user_id=event.user_id,
            correlation_id=event.correlation_id,
            request_id=request_id,
            generation=event.generation,
            trigger=event.trigger,
            triggered_at=event.triggered_at,
            dataset=DatasetRef(
                uri=uri,
                sha256=sha,
                rows=len(pairs) + len(examples),
                pair_ids=S.ids(pairs, "pair_id"),
                example_ids=S.ids(examples, "example_id"),
            ),
            dpo_overrides=event.dpo_overrides,
        )
        self.publisher.publish(self.topics.training, request)
        self.known_requests.add(str(request_id))
        log.info(
            "training requested for a user: generation %d, %d pairs, %d labelled examples, dataset %s",
            event.generation,
            len(pairs),
            len(examples),
            sha[:12],
        )
        return request

    def _erase(self, event: UserForgotten | UserErased, report: bool = True) -> None:
        user = event.user_id
        if not self.effects:
            # Rows only: the files went at the time, and AdapterRevoked / UserErased are in the log.
            self._retrying("erase the user's rows", lambda: self.sink.erase_user(user))
            return
        uris = self._retrying("list the user's datasets", lambda: self.sink.dataset_uris(user))
        requests = self._retrying("list the user's training requests", lambda: self.sink.request_ids(user))
        rows = self._retrying("erase the user's rows", lambda: self.sink.erase_user(user))
        files = {"datasets": 0, "adapters": 0, "checkpoints": 0}
        for uri in uris:
            try:
                path = self.artifacts.resolve(uri)
            except PathEscapeError:
                log.error("refusing to delete %r: outside the artifact root", uri)
                continue
            if path.exists():
                path.unlink()
                files["datasets"] += 1
        files["adapters"] = _remove_tree(self.artifacts.root / "adapters" / user_key(user))
        for rid in requests:
            files["checkpoints"] += _remove_tree(self.artifacts.root / "checkpoints" / rid)
        self.publisher.publish(
            self.topics.adapters,
            AdapterRevoked(
                event_id=derived_event_id("adapter-revoked", str(event.command_id)),
                user_id=user,
                correlation_id=event.correlation_id,
                occurred_at=event.occurred_at,
                reason="user erased",
            ),
        )
        if report and isinstance(event, UserForgotten):
            self.publisher.publish(
                self.topics.pairs,
                UserErased(
                    event_id=derived_event_id("user-erased", str(event.command_id)),
                    user_id=user,
                    correlation_id=event.correlation_id,
                    occurred_at=event.occurred_at,
                    command_id=event.command_id,
                    report=ErasureReport(decider=event.decider, rows=rows, files=files, kept=KEPT),
                ),
            )
        log.info(
            "a user was erased: %d rows deleted from %d tables; %d snapshots, %d adapter files and %d checkpoint "
            "files removed",
            sum(rows.values()),
            sum(1 for n in rows.values() if n),
            files["datasets"],
            files["adapters"],
            files["checkpoints"],
        )

    def _dead_letter(self, msg: RawMessage, reason: str, detail: str) -> None:
        self.publisher.publish_raw(
            self.topics.dlq, msg.key, msg.value, dead_letter_headers(msg, "projector", reason, detail)
        )


def _by_user(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[str(row["user_id"])].append(row)
    return out


def _remove_tree(path: Path) -> int:
    """Remove a directory; returns the number of files it held."""
    if not path.is_dir():
        return 0
    count = sum(1 for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return count
