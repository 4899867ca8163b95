"""Rebuild the ClickHouse projections from the topics (``samtuner projections rebuild``).

The topics are the truth; the tables are a projection of them. A rebuild:

1. captures, for every partition of the projector's source topics, the offsets it will replay: from
   the log start to the end offset at this moment (``ends``);
2. creates a fresh database ``<database>_rebuild_<n>`` with the project's migrations;
3. replays those offsets through the projector's own code (:class:`streams.projector.projection.Projector`)
   with ``effects=False``: rows only; no snapshot, no file, nothing published (its publisher refuses);
4. swaps the rebuilt tables in (``EXCHANGE TABLES``; renames where the database has no exchange)
   and drops the fresh database, which then holds the old tables;
5. catches up: what arrived on the topics between ``ends`` and the swap is replayed into the swapped
   tables (idempotent, like every projector write).

Its consumer assigns partitions and never commits: the live projector's group offsets stay as they
are. Messages of all partitions are replayed in time order (Kafka timestamp, then topic, partition,
offset), so an erasure removes the rows of events that came before it on any topic, as it did live.

A failure before the swap drops the fresh database and leaves the live tables untouched; a failed swap
swaps back what it had swapped. With a ClickHouse server the pipeline may keep running: the live
projector writes the old tables until the swap and the new ones after it, and step 5 fills the gap.
The embedded chDB store opens in one process only: the rebuild refuses while another holds it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore, embedded_holder, fresh_database_name, open_store
from infra.errors import InfraError, SwapIncomplete
from infra.kafka import RawMessage, new_reader, to_raw_message, watermarks
from schemas.config import Config
from schemas.events import Event
from schemas.secrets import redact_url
from schemas.topics import Topics
from streams.errors import RebuildError, UnknownProjection
from streams.projector.consumer import projector_topics
from streams.projector.projection import COLUMNS, ClickHouseSink, ProjectionSink, Projector

log = logging.getLogger("samtuner.streams.projector.rebuild")

PROJECTIONS: tuple[str, ...] = tuple(sorted(COLUMNS))  # every table the projector writes rows into

Partition = tuple[str, int]
Ranges = dict[Partition, tuple[int, int]]  # (start, end): replay start <= offset < end


def select_tables(names: Iterable[str] | None) -> tuple[str, ...]:
    """The tables to rebuild: every projection when ``names`` is empty, else those named (checked)."""
    chosen = sorted(set(names or ()))
    unknown = [n for n in chosen if n not in COLUMNS]
    if unknown:
        raise UnknownProjection(
            f"unknown table{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the projection tables are: {', '.join(PROJECTIONS)}"
        )
    return tuple(chosen) or PROJECTIONS


# -- seams: what the replaying projector may touch ---------------------------------------------


class RefusingPublisher:
    """The rebuild's publisher: a rebuild publishes nothing, and this makes a slip loud."""

    def publish(self, topic: str, event: Event) -> None:
        raise RebuildError(f"a rebuild must publish nothing, but the projector tried {type(event).__name__} to {topic}")

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        raise RebuildError(f"a rebuild must publish nothing, but the projector tried a message to {topic}")

    def flush(self, timeout_s: float = 30.0) -> None:
        return None


