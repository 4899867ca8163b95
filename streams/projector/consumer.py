"""The projector's Kafka loop: a plain consumer (no Faust state is needed to write projections).

It reads batches from the event topics, hands each batch to the Projector (which writes ClickHouse
and returns only once the store acknowledged), and commits the batch's offsets after that. A failure
leaves the batch un-committed and retries it: nothing is lost, and every write is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException

from infra.kafka import RawMessage, events_in, new_consumer, read_topic, to_raw_message
from infra.metrics import RoleMetrics, consumer_lag
from schemas.config import Config
from schemas.events import TrainingRequested
from schemas.topics import Topics
from streams.projector.projection import Projector

log = logging.getLogger("samtuner.streams.projector.projection")


@dataclass
class ProjectorStats:
    batches: int = 0
    events: int = 0
    failures: int = 0
    project_s: float = 0.0


def known_requests(cfg: Config) -> set[str]:
    """Training requests already in the training log (read once at start)."""
    out = set()
    for event in events_in(read_topic(cfg.kafka, Topics(cfg.kafka.topic_prefix).training)):
        if isinstance(event, TrainingRequested):
            out.add(str(event.request_id))
    return out


def projector_topics(topics: Topics) -> list[str]:
    # Feedback too, for the feedback about a served answer (SAM echoes context["answer_id"]).
    return [topics.pairs, topics.training, topics.adapters, topics.dlq, topics.inference, topics.feedback]


class ProjectorConsumer:
    def __init__(
        self, cfg: Config, projector: Projector, stats: ProjectorStats | None = None, metrics: RoleMetrics | None = None
    ) -> None:
        self.cfg = cfg
        self.projector = projector
        self.stats = stats or ProjectorStats()
        self.metrics = metrics or RoleMetrics("projector")
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.ready = threading.Event()
        self._last = (time.monotonic(), 0, 0.0)

    def _progress(self, every_s: float = 10.0) -> None:
        """Long work shows progress: a line every ``every_s`` while there is work."""
        at, events, spent = self._last
        now = time.monotonic()
        if now - at < every_s:
            return
        n = self.stats.events - events
        log.info(
            "projector: %d events in %.0fs (%.0f/s), %.0f us per event in ClickHouse writes; %d batches in all",
            n,
            now - at,
            n / (now - at),
            (self.stats.project_s - spent) / max(n, 1) * 1e6,
            self.stats.batches,
        )
        self._last = (now, self.stats.events, self.stats.project_s)

    def run(self, stop: threading.Event) -> None:
        self.projector.known_requests |= known_requests(self.cfg)
        consumer = new_consumer(
            self.cfg.kafka,
            f"{self.cfg.streams.app_id}-projector",
            **{
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": 600_000,
                "session.timeout.ms": int(self.cfg.streams.session_timeout_s * 1000),
            },
        )
        consumer.subscribe(projector_topics(self.topics))
        self.metrics.gauges.lag = lambda: consumer_lag(consumer)
        self.ready.set()
        try:
            while not stop.is_set():
                batch = consumer.consume(
                    num_messages=self.cfg.streams.batch_size, timeout=self.cfg.streams.batch_timeout_s
                )
                messages = [to_raw_message(m) for m in batch if m.error() is None]
                for m in batch:
                    error = m.error()
                    if error is not None:
                        log.warning("projector consumer: %s", error.str())
                if not messages:
                    continue
                for topic in {m.topic for m in messages}:
                    self.metrics.consumed(topic, sum(1 for m in messages if m.topic == topic))
                self._project(messages, stop)
                try:
                    consumer.commit(asynchronous=False)
                except KafkaException as exc:
                    log.warning("commit failed (the batch may be projected again, idempotently): %s", exc)
        finally:
            consumer.close()

    def _project(self, messages: list[RawMessage], stop: threading.Event) -> None:
        while True:
            try:
                started = time.perf_counter()
                self.projector.project(messages)
                self.stats.project_s += time.perf_counter() - started
                self.metrics.batch(time.perf_counter() - started)
                self.stats.batches += 1
                self.stats.events += len(messages)
                self._progress()
                return
            except Exception:
                self.stats.failures += 1
                log.exception("projecting a batch of %d events failed; retrying", len(messages))
                if stop.wait(2.0):
                    raise
