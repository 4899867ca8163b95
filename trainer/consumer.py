"""The Kafka side of a trainer worker: the training-topic consumer, the job thread and the control thread.

Trainer workers share the training topic as one consumer group (cooperative-sticky assignment, so
a worker joining or leaving moves only the partitions it must). When partitions are assigned, the
worker first reads them from the beginning into its ledger, so it knows what already happened to
every job there before it decides anything. The consumer thread only polls, folds, queues and
commits: it never waits for a job, so ``max.poll.interval.ms`` is never at risk.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from infra.errors import InfraError
from infra.kafka import EventPublisher, KafkaEventPublisher, events_in, new_consumer, read_topic, to_raw_message
from infra.metrics import CountingPublisher, RoleMetrics, consumer_lag
from schemas.codec import decode
from schemas.config import Config
from schemas.dead_letters import dead_letter_headers
from schemas.errors import EventDecodeError
from schemas.events import Event, TrainingRequested
from schemas.topics import Topics
from trainer.control import ControlFollower
from trainer.offsets import OffsetTracker, Partition
from trainer.runner import JobRunner
from trainer.worker import TrainerWorker

log = logging.getLogger("samtuner.trainer")


class TrainingConsumer:
    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher | None = None,
        runner: JobRunner | None = None,
        worker_id: str | None = None,
        metrics: RoleMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.metrics = metrics or RoleMetrics("trainer")
        self.publisher = CountingPublisher(
            publisher or KafkaEventPublisher(cfg.kafka, client_id="samtuner-trainer"), self.metrics
        )
        self.worker_id = worker_id or f"{socket.gethostname()}-trainer-{uuid.uuid4().hex[:6]}"
        self.worker = TrainerWorker(cfg, self.publisher, runner=runner, worker_id=self.worker_id)
        self.offsets = OffsetTracker()
        self.control = ControlFollower(cfg, self.worker.cancel, self.worker.erase)
        self.metrics.gauges.jobs = self._jobs_by_state
        self._consumer: Any = None

    # -- rebalancing ---------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        numbers = [p.partition for p in partitions if p.topic == self.topics.training]
        if not numbers:
            return
        events = self._read_ledger(numbers)
        self.worker.fold(events)
        log.info("trainer %s assigned partitions %s (%d ledger events)", self.worker_id, numbers, len(events))

    def _read_ledger(self, partitions: list[int], attempts: int = 5) -> list[Event]:
        """Every event of ``partitions``: a worker decides nothing about a partition it could not read."""
        for attempt in range(1, attempts + 1):
            try:
                return list(events_in(read_topic(self.cfg.kafka, self.topics.training, partitions=partitions)))
            except InfraError as exc:
                if attempt == attempts:
                    raise
                log.warning("reading the ledger of partitions %s failed (attempt %d): %s", partitions, attempt, exc)
                time.sleep(attempt)
        return []

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        moving = {(p.topic, p.partition) for p in partitions}
        self.worker.release(moving)
        self._drain_finished()
        self._commit(consumer, moving)
        self.offsets.forget(moving)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self.worker.release(lost, reason="the worker lost its partition (session timeout)")
        self.offsets.forget(lost)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        from trainer.library_config import validate_training_config

        validate_training_config(self.cfg)  # a bad config fails here, not in every job
        self.worker.ready.clear()
        control = threading.Thread(
            target=self.control.run, args=(stop, self.worker.ready), name="trainer-control", daemon=True
        )
        jobs = threading.Thread(target=self.worker.run_jobs, args=(stop,), name="trainer-jobs", daemon=True)
        control.start()
        jobs.start()
        consumer = new_consumer(
            self.cfg.kafka,
            self.cfg.trainer.group_id,
            **{
                "client.id": self.worker_id,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": self.cfg.trainer.max_poll_interval_ms,
                "session.timeout.ms": self.cfg.trainer.session_timeout_ms,
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
        self._consumer = consumer
        self.metrics.gauges.lag = lambda: consumer_lag(consumer)
        consumer.subscribe(
            [self.topics.training], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        try:
            while not stop.is_set():
                msg = consumer.poll(0.2)
                if msg is not None:
                    error = msg.error()
                    if error is not None:
                        log.warning("trainer consumer: %s", error.str())
                    else:
                        self._handle(msg)
                self._drain_finished()
                self._commit(consumer)
        finally:
            self.worker.shutdown()
            jobs.join(timeout=self.cfg.trainer.cancel_grace_s + 30)
            control.join(timeout=10)
            self._drain_finished()
            self._commit(consumer)
            consumer.close()

    def _jobs_by_state(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for job in list(self.worker.ledger.values()):
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def _handle(self, msg: Any) -> None:
        self.metrics.consumed(msg.topic())
        partition: Partition = (msg.topic(), msg.partition())
        in_flight = False
        try:
            event = decode(msg.value())
        except EventDecodeError as exc:
            raw = to_raw_message(msg)
            self.publisher.publish_raw(
                self.topics.dlq, raw.key, raw.value, dead_letter_headers(raw, "trainer", exc.reason, exc.detail)
            )
            self.publisher.flush()
        else:
            if isinstance(event, TrainingRequested):
                in_flight = self.worker.offer(event, (msg.topic(), msg.partition(), msg.offset()))
            else:
                self.worker.fold([event])
        self.offsets.consumed(partition, msg.offset(), in_flight)

    def _drain_finished(self) -> None:
        while not self.worker.finished.empty():
            topic, partition, offset = self.worker.finished.get_nowait()
            self.offsets.finished((topic, partition), offset)

    def _commit(self, consumer: Any, partitions: set[Partition] | None = None) -> None:
        positions = self.offsets.to_commit(partitions)
        if not positions:
            return
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
            self.offsets.committed(positions)
        except KafkaException as exc:
            log.warning("commit failed (the request may run again, idempotently): %s", exc)


def run_trainer(
    cfg: Config,
    stop: threading.Event,
    publisher: EventPublisher | None = None,
    runner: JobRunner | None = None,
    worker_id: str | None = None,
    metrics: Any = None,
) -> None:
    """The Kafka loop around :class:`TrainerWorker`, until ``stop`` is set."""
    try:
        TrainingConsumer(cfg, publisher=publisher, runner=runner, worker_id=worker_id, metrics=metrics).run(stop)
    except Exception:
        log.critical("the trainer stopped: no training jobs run in this process", exc_info=True)
        raise
