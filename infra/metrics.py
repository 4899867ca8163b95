"""Prometheus metrics of the roles that are not an inference node: decider, projector, trainer.

Each role has a :class:`RoleMetrics` in a registry of its own and, when ``metrics.<role>_port`` is
set, a small HTTP server (``GET /metrics``, ``GET /healthz``) behind the same API keys as every
other server (``read`` scope; loopback only without keys). Every series carries the ``role`` label:

* ``samtuner_events_in_total{role,topic}`` / ``samtuner_events_out_total{role,topic}``;
* ``samtuner_dead_letters_total{role,reason}``;
* ``samtuner_skipped_total{role,reason}``: inputs that left no output, and why (the decider's
  redeliveries, replays of erased events, commands for other roles, offsets handled before);
* ``samtuner_batch_seconds{role}``: time to handle one batch;
* ``samtuner_consumer_lag{role,topic}``: messages not yet consumed, summed over partitions;
* ``samtuner_jobs{role,state}`` and ``samtuner_training_step_seconds{role}`` (trainer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra.kafka import EventPublisher
from schemas import dead_letters as DLQ
from schemas.events import Event, TrainingProgressed

log = logging.getLogger("samtuner.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LagFn = Callable[[], Mapping[str, int]]  # topic -> messages behind
GaugeFn = Callable[[], Mapping[str, float]]


class _Gauges(Collector):
    """Gauges read at scrape time from the role's own state (never stale, never duplicated)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.lag: LagFn | None = None
        self.jobs: GaugeFn | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.lag is not None:
            family = GaugeMetricFamily(
                "samtuner_consumer_lag", "Messages not consumed yet, by topic.", labels=["role", "topic"]
            )
            try:
                for topic, lag in sorted(self.lag().items()):
                    family.add_metric([self.role, topic], float(lag))
            except Exception as exc:  # a scrape must never hurt the role
                log.debug("consumer lag unavailable: %s", exc)
            yield family
        if self.jobs is not None:
            family = GaugeMetricFamily(
                "samtuner_jobs", "Training jobs in the ledger, by state.", labels=["role", "state"]
            )
            for state, count in sorted(self.jobs().items()):
                family.add_metric([self.role, state], float(count))
            yield family


class RoleMetrics:
    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("samtuner_events_in", "Messages consumed, by topic.", ["role", "topic"], registry=r)
        self.events_out = Counter("samtuner_events_out", "Messages produced, by topic.", ["role", "topic"], registry=r)
        self.dead_letters = Counter(
            "samtuner_dead_letters", "Dead letters sent, by reason.", ["role", "reason"], registry=r
        )
        self.skipped = Counter(
            "samtuner_skipped", "Inputs that left no output, by reason.", ["role", "reason"], registry=r
        )
        self.batch_seconds = Histogram(
            "samtuner_batch_seconds", "Time to handle one batch.", ["role"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.step_seconds = Histogram(
            "samtuner_training_step_seconds",
            "Wall time per optimizer step (trainer).",
            ["role"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.gauges = _Gauges(role)
        r.register(self.gauges)
        self._steps: dict[tuple[str, int], tuple[int, float]] = {}  # (request, attempt) -> last (step, time)

    def consumed(self, topic: str, n: int = 1) -> None:
        self.events_in.labels(self.role, topic).inc(n)

    def produced(self, topic: str, n: int = 1) -> None:
        self.events_out.labels(self.role, topic).inc(n)

    def dead_lettered(self, reasons: Mapping[str, int]) -> None:
        for reason, n in reasons.items():
            self.dead_letters.labels(self.role, reason).inc(n)

    def skips(self, reasons: Mapping[str, int]) -> None:
        for reason, n in reasons.items():
            self.skipped.labels(self.role, reason).inc(n)

    def batch(self, seconds: float) -> None:
        self.batch_seconds.labels(self.role).observe(seconds)

    def observe_event(self, event: Event) -> None:
        """Training step time, from consecutive TrainingProgressed events of one attempt."""
        if not isinstance(event, TrainingProgressed) or event.loss is None:
            return
        key = (str(event.request_id), event.attempt)
        now = time.monotonic()
        last = self._steps.get(key)
        if last is not None and event.step > last[0]:
            per_step = (now - last[1]) / (event.step - last[0])
            self.step_seconds.labels(self.role).observe(per_step)
        self._steps[key] = (event.step, now)
        if event.step >= event.total_steps > 0:
            self._steps.pop(key, None)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountingPublisher:
    """An EventPublisher that counts what goes out per topic (and lets metrics look at events)."""

    def __init__(self, inner: EventPublisher, metrics: RoleMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def publish(self, topic: str, event: Event) -> None:
        self.inner.publish(topic, event)
        self.metrics.produced(topic)
        self.metrics.observe_event(event)

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self.inner.publish_raw(topic, key, value, headers, timestamp_ms)
        self.metrics.produced(topic)
        reason = dict(headers or ()).get(DLQ.REASON)
        if reason is not None:
            self.metrics.dead_lettered({reason.decode(errors="replace"): 1})

    def flush(self, timeout_s: float = 30.0) -> None:
        self.inner.flush(timeout_s)


def consumer_lag(consumer: Any) -> dict[str, int]:
    """Lag of a confluent-kafka consumer's assignment: high watermark (as last fetched) - position."""
    out: dict[str, int] = {}
    for tp in consumer.position(consumer.assignment()):
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and tp.offset >= 0:
            out[tp.topic] = out.get(tp.topic, 0) + max(0, high - tp.offset)
    return out


class MetricsServer:
    """``GET /metrics`` of one role on ``host:port`` (port 0 = any free one: see ``port``)."""

    def __init__(self, metrics: RoleMetrics, host: str, port: int, auth: Any) -> None:
        import uvicorn
        from fastapi import FastAPI, Response

        api = FastAPI(title=f"sam-tuner {metrics.role} metrics", version="1")

        @api.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok", "role": metrics.role}

        @api.get("/metrics", dependencies=[auth.require("read")])
        def exposition() -> Response:
            return Response(metrics.exposition() + auth.exposition(), media_type=CONTENT_TYPE)

        self.role = metrics.role
        self.host = host
        self.server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name=f"metrics-{metrics.role}", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            from infra.errors import InfraError

            raise InfraError(f"the {self.role} metrics server could not listen on {self.host} (port taken?)")
        log.info("%s metrics on http://%s:%d/metrics", self.role, self.host, self.port)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
