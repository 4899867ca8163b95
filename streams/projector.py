"""The projector: event topics -> ClickHouse tables, in idempotent batches; and dataset snapshots.

It is the only writer of the store. Each batch is written with an insert deduplication token derived
from the topic-partition-offset ranges it covers, into ``ReplacingMergeTree`` tables keyed by
deterministic ids. When a ``TrainingThresholdReached`` arrives, every earlier event of the batch is
written first, then the user's active pairs are cut as a content-addressed Parquet snapshot and a
``TrainingRequested`` is published that references it (uri, sha256, pair ids).

Everything here is synchronous; the Faust agents call it in a worker thread and ack a batch only
after it returns.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.errors import StoreError
from infra.kafka import EventPublisher, RawMessage
from schemas.codec import decode
from schemas.errors import EventDecodeError
from schemas.events import (
    AdapterPublished,
    AnswerServed,
    DatasetRef,
    Event,
    FeedbackReceived,
    PairAccepted,
    PairRejected,
    TrainingRequested,
    TrainingThresholdReached,
)
from schemas.ids import training_request_id
from schemas.topics import Topics
from streams import rows as R
from streams.dead_letters import dead_letter_headers, headers_dict
from streams.snapshot import SNAPSHOT_COLUMNS, snapshot_bytes

log = logging.getLogger("samtuner.streams.projector")


class ProjectionSink(Protocol):
    """The store seam: inserts with dedup tokens, and the one read the projector needs."""

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None: ...

    def active_pairs(self, user_id: str) -> list[dict[str, Any]]: ...

    def ping(self) -> bool: ...


class ClickHouseSink:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None:
        self.store.insert(table, rows, columns, dedup_token=dedup_token)

    def active_pairs(self, user_id: str) -> list[dict[str, Any]]:
        cols = ", ".join(SNAPSHOT_COLUMNS)
        return self.store.query_dicts(
            f"SELECT {cols} FROM {self.store.database}.preference_pairs FINAL "
            "WHERE user_id = {user:String} AND is_active ORDER BY pair_id",
            {"user": user_id},
        )

    def ping(self) -> bool:
        try:
            self.store.query("SELECT 1")
            return True
        except StoreError:
            return False


@dataclass
class BatchResult:
    written: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: int = 0
    training_requests: list[TrainingRequested] = field(default_factory=list)


@dataclass
class _Pending:
    """Rows waiting to be written, and the positions they came from (for the dedup token)."""

    rows: dict[str, list[list[Any]]] = field(default_factory=lambda: defaultdict(list))
    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def add(self, table: str, row: list[Any], msg: RawMessage) -> None:
        self.rows[table].append(row)
        span = self.ranges.setdefault((msg.topic, msg.partition), [msg.offset, msg.offset])
        span[0] = min(span[0], msg.offset)
        span[1] = max(span[1], msg.offset)

    def token(self, table: str) -> str:
        spans = ",".join(f"{t}/{p}/{a}-{b}" for (t, p), (a, b) in sorted(self.ranges.items()))
        return f"{table}@{spans}"

    def clear(self) -> None:
        self.rows.clear()
        self.ranges.clear()


COLUMNS = {
    "preference_pairs": R.PAIR_COLUMNS,
    "rejected_feedback": R.REJECTED_COLUMNS,
    "dead_letters": R.DEAD_LETTER_COLUMNS,
    "training_requests": R.TRAINING_REQUEST_COLUMNS,
    "training_jobs": R.JOB_COLUMNS,
    "adapters": R.ADAPTER_COLUMNS,
    "inference_log": R.INFERENCE_LOG_COLUMNS,
    "answer_feedback": R.ANSWER_FEEDBACK_COLUMNS,
}


class Projector:
    def __init__(
        self,
        sink: ProjectionSink,
        artifacts: ArtifactStore,
        publisher: EventPublisher,
        topics: Topics,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 4,
    ) -> None:
        self.sink = sink
        self.artifacts = artifacts
        self.publisher = publisher
        self.topics = topics
        self._sleep = sleep
        self._max_attempts = max_attempts

    # -- entry points (one per source topic) ---------------------------------------------------

    def project(self, messages: Sequence[RawMessage]) -> BatchResult:
        """Project a batch read from any of the event topics, in order; then flush the publisher."""
        result = BatchResult()
        pending = _Pending()
        for msg in messages:
            if msg.topic == self.topics.dlq:
                pending.add("dead_letters", R.dead_letter_row(headers_dict(msg.headers), msg.key, msg.value), msg)
                continue
            if msg.topic == self.topics.feedback and not R.mentions_answer(msg.value):
                continue  # feedback is the decider's; here only feedback about a served answer is projected
            try:
                event = decode(msg.value)
            except EventDecodeError as exc:
                if msg.topic == self.topics.feedback:
                    continue  # the decider dead-letters bad feedback
                self._dead_letter(msg, exc.reason, exc.detail)
                result.dead_letters += 1
                continue
            if isinstance(event, TrainingThresholdReached):
                self._flush(pending, result)
                result.training_requests.append(self._cut_snapshot(event))
                continue
            for table, row in self._rows_for(event, msg):
                pending.add(table, row, msg)
        self._flush(pending, result)
        self.publisher.flush()
        return result

    # -- rows ----------------------------------------------------------------------------------

    def _rows_for(self, event: Event, msg: RawMessage) -> list[tuple[str, list[Any]]]:
        out: list[tuple[str, list[Any]]] = []
        if isinstance(event, PairAccepted):
            out.append(("preference_pairs", R.pair_row(event, version=msg.offset)))
        elif isinstance(event, PairRejected):
            out.append(("rejected_feedback", R.rejected_row(event)))
        elif isinstance(event, AdapterPublished):
            out.append(("adapters", R.adapter_row(event)))
        elif isinstance(event, AnswerServed):
            out.append(("inference_log", R.inference_log_row(event)))
        elif isinstance(event, FeedbackReceived):
            answer_row = R.answer_feedback_row(event)
            if answer_row is not None:
                out.append(("answer_feedback", answer_row))
        if isinstance(event, TrainingRequested):
            out.append(("training_requests", R.training_request_row(event)))
        job = R.job_row(event, version=msg.offset)
        if job is not None:
            out.append(("training_jobs", job))
        return out

    def _flush(self, pending: _Pending, result: BatchResult) -> None:
        for table, rows in pending.rows.items():
            self._insert(table, rows, pending.token(table))
            result.written[table] += len(rows)
        pending.clear()

    def _insert(self, table: str, rows: list[list[Any]], token: str) -> None:
        delay = 0.2
        attempt = 0
        while True:
            attempt += 1
            try:
                self.sink.insert(table, rows, COLUMNS[table], token)
                return
            except StoreError as exc:
                if attempt < self._max_attempts or not self.sink.ping():
                    # Transient, or the store is down: wait and retry; the batch stays un-acked.
                    log.warning("insert into %s failed (attempt %d), retrying in %.1fs: %s", table, attempt, delay, exc)
                    self._sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise

    # -- snapshots -----------------------------------------------------------------------------

    def _cut_snapshot(self, event: TrainingThresholdReached) -> TrainingRequested:
        pairs = self.sink.active_pairs(event.user_id)
        data = snapshot_bytes(pairs)
        uri, sha = self.artifacts.put_dataset(data)
        request_id = training_request_id(event.user_id, event.generation)
        request = TrainingRequested(
            event_id=request_id,
            occurred_at=event.occurred_at,
            user_id=event.user_id,
            correlation_id=event.correlation_id,
            request_id=request_id,
            generation=event.generation,
            trigger=event.trigger,
            triggered_at=event.triggered_at,
            dataset=DatasetRef(uri=uri, sha256=sha, rows=len(pairs),
                               pair_ids=tuple(uuid.UUID(str(p["pair_id"])) for p in pairs)),
        )
        self.publisher.publish(self.topics.training, request)
        log.info("training requested for a user: generation %d, %d pairs, dataset %s", event.generation,
                 len(pairs), sha[:12])
        return request

    def _dead_letter(self, msg: RawMessage, reason: str, detail: str) -> None:
        self.publisher.publish_raw(
            self.topics.dlq, msg.key, msg.value, dead_letter_headers(msg, "projector", reason, detail)
        )
