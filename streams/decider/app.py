"""The Faust app of the deciders: feedback and commands in, decisions out, state in Faust tables.

One agent reads the feedback and control topics (co-partitioned by user id, so a user's state has
one owner) in batches. For each batch it decides every event, sends the outputs and waits for the
broker's acks, then writes the batch's state per partition, user values then the partition's head
(see ``streams/decider/journal.py``), to the table's changelog with the same producer, and waits for
those acks too (``streams/decider/changelog.py``); only then does Faust ack the batch. Every exception is handled inside
the loop (Faust acks a message even when an agent raises) and the agent runs with ``concurrency=1`` (more can commit
offsets past unprocessed events).

Any number of decider processes can run at once (same app id, same consumer group). Each is fenced
(``streams/decider/fence.py``): it decides, publishes and journals nothing for a partition it lost since it
took the batch, and stamps every output with its worker id and the group generation of its tenure.

The projector (ClickHouse writer) is not a Faust agent: see ``streams/projector/consumer.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP, EventT, StreamT

from infra.kafka import KafkaEventPublisher, RawMessage, aiokafka_auth, kafka_password, read_range, resume_offset
from infra.metrics import RoleMetrics
from schemas.config import Config, KafkaSettings
from schemas.topics import CLIENT_MAX_BYTES, MIB, Topics
from streams.decider.batch import BatchDecider, DecidedBatch
from streams.decider.changelog import TableChangelog
from streams.decider.decisions import DecideSettings
from streams.decider.faust_guards import guarded_broker_urls, mark_acked, repair_acks
from streams.decider.fence import Fenced, PartitionFence, Ticket, fence_off, stamped
from streams.decider.journal import DeciderMemory, StateLimits
from streams.decider.output_marks import OutputMarks
from streams.decider.similarity import MinHasher, UserIndexes
from streams.decider.stall import StallDetector, lagging_partitions
from streams.decider.tokens import token_counter

log = logging.getLogger("samtuner.streams")

# The state table is keyed by user (streams/decider/journal.py): its changelog must compact for a restore to
# read users, not history. Small segments (the active one is never cleaned), a low dirty ratio, and
# tombstones (erased users) kept one minute after cleaning.
JOURNAL_TOPIC_CONFIGS = {
    "segment.bytes": str(1024 * 1024),
    "segment.ms": str(60_000),
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(60_000),
}

# Per partition and fetch. With 17 MiB (the largest message + 1 MiB) a lagging decider prefetched
# up to 17 MiB of every partition it reads (12: feedback and control), so its RSS grew with its
# lag. A larger message is still read: since fetch v3 (KIP-74) the broker returns the first batch
# whole, whatever the limit (tests/integration/test_hostile_payloads.py sends one).
FETCH_BYTES_PER_PARTITION = MIB


@dataclass
class StreamsStats:
    """Counters for the console and tests (per process)."""

    decided: int = 0
    skipped: int = 0
    suppressed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    events: int = 0
    decide_s: float = 0.0  # time spent deciding, sending (until acked) and journalling
    send_s: float = 0.0
    journal_s: float = 0.0
    crashed: str | None = None  # why the worker stopped itself, when it did
    in_batch: bool = False  # a batch is being decided, sent or journalled (or retried)
    recovered: int = 0  # events Faust fetched but never delivered, read from the log (streams/decider/batch.py)
    fenced_events: int = 0  # events not decided: their partition was lost before the batch was decided
    fenced_outputs: int = 0  # outputs dropped: their partition was lost before they were published


def raw_message(event: EventT) -> RawMessage:
    msg = event.message
    return RawMessage(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=tuple((str(k), bytes(v or b"")) for k, v in cast(list[tuple[str, bytes]], msg.headers or [])),
        timestamp_ms=int(msg.timestamp * 1000),
    )


def faust_credentials(kafka: KafkaSettings) -> Any:
    """``kafka.security`` as Faust credentials (Faust hands them to aiokafka), or None for PLAINTEXT."""
    sec = kafka.security
    if sec.protocol == "PLAINTEXT":
        return None
    context = aiokafka_auth(kafka).get("ssl_context")
    if sec.sasl:
        return faust.SASLCredentials(
            username=sec.username, password=kafka_password(kafka), ssl_context=context, mechanism=sec.sasl_mechanism
        )
    return faust.SSLCredentials(context)


class DeciderApp(faust.App):
    """The deciders' Faust app: its fence closes when a rebalance starts while the worker stops.

    Faust then closes the consumer at once (``App._on_partitions_revoked``) instead of waiting for
    the batch in flight, so another worker can be given its partitions while it still runs; the
    closed fence keeps that batch off the wire (``streams/decider/fence.py``). ``on_rebalance_start`` is
    called from Faust's consumer thread, as early as a rebalance is known."""

    fence: PartitionFence | None = None

    def on_rebalance_start(self) -> None:
        if self.fence is not None:
            if self.should_stop:
                self.fence.close()
                log.info(
                    "fence: worker %s leaves the group during a rebalance; it publishes nothing more", self.fence.worker
                )
            else:
                log.info("fence: worker %s: a rebalance started", self.fence.worker)
        super().on_rebalance_start()


