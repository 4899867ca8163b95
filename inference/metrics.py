"""Prometheus metrics of a node, in a registry of its own (several nodes can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inference.cache import CacheStats

if TYPE_CHECKING:
    from inference.scheduler import SchedulerStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _CacheCollector(Collector):
    """Reads the cache's own counters at scrape time, so they can never disagree with it."""

    def __init__(self, stats: Callable[[], CacheStats], registry_users: Callable[[], int]) -> None:
        self._stats = stats
        self._users = registry_users

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._stats()
        yield CounterMetricFamily(
            "samtuner_adapter_cache_hits", "Requests whose adapter was loaded already.", value=s.hits
        )
        yield CounterMetricFamily(
            "samtuner_adapter_cache_misses", "Requests whose adapter had to be loaded.", value=s.misses
        )
        yield GaugeMetricFamily("samtuner_adapter_cache_entries", "Adapters loaded now.", value=s.entries)
        yield GaugeMetricFamily("samtuner_adapter_cache_bytes", "Bytes of adapter weights loaded now.", value=s.bytes)
        yield GaugeMetricFamily(
            "samtuner_registry_users", "Users the registry knows (loaded or not).", value=self._users()
        )


class _SchedulerCollector(Collector):
    def __init__(self, stats: Callable[[], SchedulerStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._stats()
        yield GaugeMetricFamily("samtuner_requests_queued", "Requests waiting for a batch row.", value=s.queued)
        yield GaugeMetricFamily(
            "samtuner_requests_running", "Requests being generated (batch rows taken).", value=s.running
        )
        yield CounterMetricFamily("samtuner_decode_steps", "Forward passes over the running batch.", value=s.steps)
        yield CounterMetricFamily(
            "samtuner_decode_rows", "Rows of every decode step (/ steps = the mean batch).", value=s.rows_stepped
        )


class NodeMetrics:
    def __init__(
        self,
        cache_stats: Callable[[], CacheStats],
        registry_users: Callable[[], int],
        scheduler_stats: Callable[[], SchedulerStats] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CacheCollector(cache_stats, registry_users))
        if scheduler_stats is not None:
            self.registry.register(_SchedulerCollector(scheduler_stats))
        r = self.registry
        self.evictions = Counter(
            "samtuner_adapter_cache_evictions", "Adapters unloaded, by reason.", ["reason"], registry=r
        )
        self.loads = Counter(
            "samtuner_adapter_loads", "Adapter loads (validate + read), by outcome.", ["outcome"], registry=r
        )
        self.load_seconds = Histogram(
            "samtuner_adapter_load_seconds",
            "Time to load and validate an adapter.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "samtuner_fallbacks", "Answers not from the routed adapter, by reason.", ["reason"], registry=r
        )
        self.answers = Counter("samtuner_answers", "Answers served, by A/B arm.", ["arm"], registry=r)
        self.generation_seconds = Histogram(
            "samtuner_generation_seconds",
            "Time to generate an answer.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.switch_seconds = Histogram(
            "samtuner_adapter_switch_seconds",
            "Time from a request to its adapter bound (routing, cache, bind).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "samtuner_refusals", "Requests refused or failed, by error code (the limit hit).", ["code"], registry=r
        )
        self.registry_events = Counter("samtuner_registry_events", "Registry events applied.", registry=r)
        self.event_failures = Counter(
            "samtuner_event_publish_failures", "Events the broker did not acknowledge.", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