class SelectedSink:
    """A sink that writes rows into the selected tables only (``--table``); reads and erasures pass through."""

    def __init__(self, sink: ProjectionSink, tables: Iterable[str]) -> None:
        self.sink = sink
        self.tables = frozenset(tables)

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], dedup_token: str) -> None:
        if table in self.tables:
            self.sink.insert(table, rows, columns, dedup_token)

    def active_pairs(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        return self.sink.active_pairs(user_ids)

    def labelled_examples(self, user_ids: Collection[str]) -> list[dict[str, Any]]:
        return self.sink.labelled_examples(user_ids)

    def update_pairs(
        self,
        user_id: str,
        pair_ids: Sequence[Any],
        version: int,
        is_active: bool | None = None,
        training_weight: float | None = None,
    ) -> None:
        if "preference_pairs" in self.tables:
            self.sink.update_pairs(user_id, pair_ids, version, is_active=is_active, training_weight=training_weight)

    def dataset_uris(self, user_id: str) -> list[str]:
        return self.sink.dataset_uris(user_id)

    def request_ids(self, user_id: str) -> list[str]:
        return self.sink.request_ids(user_id)

    def erase_user(self, user_id: str) -> dict[str, int]:
        return self.sink.erase_user(user_id)

    def ping(self) -> bool:
        return self.sink.ping()


def replaying_projector(sink: ProjectionSink, cfg: Config, tables: Iterable[str]) -> Projector:
    # The artifact store is never used with effects=False (no snapshot, no file removed).
    return Projector(
        SelectedSink(sink, tables),
        ArtifactStore(cfg.artifact_root),
        RefusingPublisher(),
        Topics(cfg.kafka.topic_prefix),
        effects=False,
    )


# -- time-ordered replay of many partitions --------------------------------------------------


class TimeOrderedMerge:
    """Messages of many partitions, released in (timestamp, topic, partition, offset) order.

    Pure: a message is released only when every partition that may still send has one waiting, so
    nothing earlier can arrive after it. ``cap`` messages per partition are held at most (the reader
    pauses a full partition).
    """

    def __init__(self, partitions: Iterable[Partition], cap: int = 2000) -> None:
        self.buffers: dict[Partition, deque[RawMessage]] = {tp: deque() for tp in partitions}
        self.open: set[Partition] = set(self.buffers)
        self.cap = cap

    def add(self, msg: RawMessage) -> None:
        self.buffers[(msg.topic, msg.partition)].append(msg)

    def close(self, tp: Partition) -> None:
        """Nothing more comes from ``tp``."""
        self.open.discard(tp)

    def waiting_on(self) -> list[Partition]:
        return [tp for tp in self.open if not self.buffers[tp]]

    def full(self, tp: Partition) -> bool:
        return len(self.buffers[tp]) >= self.cap

    @property
    def done(self) -> bool:
        return not self.open and not any(self.buffers.values())

    def pop(self) -> RawMessage | None:
        """The next message in time order, or None while a partition that may still send has none."""
        if self.waiting_on():
            return None
        heads = [b[0] for b in self.buffers.values() if b]
        if not heads:
            return None
        first = min(heads, key=lambda m: (m.timestamp_ms, m.topic, m.partition, m.offset))
        return self.buffers[(first.topic, first.partition)].popleft()


def _reader(cfg: Config) -> Consumer:
    # assign() only and no commit, ever: the live projector's group and its offsets are never touched.
    return new_reader(cfg.kafka, f"{cfg.streams.app_id}-rebuild", **{"enable.partition.eof": True})


def source_ranges(
    consumer: Consumer, topics: Sequence[str], since: Mapping[Partition, int] | None = None, timeout_s: float = 30.0
) -> Ranges:
    """Every partition of ``topics``: (start, end) with end the high watermark now; start the log start,
    or ``since`` where given (a catch-up)."""
    out: Ranges = {}
    for topic in topics:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise RebuildError(f"cannot read the metadata of {topic}: {exc}") from exc
        if meta is None or meta.error is not None:
            raise RebuildError(f"topic {topic} does not exist (create the topics with `samtuner topics`)")
        for p in meta.partitions:
            low, high = watermarks(consumer, topic, p, timeout_s)
            start = max(low, since.get((topic, p), low)) if since else low
            out[(topic, p)] = (start, max(start, high))
    return out


class _RangeReader:
    """Reads the partitions of a replay into its :class:`TimeOrderedMerge`, pausing and resuming them.

    A partition is paused when its buffer is full or its range is read, and resumed (seeking to the
    next offset wanted) once its buffer is half drained.
    """

    def __init__(self, consumer: Consumer, todo: Ranges, cap: int) -> None:
        self.consumer = consumer
        self.todo = todo
        self.merge = TimeOrderedMerge(todo, cap)
        self.paused: set[Partition] = set()
        # The next offset wanted per partition: a resume seeks there, and anything below it is a repeat.
        self.wanted = {tp: start for tp, (start, _) in todo.items()}

    def start(self) -> None:
        parts = [TopicPartition(t, p, start) for (t, p), (start, _) in self.todo.items()]
        self.consumer.assign(parts)
        self.consumer.resume(parts)  # a consumer used before (the catch-up's) may hold them paused

    def pause(self, tp: Partition) -> None:
        self.consumer.pause([TopicPartition(*tp)])
        self.paused.add(tp)

    def resume_if_drained(self, tp: Partition) -> None:
        merge = self.merge
        if tp in self.paused and tp in merge.open and len(merge.buffers[tp]) <= merge.cap // 2:
            self.consumer.resume([TopicPartition(*tp)])
            self.consumer.seek(TopicPartition(tp[0], tp[1], self.wanted[tp]))
            self.paused.discard(tp)

    def read_next(self, timeout_s: float) -> None:
        """Poll one message (or partition end) and hand it to the merge."""
        polled = self.consumer.poll(timeout_s)
        if polled is None:
            left = sorted(f"{t}[{p}]" for t, p in self.merge.waiting_on())
            raise RebuildError(f"timed out after {timeout_s:.0f}s reading {', '.join(left)}: is the broker up?")
        tp = (str(polled.topic()), int(polled.partition() or 0))
        error = polled.error()
        if error is not None:
            self._on_error(tp, polled, error)
            return
        if tp not in self.merge.open:
            return
        self._take(tp, polled)

    def _on_error(self, tp: Partition, polled: Message, error: CKafkaError) -> None:
        if error.code() == CKafkaError._PARTITION_EOF:
            # At the high watermark, which is at or past the end taken (transaction markers have no message).
            if tp in self.merge.open and (polled.offset() or 0) >= self.todo[tp][1] - 1:
                self.merge.close(tp)
                self.pause(tp)
            return
        raise RebuildError(f"reading {tp[0]}[{tp[1]}]: {error.str()}")

    def _take(self, tp: Partition, polled: Message) -> None:
        offset = polled.offset() or 0
        if offset < self.wanted[tp]:
            return  # fetched before a pause, and again after its seek
        self.wanted[tp] = offset + 1
        end = self.todo[tp][1]
        if offset < end:
            self.merge.add(to_raw_message(polled))
        if offset + 1 >= end:
            self.merge.close(tp)
            self.pause(tp)  # a live topic goes on: nothing past the end is read
        elif self.merge.full(tp):
            self.pause(tp)


def replay(
    consumer: Consumer, ranges: Ranges, batch_size: int, timeout_s: float = 30.0, cap: int = 2000
) -> Iterator[list[RawMessage]]:
    """The messages of ``ranges`` in time order, in batches of at most ``batch_size``."""
    todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
    if not todo:
        return
    reader = _RangeReader(consumer, todo, cap)
    merge = reader.merge
    reader.start()
    batch: list[RawMessage] = []
    while not merge.done:
        while (msg := merge.pop()) is not None:
            batch.append(msg)
            reader.resume_if_drained((msg.topic, msg.partition))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if merge.done:
            break
        reader.read_next(timeout_s)
    if batch:
        yield batch


# -- progress and the report --------------------------------------------------------------------


@dataclass
class RebuildProgress:
    phase: str  # "replay" (into the fresh database) or "catch-up" (after the swap)
    ranges: Ranges
    done: dict[Partition, int] = field(default_factory=dict)  # next offset to project, per partition
    rows: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def advance(self, batch: Sequence[RawMessage], written: Mapping[str, int]) -> None:
        for msg in batch:
            self.done[(msg.topic, msg.partition)] = msg.offset + 1
        for table, n in written.items():
            self.rows[table] = self.rows.get(table, 0) + n

    def finish(self) -> None:
        self.done = {tp: end for tp, (_, end) in self.ranges.items()}

    def topics(self) -> dict[str, tuple[int, int]]:
        """Per topic: (offsets done, offsets in all)."""
        out: dict[str, tuple[int, int]] = {}
        for (topic, p), (start, end) in sorted(self.ranges.items()):
            done = min(end, max(start, self.done.get((topic, p), start))) - start
            a, b = out.get(topic, (0, 0))
            out[topic] = (a + done, b + end - start)
        return out

    def line(self) -> str:
        topics = ", ".join(f"{t} {a}/{b}" for t, (a, b) in self.topics().items())
        return (
            f"{self.phase}: {topics}; {sum(self.rows.values())} rows written ({time.monotonic() - self.started:.0f}s)"
        )


@dataclass(frozen=True)
class RebuildReport:
    tables: tuple[str, ...]
    database: str  # the fresh database the tables were built in (dropped after the swap)
    swap: str  # 'exchange' or 'rename'
    messages: dict[str, int]  # per topic, replayed before the swap
    rows: dict[str, int]  # per table, written before the swap
    caught_up: int  # messages replayed after the swap
    seconds: float


Progress = Callable[[RebuildProgress], None]


def _project_all(
    projector: Projector,
    batches: Iterable[list[RawMessage]],
    progress: RebuildProgress,
    on_progress: Progress,
    every_s: float,
) -> None:
    last = time.monotonic()
    for batch in batches:
        result = projector.project(batch)
        progress.advance(batch, result.written)
        if time.monotonic() - last >= every_s:
            on_progress(progress)
            last = time.monotonic()
    progress.finish()
    on_progress(progress)


def _open(cfg: Config, database: str | None = None) -> ClickHouseStore:
    holder = embedded_holder(cfg.clickhouse_dsn)
    if holder is not None:
        who = f"process {holder}" if holder > 0 else "another process"
        raise RebuildError(
            f"the embedded ClickHouse store at {redact_url(cfg.clickhouse_dsn)} is open in {who} (`samtuner run` or "
            f"`samtuner streams`?): a chDB store opens in one process only. Stop that process (SIGTERM"
            f"{f', kill {holder}' if holder > 0 else ''}) and run the rebuild again; nothing was changed. To rebuild "
            "while the pipeline runs, use a ClickHouse server (clickhouse.dsn)"
        )
    try:
        return open_store(cfg, database)
    except InfraError as exc:
        raise RebuildError(f"cannot open the store: {exc}") from exc


def rebuild(
    cfg: Config,
    tables: Iterable[str] | None = None,
    on_progress: Progress = lambda p: None,
    every_s: float = 1.0,
    timeout_s: float = 30.0,
) -> RebuildReport:
    """Rebuild ``tables`` (default: every projection) from the topics; see the module docstring."""
    chosen = select_tables(tables)
    started = time.monotonic()
    live = _open(cfg)
    try:
        return _rebuild(cfg, live, chosen, started, on_progress, every_s, timeout_s)
    finally:
        live.close()


def _rebuild(
    cfg: Config,
    live: ClickHouseStore,
    chosen: tuple[str, ...],
    started: float,
    on_progress: Progress,
    every_s: float,
    timeout_s: float,
) -> RebuildReport:
    fresh: ClickHouseStore | None = None
    consumer = _reader(cfg)
    try:
        try:
            live.migrate()  # the live tables exist, with the schema the fresh ones get
            name = fresh_database_name(live.databases(), live.database)
        except InfraError as exc:
            raise RebuildError(f"cannot prepare the live database {live.database}: {exc}") from exc
        sources = projector_topics(Topics(cfg.kafka.topic_prefix))
        ranges = source_ranges(consumer, sources, timeout_s=timeout_s)
        log.info(
            "rebuilding %s in %s from %d messages",
            ", ".join(chosen),
            name,
            sum(end - start for start, end in ranges.values()),
        )
        progress = RebuildProgress("replay", ranges)
        keep = False
        try:
            fresh = _open(cfg, name)
            fresh.migrate()
            _project_all(
                replaying_projector(ClickHouseSink(fresh), cfg, chosen),
                replay(consumer, ranges, cfg.streams.batch_size, timeout_s),
                progress,
                on_progress,
                every_s,
            )
            how = live.swap_tables(live.database, name, chosen)
        except SwapIncomplete as exc:
            keep = True  # it holds live tables now
            raise RebuildError(str(exc)) from exc
        except (InfraError, KafkaException, RebuildError) as exc:
            raise RebuildError(f"the rebuild failed before the swap; the live tables are untouched: {exc}") from exc
        finally:
            # Before the swap it holds the half-built tables; after it, the old ones.
            if fresh is not None:
                fresh.close()
            if not keep:
                with contextlib.suppress(InfraError):  # a leftover is harmless: the next rebuild takes n + 1
                    live.drop_database(name)
        # What arrived during the rebuild: into the swapped tables, from where the replay stopped.
        try:
            gap = source_ranges(
                consumer, sources, since={tp: end for tp, (_, end) in ranges.items()}, timeout_s=timeout_s
            )
            catch_up = RebuildProgress("catch-up", gap)
            _project_all(
                replaying_projector(ClickHouseSink(live), cfg, chosen),
                replay(consumer, gap, cfg.streams.batch_size, timeout_s),
                catch_up,
                on_progress,
                every_s,
            )
        except (InfraError, KafkaException, RebuildError) as exc:
            raise RebuildError(
                f"the tables were swapped in, but catching up with the messages that arrived during "
                f"the rebuild failed (the live projector, if running, writes them too): {exc}"
            ) from exc
        return RebuildReport(
            tables=chosen,
            database=name,
            swap=how,
            messages={t: b for t, (_, b) in progress.topics().items()},
            rows=dict(progress.rows),
            caught_up=sum(end - start for start, end in gap.values()),
            seconds=time.monotonic() - started,
        )
    finally:
        consumer.close()