def create_app(cfg: Config, stats: StreamsStats | None = None, metrics: RoleMetrics | None = None) -> faust.App:
    stats = stats if stats is not None else StreamsStats()
    metrics = metrics if metrics is not None else RoleMetrics("decider")
    topics = Topics(cfg.kafka.topic_prefix)
    app = DeciderApp(
        cfg.streams.app_id,
        broker=guarded_broker_urls(cfg.kafka.bootstrap_servers),
        broker_credentials=faust_credentials(cfg.kafka),
        store="memory://",
        datadir=str(cfg.state_path / "faust"),
        topic_partitions=cfg.kafka.partitions,
        topic_replication_factor=cfg.kafka.replication_factor,
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        producer_max_request_size=CLIENT_MAX_BYTES,
        # What a lagging decider holds in memory is bounded here, not by its lag: per partition one
        # prefetched fetch of FETCH_BYTES_PER_PARTITION, and one poll decodes at most one batch
        # (Faust's default, None, has aiokafka decode all it prefetched).
        consumer_max_fetch_size=FETCH_BYTES_PER_PARTITION,
        broker_max_poll_records=cfg.streams.batch_size,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=cfg.streams.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.streams.session_timeout_s / 3),
        stream_wait_empty=True,
    )
    _add_watchdog(app, stats, (topics.feedback, topics.control), cfg.streams.stall_timeout_s)
    _add_progress_log(app, stats)
    _add_task_dump(app)
    _add_decider(app, cfg, topics, stats, metrics)
    metrics.gauges.lag = lambda: _faust_lag(app, (topics.feedback, topics.control))
    return app


def _faust_lag(app: faust.App, sources: tuple[str, ...]) -> dict[str, int]:
    """Messages of the sources past the committed offsets, per topic (read from Faust's consumer)."""
    consumer = cast(Any, app.consumer)
    out: dict[str, int] = {}
    for lag in lagging_partitions(
        {tp: consumer._committed_offset.get(tp) for tp in consumer.assignment()},
        {tp: consumer.highwater(tp) for tp in consumer.assignment()},
    ):
        if lag.tp.topic in sources:
            out[lag.tp.topic] = out.get(lag.tp.topic, 0) + lag.highwater - lag.committed
    return out


def _add_progress_log(app: faust.App, stats: StreamsStats, every_s: float = 10.0) -> None:
    """Long work shows progress: what the decider did since the last line, and where its time went."""
    last = [0, 0.0, 0.0, 0.0]

    @app.timer(every_s)
    async def progress() -> None:
        events = stats.events - last[0]
        if events:
            per_event = [
                (now - before) / events * 1e6
                for now, before in zip((stats.decide_s, stats.send_s, stats.journal_s), last[1:], strict=True)
            ]
            log.info(
                "decider: %d events in %.0fs (%.0f/s); per event: decide %.0f us, send %.0f us, journal %.0f us; "
                "totals: %d decided, %d skipped, %d suppressed, %d dead letters, %d recovered from the log",
                events,
                every_s,
                events / every_s,
                *per_event,
                stats.decided,
                stats.skipped,
                stats.suppressed,
                stats.dead_lettered,
                stats.recovered,
            )
        last[:] = [stats.events, stats.decide_s, stats.send_s, stats.journal_s]


