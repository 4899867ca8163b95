"""The trainer worker: TrainingRequested -> a DPO job in a subprocess -> AdapterPublished.

Workers share the training topic as one consumer group. The ledger (a fold over the topic) makes a
repeated request a no-op. A job runs while the consumer keeps polling with its partitions paused,
so the group never evicts the worker; the request's offset is committed only after the outcome
events are acknowledged by the broker.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore
from infra.errors import ArtifactError, InfraError
from infra.kafka import EventPublisher
from infra.models import weights_sha256
from schemas.config import Config
from schemas.events import (
    AdapterPublished,
    BaseModelRef,
    Event,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from schemas.ids import adapter_event_id, derived_event_id
from schemas.topics import Topics
from trainer import ledger as L
from trainer.manifest import config_sha256, publish_adapter_dir
from trainer.runner import JobRunner, SubprocessJobRunner
from trainer.spec import JobResult, JobSpec

log = logging.getLogger("samtuner.trainer")

Tick = Callable[[], None]


class TrainerWorker:
    """Decides what to run and publishes what happened; Kafka's consumer loop is outside it."""

    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher,
        runner: JobRunner | None = None,
        worker_id: str = "trainer",
        progress_interval_s: float = 0.5,
    ) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.runner = runner or SubprocessJobRunner(python=cfg.training.python)
        self.worker_id = worker_id
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.artifacts = ArtifactStore(cfg.artifact_root)
        self.ledger: L.Ledger = {}
        self.progress_interval_s = progress_interval_s
        self.jobs_dir = cfg.state_path / "trainer" / "jobs"

    def load(self, events: Iterable[Event]) -> None:
        for event in events:
            self.ledger = L.apply(self.ledger, event)

    def on_event(self, event: Event, tick: Tick = lambda: None) -> JobResult | None:
        """Fold ``event`` into the ledger; run the job when it is a request still to do."""
        self.ledger = L.apply(self.ledger, event)
        if isinstance(event, TrainingRequested) and L.should_run(self.ledger, str(event.request_id)):
            # A job found running in the ledger was interrupted (worker killed): run it again.
            return self.execute(event, tick, attempt=self.ledger[str(event.request_id)].attempt + 1)
        return None

    def _emit(self, topic: str, event: Event) -> None:
        self.publisher.publish(topic, event)
        self.ledger = L.apply(self.ledger, event)

    def execute(self, request: TrainingRequested, tick: Tick, attempt: int = 1) -> JobResult:
        rid = str(request.request_id)
        common: dict[str, Any] = {"user_id": request.user_id, "correlation_id": request.correlation_id,
                                  "request_id": request.request_id}
        self._emit(self.topics.training, TrainingStarted(
            event_id=derived_event_id("training-started", rid, str(attempt)), attempt=attempt,
            worker=self.worker_id, **common))
        self.publisher.flush()
        started = time.monotonic()
        staging = self.artifacts.resolve(self.artifacts.adapter_uri(request.user_id, request.generation)).with_name(
            f".staging-{rid}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            dataset = self.artifacts.verify_file(request.dataset.uri, request.dataset.sha256)
            spec = JobSpec(
                request_id=rid, user_id=request.user_id, version=request.generation, dataset_path=str(dataset),
                dataset_sha256=request.dataset.sha256, output_dir=str(staging),
                config=self.cfg.model_dump(mode="json"),
            )
            result = self.runner.run(spec, self.jobs_dir / rid, self._progress_relay(request, common), tick)
        except InfraError as exc:
            result = JobResult(status="failed", cause=str(exc), error_type=type(exc).__name__)
        if result.status == "succeeded":
            try:
                self._publish_success(request, result, staging, common, time.monotonic() - started)
            except (ArtifactError, OSError) as exc:
                result = JobResult(status="failed", cause=f"publishing the adapter failed: {exc}",
                                   error_type=type(exc).__name__, metrics=result.metrics)
        if result.status != "succeeded":
            shutil.rmtree(staging, ignore_errors=True)
            log.warning("training failed for request %s: %s", rid, result.cause)
            self._emit(self.topics.training, TrainingFailed(
                event_id=derived_event_id("training-failed", rid, str(attempt)), cause=result.cause or "unknown",
                error_type=result.error_type or "unknown", attempt=attempt, will_retry=False, **common))
        self.publisher.flush()
        return result

    def _publish_success(self, request: TrainingRequested, result: JobResult, staging: Path,
                         common: dict[str, Any], duration_s: float) -> None:
        base = BaseModelRef(name_or_path=self.cfg.model.base, weights_sha256=weights_sha256(self.cfg.model.base))
        config = self.cfg.model_dump(mode="json")
        published = publish_adapter_dir(self.artifacts, staging, request.user_id, request.generation, {
            "request_id": str(request.request_id),
            "base_model": base.model_dump(),
            "config_sha256": config_sha256(config),
            "dataset": {"uri": request.dataset.uri, "sha256": request.dataset.sha256},
            "pair_ids": {"train": result.train_pairs, "heldout": result.heldout_pairs},
            "metrics": result.metrics,
        })
        rid = str(request.request_id)
        self._emit(self.topics.adapters, AdapterPublished(
            event_id=adapter_event_id(request.user_id, request.generation), user_id=request.user_id,
            correlation_id=request.correlation_id, version=request.generation, request_id=request.request_id,
            uri=published.uri, files=published.files, base_model=base, dataset_sha256=request.dataset.sha256,
            metrics=result.metrics, triggered_at=request.triggered_at))
        self._emit(self.topics.training, TrainingSucceeded(
            event_id=derived_event_id("training-succeeded", rid), adapter_version=request.generation,
            adapter_uri=published.uri, metrics=result.metrics, duration_s=round(duration_s, 3), **common))
        log.info("adapter version %d published (%s), held-out accuracy %s", request.generation, published.uri,
                 result.metrics.get("heldout_pref_accuracy"))

    def _progress_relay(self, request: TrainingRequested, common: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
        last = [0.0]
        rid = str(request.request_id)

        def relay(line: dict[str, Any]) -> None:
            if line.get("type") != "progress":
                return
            now = time.monotonic()
            final = line.get("step") == line.get("total")
            if now - last[0] < self.progress_interval_s and not final:
                return
            last[0] = now
            self._emit(self.topics.training, TrainingProgressed(
                event_id=derived_event_id("training-progress", rid, str(line.get("step", 0))),
                step=int(line.get("step", 0)), total_steps=int(line.get("total", 0)),
                epoch=float(line.get("epoch", 0.0)), loss=line.get("loss"),
                metrics={k: float(v) for k, v in (line.get("metrics") or {}).items()},
                eta_s=line.get("eta_s"), **common))

        return relay


def run_trainer(cfg: Config, stop: threading.Event, publisher: EventPublisher | None = None,
                runner: JobRunner | None = None, worker_id: str | None = None) -> None:
    """The Kafka loop around :class:`TrainerWorker`, until ``stop`` is set."""
    from trainer.consumer import TrainingConsumer

    TrainingConsumer(cfg, publisher=publisher, runner=runner, worker_id=worker_id).run(stop)
