"""The confluent-kafka loop of a trainer worker: poll, decode, hand to the worker, commit."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.kafka import EventPublisher, KafkaEventPublisher, read_topic, to_raw_message
from schemas.codec import decode
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.events import Event
from schemas.topics import Topics
from streams.dead_letters import dead_letter_headers
from trainer.runner import JobRunner
from trainer.worker import TrainerWorker

log = logging.getLogger("samtuner.trainer")


class TrainingConsumer:
    def __init__(self, cfg: Config, publisher: EventPublisher | None = None, runner: JobRunner | None = None,
                 worker_id: str | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.publisher = publisher or KafkaEventPublisher(cfg.kafka.bootstrap_servers, client_id="samtuner-trainer")
        self.worker = TrainerWorker(cfg, self.publisher, runner=runner,
                                    worker_id=worker_id or f"{socket.gethostname()}-trainer")
        self._busy = False
        self._consumer: Any = None

    def _rebuild_ledger(self) -> None:
        events: list[Event] = []
        for msg in read_topic(self.cfg.kafka.bootstrap_servers, self.topics.training):
            try:
                events.append(decode(msg.value))
            except EventDecodeError:
                continue
        self.worker.load(events)
        log.info("trainer ledger rebuilt from %d events (%d jobs)", len(events), len(self.worker.ledger))

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        if self._busy:
            consumer.pause(partitions)  # a job is running: new partitions wait for it

    def run(self, stop: threading.Event) -> None:
        self._rebuild_ledger()
        consumer = Consumer({
            "bootstrap.servers": self.cfg.kafka.bootstrap_servers,
            "group.id": self.cfg.trainer.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": self.cfg.trainer.max_poll_interval_ms,
            "session.timeout.ms": 30_000,
        })
        self._consumer = consumer
        consumer.subscribe([self.topics.training], on_assign=self._on_assign)
        try:
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    log.warning("trainer consumer: %s", error.str())
                    continue
                self._handle(consumer, msg)
        finally:
            consumer.close()

    def _handle(self, consumer: Any, msg: Any) -> None:
        try:
            event = decode(msg.value())
        except EventDecodeError as exc:
            raw = to_raw_message(msg)
            self.publisher.publish_raw(self.topics.dlq, raw.key, raw.value,
                                       dead_letter_headers(raw, "trainer", exc.reason, exc.detail))
            self.publisher.flush()
            self._commit(consumer, msg)
            return
        assignment = consumer.assignment()
        self._busy = True
        consumer.pause(assignment)
        try:
            self.worker.on_event(event, tick=lambda: self._tick(consumer))
        except Exception:  # never let one job take the worker down
            log.exception("trainer failed handling %s", type(event).__name__)
        finally:
            self._busy = False
            consumer.resume(consumer.assignment())
        self._commit(consumer, msg)

    def _tick(self, consumer: Any) -> None:
        # Keeps the group membership alive (max.poll.interval.ms) while a job runs.
        msg = consumer.poll(0)
        if msg is not None and not msg.error():
            consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
            consumer.pause([TopicPartition(msg.topic(), msg.partition())])

    def _commit(self, consumer: Any, msg: Any) -> None:
        try:
            consumer.commit(message=msg, asynchronous=False)
        except KafkaException as exc:
            log.warning("commit failed (the request may run again, idempotently): %s", exc)