def _await_chain(coro: Any, depth: int = 0) -> list[str]:
    """Where a coroutine (or async generator) waits: frame by frame down its await chain."""
    out: list[str] = []
    while coro is not None and depth < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth += 1
    return out


def _add_task_dump(app: faust.App) -> None:
    """``kill -USR1 <pid>`` logs every asyncio task's stack: how to see where a stuck worker waits."""

    @app.task
    async def install() -> None:
        loop = asyncio.get_running_loop()

        def dump() -> None:
            try:
                state()
            except Exception as exc:  # diagnostics must never hurt the worker
                print(f"--- consumer state unavailable: {exc!r}", file=sys.stderr)
            for task in asyncio.all_tasks(loop):
                print(f"--- asyncio task {task.get_name()}", file=sys.stderr)
                for line in _await_chain(task.get_coro()):
                    print(f"    {line}", file=sys.stderr)
            sys.stderr.flush()

        def state() -> None:
            consumer = cast(Any, app.consumer)
            print(
                f"--- consumer: assignment={sorted(map(str, consumer.assignment()))} "
                f"active={sorted(map(str, consumer._active_partitions or ()))} "
                f"paused={sorted(map(str, consumer._paused_partitions))} "
                f"buffered={sorted(map(str, consumer._buffered_partitions))} "
                f"in_recovery={app.in_recovery} flow_control_suspended={app.flow_control.is_active() is False}",
                file=sys.stderr,
            )
            for tp in sorted(consumer.assignment()):
                print(
                    f"--- {tp.topic}[{tp.partition}]: read={consumer._read_offset.get(tp)} "
                    f"committed={consumer._committed_offset.get(tp)} acked={len(consumer._acked.get(tp) or ())} "
                    f"gap={len(consumer._gap.get(tp) or ())} highwater={consumer.highwater(tp)}",
                    file=sys.stderr,
                )
            print(
                f"--- unacked: {len(consumer._unacked_messages)}; generation {app.consumer_generation_id}",
                file=sys.stderr,
            )
            for agent in app.agents.values():
                for channel in [cast(Any, agent).channel]:
                    queue = channel.queue
                    print(
                        f"--- agent {agent.name}: queue size {queue.qsize()} / {queue.maxsize}, "
                        f"pending pressure drops {len(queue._pending_pressure_drop_callbacks)}",
                        file=sys.stderr,
                    )

        loop.add_signal_handler(signal.SIGUSR1, dump)


def _add_watchdog(app: faust.App, stats: StreamsStats, sources: tuple[str, ...], stall_after_s: float) -> None:
    """Two failure modes leave a Faust worker alive but idle; both are acted on here.

    A crashed fetcher or agent: stop the worker, so it is restarted. A decider that stopped consuming
    while its sources still hold events (see ``streams/decider/stall.py``): seek the stuck partitions back to
    their committed offsets; if that does not help a few times in a row, stop the worker too. Nothing
    is lost either way: offsets of unprocessed events were not committed, and every handler is
    idempotent.
    """
    # A rebalance or recovery ten stall timeouts long with events waiting is a hang, not a wait.
    detector: StallDetector[Any] = StallDetector(after_s=stall_after_s, max_busy_s=10 * stall_after_s)

    def stop(why: str) -> None:
        stats.crashed = why
        log.error("stream worker stopping: %s", why)
        os.kill(os.getpid(), signal.SIGTERM)

    @app.timer(1.0)
    async def watchdog() -> None:
        if stats.crashed:
            return
        for service in [app._fetcher, app.consumer, *app.agents.values()]:
            if service.crashed:
                stop(f"{service.shortlabel} crashed: {service.crash_reason!r}")
                return
        consumer = cast(Any, app.consumer)
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        for tp in assigned:
            repair_acks(consumer, tp)
        settling = app.rebalancing or app.in_recovery
        busy = stats.in_batch or settling or not app.flow_control.is_active()
        lagging = lagging_partitions(
            {tp: consumer._committed_offset.get(tp) for tp in assigned}, {tp: consumer.highwater(tp) for tp in assigned}
        )
        stuck = detector.observe(time.monotonic(), stats.batches, busy, lagging, settling=settling)
        if not stuck:
            return
        if detector.wedged:
            stop(
                f"the decider stayed in a rebalance or recovery for {10 * stall_after_s:.0f}s with events "
                "waiting and none handled"
            )
            return
        if detector.escalate:
            stop(
                f"the decider made no progress for {stall_after_s:.0f}s although its sources hold events, "
                "and seeking back did not help"
            )
            return
        log.warning(
            "the decider stalled for %.0fs with events waiting; seeking back to the committed offsets: %s",
            stall_after_s,
            ", ".join(
                f"{s.tp.topic}[{s.tp.partition}] committed {s.committed} "
                f"end {s.highwater} read {consumer._read_offset.get(s.tp)}"
                for s in stuck
            ),
        )
        for s in stuck:
            acked = sorted(consumer._acked.get(s.tp) or ())
            log.warning(
                "  %s[%d]: %d acked, not committed: %s; gaps %s; unacked in flight %d",
                s.tp.topic,
                s.tp.partition,
                len(acked),
                acked[:8],
                sorted(consumer._gap.get(s.tp) or ())[:4],
                sum(1 for m in consumer._unacked_messages if m.tp == s.tp),
            )
            await consumer.seek(s.tp, s.committed)


def _add_decider(app: faust.App, cfg: Config, topics: Topics, stats: StreamsStats, metrics: RoleMetrics) -> None:
    sources = app.topic(topics.feedback, topics.control, key_serializer="raw", value_serializer="raw")
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    journal = app.Table(
        "decider-journal", partitions=cfg.kafka.partitions, schema=schema, extra_topic_configs=JOURNAL_TOPIC_CONFIGS
    )
    limits = cfg.streams.state
    memory = DeciderMemory(journal, StateLimits(limits.max_sightings_per_user, limits.max_signatures_per_user))
    quality = cfg.quality
    hasher = MinHasher(quality.minhash_num_perm, quality.shingle_words)
    indexes = UserIndexes(hasher, quality.near_duplicate_jaccard)
    output_marks = OutputMarks(cfg.kafka, topics.pairs)
    kafka = cfg.kafka
    decider = BatchDecider(
        _decide_settings(cfg),
        memory,
        topics,
        hasher,
        indexes,
        output_marks,
        lambda topic, partition, start, end: read_range(kafka, topic, partition, start, end),
        lambda topic, partition: resume_offset(kafka, cfg.streams.app_id, topic, partition),
    )
    fence = PartitionFence(f"{socket.gethostname()}-{os.getpid()}")
    cast(DeciderApp, app).fence = fence
    # The client id names the worker: several deciders run side by side (the broker's logs tell them apart).
    producer = KafkaEventPublisher(cfg.kafka, client_id=f"samtuner-decider-{fence.worker}")
    # The table's own codecs (Faust picks JSON for str keys and plain values; TableT does not declare them).
    table = cast(Any, journal)
    changelog = TableChangelog(
        journal.changelog_topic.get_topic_name(),
        journal.data,
        producer,
        str(table.key_serializer),
        str(table.value_serializer),
    )
    worker = _DeciderWorker(
        app,
        stats,
        metrics,
        fence,
        decider,
        producer,
        changelog,
        _DeciderCaches(memory, output_marks, indexes),
        {topics.feedback, topics.control},
    )
    app.on_partitions_assigned.connect(worker.on_assigned)
    app.on_partitions_revoked.connect(worker.on_revoked)

    @app.agent(sources, concurrency=1, name="decide")
    async def decide_agent(stream: StreamT) -> None:
        loop = asyncio.get_running_loop()
        batches = cast(Any, stream).take_events(cfg.streams.batch_size, within=cfg.streams.batch_timeout_s)
        async for events in batches:
            await worker.handle(loop, events)


def _decide_settings(cfg: Config) -> DecideSettings:
    quality = cfg.quality
    return DecideSettings(
        min_new_pairs=cfg.trigger.min_new_pairs,
        min_new_examples=cfg.trigger.min_new_examples,
        quality=quality,
        preview_chars=cfg.streams.preview_chars,
        count_tokens=token_counter(quality.tokenizer or cfg.model.base),
    )


@dataclass
class _DeciderCaches:
    """What the decider keeps in memory about its partitions' users, beyond the journal's durable state."""

    memory: DeciderMemory
    output_marks: OutputMarks
    indexes: UserIndexes

    def forget(self) -> None:
        # Another worker may have answered these partitions meanwhile: reload state, re-read the log.
        self.memory.forget()
        self.output_marks.clear()
        self.indexes.clear()


class _DeciderWorker:
    """The decider agent's work on one batch: fence it, decide, publish, journal, count.

    Every exception of a batch is handled here, inside the agent's loop: Faust acks a message even
    when an agent raises. Deciding and flushing run off the event loop, on one I/O thread.
    """

    def __init__(
        self,
        app: faust.App,
        stats: StreamsStats,
        metrics: RoleMetrics,
        fence: PartitionFence,
        decider: BatchDecider,
        producer: KafkaEventPublisher,
        changelog: TableChangelog,
        caches: _DeciderCaches,
        source_topics: set[str],
    ) -> None:
        self.app = app
        self.stats = stats
        self.metrics = metrics
        self.fence = fence
        self.decider = decider
        self.producer = producer
        self.changelog = changelog
        self.caches = caches
        self.source_topics = source_topics
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decider-io")

    def on_assigned(self, *args: Any, **_: Any) -> None:
        assigned: set[TP] = args[1]  # (sender, assigned)
        fence = self.fence
        generation = int(self.app.consumer_generation_id or 0)
        fence.assigned({tp.partition for tp in assigned if tp.topic in self.source_topics}, generation)
        # The integration test reads this line: which partitions this worker held in which generation.
        log.info("fence: worker %s generation %d owns partitions %s", fence.worker, generation, sorted(fence.owned()))
        self.caches.forget()

    def on_revoked(self, *args: Any, **_: Any) -> None:
        revoked: set[TP] = args[1]  # (sender, revoked)
        self.fence.revoked({tp.partition for tp in revoked if tp.topic in self.source_topics})
        self.caches.forget()

    def fenced(self, what: str, dropped: Fenced, events: int = 0) -> None:
        self.stats.fenced_events += events
        self.stats.fenced_outputs += dropped.outputs
        self.metrics.skips({"fenced": events})
        log.warning(
            "fence: worker %s lost partitions %s since the batch was taken; %s: %d events, %d outputs "
            "and %d journal entries dropped (the new owner decides them again)",
            self.fence.worker,
            sorted(dropped.partitions),
            what,
            events,
            dropped.outputs,
            dropped.journal_entries,
        )
        self.caches.forget()  # the state moved on for partitions another worker now decides

    async def handle(self, loop: asyncio.AbstractEventLoop, events: list[EventT]) -> None:
        """One batch of events, from taking it to counting it."""
        ticket, batch = self._take(events)
        if not batch:
            return
        self.stats.in_batch = True
        result, t0 = await self._until_done(loop, batch, ticket)
        self._finish(batch, result, t0)

    def _take(self, events: list[EventT]) -> tuple[Ticket, list[RawMessage]]:
        """The batch's ticket, and its events of partitions this worker still owns."""
        consumer = cast(Any, self.app.consumer)
        held = {tp.partition for tp in consumer.assignment() if tp.topic in self.source_topics}
        ticket = self.fence.ticket(
            {event.message.partition for event in events}, held, int(self.app.consumer_generation_id or 0)
        )
        stale = self.fence.lost(ticket)
        batch = [raw_message(event) for event in events if event.message.partition not in stale]
        if stale:  # delivered after their partition was revoked: not ours to decide
            self.fenced("not decided", Fenced(stale), len(events) - len(batch))
        return ticket, batch

    async def _until_done(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[RawMessage],
        ticket: Ticket,
    ) -> tuple[DecidedBatch, float]:
        """Decide, publish and journal the batch, again and again until it succeeds."""
        while True:
            try:
                return await self._decide_publish_journal(loop, batch, ticket)
            except Exception:
                # Kafka unreachable or the like: nothing of this batch is acked; try it again from
                # the durable state. Part of its outputs may be durable: the output marks say which.
                log.exception("a decider batch of %d events failed; retrying", len(batch))
                self.caches.forget()
                await asyncio.sleep(2.0)

    async def _decide_publish_journal(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[RawMessage],
        ticket: Ticket,
    ) -> tuple[DecidedBatch, float]:
        """One attempt at the batch; returns its result and when the attempt started."""
        # Decided off the loop: CPU work, and the first batch after an assignment reads the
        # output log's tail.
        t0 = time.perf_counter()
        result = await loop.run_in_executor(self.io, self.decider.decide, batch)
        t1 = time.perf_counter()
        result, lost = self._publish(result, batch, ticket)
        result, late, t2 = await loop.run_in_executor(self.io, self._flush_then_journal, result, ticket, lost)
        if late.partitions:  # outputs acked, state not: the new owner's output marks suppress them
            self.fenced("published, not journalled", late)
        self.changelog.apply(result.journal)  # the local store follows what the broker acked
        self.stats.decide_s += t1 - t0
        self.stats.send_s += t2 - t1
        self.stats.journal_s += time.perf_counter() - t2
        return result, t0

    def _flush_then_journal(
        self, result: DecidedBatch, ticket: Ticket, lost: frozenset[int]
    ) -> tuple[DecidedBatch, Fenced, float]:
        """On the I/O thread: wait for the outputs' acks, then send the state of the partitions still
        owned to the changelog and wait for those acks (durable before Faust acks the batch)."""
        self.producer.flush()
        flushed = time.perf_counter()
        # Checked again here, just before the state is produced (fence step 3).
        result, late = fence_off(result, self.fence.lost(ticket) - lost)
        self.changelog.send(result.journal)
        return result, late, flushed

    def _publish(
        self, result: DecidedBatch, batch: list[RawMessage], ticket: Ticket
    ) -> tuple[DecidedBatch, frozenset[int]]:
        """Hand the outputs of partitions still owned to the producer; returns them and the partitions lost."""
        # No await from this check to the last publish call: a loss the loop sees is either
        # fenced here or comes after every output was handed to the producer (streams/decider/fence.py).
        lost = self.fence.lost(ticket)
        if lost:
            result, dropped = fence_off(result, lost)
            self.fenced("not published", dropped, sum(1 for m in batch if m.partition in lost))
        for topic, key, value, headers in stamped(result.outgoing, self.fence.worker, ticket):
            self.producer.publish_raw(topic, key, value, headers)
        return result, lost

    def _finish(self, batch: list[RawMessage], result: DecidedBatch, t0: float) -> None:
        """Ack what Faust never delivered, then count the batch."""
        stats = self.stats
        for (topic, partition), offsets in result.recovered.items():
            # Faust never delivered these, so it would never commit past them.
            mark_acked(cast(Any, self.app.consumer), TP(topic, partition), offsets)
            stats.recovered += len(offsets)
        stats.in_batch = False
        _count(self.metrics, batch, result, time.perf_counter() - t0)
        stats.batches += 1
        stats.events += len(batch)
        stats.decided += result.decided
        stats.skipped += result.skipped
        stats.suppressed += result.suppressed
        stats.dead_lettered += result.dead_letters


def _count(metrics: RoleMetrics, batch: list[RawMessage], result: DecidedBatch, seconds: float) -> None:
    for topic in {m.topic for m in batch}:
        metrics.consumed(topic, sum(1 for m in batch if m.topic == topic))
    for topic in {out[0] for out in result.outgoing}:
        metrics.produced(topic, sum(1 for out in result.outgoing if out[0] == topic))
    metrics.dead_lettered(result.dead_letter_reasons)
    metrics.skips(result.skips)
    metrics.batch(seconds)
