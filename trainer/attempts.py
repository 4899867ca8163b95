"""A job's attempts: run it to an outcome (retries, resume, the gate, publication) or stop it.

:class:`AttemptExecutor` holds no lock and no queue: the worker (``trainer/worker.py``) hands it one
running job at a time and gets back whether the job reached an outcome. It reads the ledger through
``ledger()`` (a snapshot) and sends every outcome through ``emit`` (publish, then fold into the
ledger) and ``flush``, so the order of a job's events on the training topic is the order they
happen here.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore
from infra.errors import ArtifactError, InfraError
from infra.models import cuda_available, weights_sha256
from schemas.config import Config
from schemas.events import BaseModelRef, Event, TrainingRequested
from trainer import checkpoints, gate, outcomes
from trainer import ledger as L
from trainer.errors import TrainerError
from trainer.job_queue import RunningJob
from trainer.manifest import config_sha256, publish_adapter_dir, published_for, read_manifest
from trainer.retry import GiveUp, after_failure
from trainer.runner import JobRunner
from trainer.spec import JobResult, JobSpec, VerifiedAdapter

log = logging.getLogger("samtuner.trainer")


@dataclass(frozen=True)
class _Context:
    """What the user has now: the gate's baseline, and the parent of an incremental job."""

    baseline: VerifiedAdapter | None
    baseline_name: str
    parent: VerifiedAdapter | None


class AttemptExecutor:
    def __init__(
        self,
        cfg: Config,
        artifacts: ArtifactStore,
        runner: JobRunner,
        worker_id: str,
        ledger: Callable[[], L.Ledger],
        emit: Callable[[Event], None],
        flush: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.artifacts = artifacts
        self.runner = runner
        self.worker_id = worker_id
        self.jobs_dir = cfg.state_path / "trainer" / "jobs"
        self._ledger = ledger
        self._emit = emit
        self._flush = flush

    def execute(self, running: RunningJob) -> bool:
        """Run a job to an outcome (True), or stop it for another owner to resume (False)."""
        request = running.item.request
        rid = running.item.request_id
        started = time.monotonic()
        job = self._ledger()[rid]
        if job.done:
            return True
        if job.interrupted >= self.cfg.trainer.max_interrupted_attempts:
            return self._fail(
                request,
                job.attempt,
                f"the worker running it stopped {job.interrupted} times "
                "(trainer.max_interrupted_attempts); not running it again",
                "Interrupted",
            )
        try:
            existing = published_for(self.artifacts, request.user_id, request.generation, rid)
        except InfraError as exc:
            return self._fail(
                request, job.attempt, f"the adapter directory of this version is unusable: {exc}", type(exc).__name__
            )
        if existing is not None:  # resumed after its adapter was put in place: publish that adapter's events
            uri = self.artifacts.adapter_uri(request.user_id, request.generation)
            self._emit(outcomes.adapter_published(request, existing, uri))
            self._emit(outcomes.succeeded(request, uri, existing.get("metrics", {}), 0.0))
            self._flush()
            self._discard(rid)
            return True
        try:
            context = self._context(request)
        except TrainerError as exc:
            return self._fail(request, job.attempt + 1, str(exc), type(exc).__name__)
        # The request's own overrides (RequestTraining), then what retries changed.
        overrides: dict[str, Any] = {**request.dpo_overrides, **job.overrides}
        failures, attempt = job.failures, job.attempt
        while True:
            attempt += 1
            result = self._attempt(running, request, attempt, overrides, context)
            if result.status == "stopped":
                return self._stopped(running, request)
            if result.status == "succeeded":
                self._conclude(request, result, context, attempt, overrides, time.monotonic() - started)
                return True
            failures += 1
            decision = after_failure(result, failures, overrides, self.cfg.trainer)
            if isinstance(decision, GiveUp):
                return self._fail(request, attempt, decision.cause, result.error_type or "JobFailed")
            log.warning("training attempt %d of %s failed: %s", attempt, rid, decision.note)
            self._emit(
                outcomes.failed(
                    request, attempt, f"{result.cause} ({decision.note})", result.error_type, retry_in_s=decision.wait_s
                )
            )
            self._flush()
            overrides = decision.overrides
            deadline = time.monotonic() + decision.wait_s
            while running.stop_reason is None and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if running.stop_reason is not None:
                return self._stopped(running, request)

    def _attempt(
        self,
        running: RunningJob,
        request: TrainingRequested,
        attempt: int,
        overrides: dict[str, Any],
        context: _Context,
    ) -> JobResult:
        rid = str(request.request_id)
        checkpoint_dir: Path | None = None
        point = None
        if self.cfg.training.checkpoint_steps != 0:
            checkpoint_dir = self.checkpoint_dir(rid)
            key = checkpoints.run_key(
                config_sha256(self.cfg.model_dump(mode="json")),
                request.dataset.sha256,
                overrides,
                "cuda" if cuda_available() else "cpu",
            )
            point = checkpoints.prepare(checkpoint_dir, key)
        self._emit(outcomes.started(request, attempt, self.worker_id, point.step if point else 0, overrides))
        self._flush()
        staging = self.staging(request)
        shutil.rmtree(staging, ignore_errors=True)
        try:
            dataset = self.artifacts.verify_file(request.dataset.uri, request.dataset.sha256)
        except InfraError as exc:
            return JobResult(
                status="failed", cause=f"the dataset snapshot is unusable: {exc}", error_type=type(exc).__name__
            )
        spec = JobSpec(
            request_id=rid,
            user_id=request.user_id,
            version=request.generation,
            attempt=attempt,
            dataset_path=str(dataset),
            dataset_sha256=request.dataset.sha256,
            output_dir=str(staging),
            config=self.cfg.redacted(),
            dpo_overrides=overrides,
            checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
            resume_from=str(point.path) if point else None,
            baseline=context.baseline,
            parent=context.parent,
        )
        return self.runner.run(spec, self.jobs_dir / rid, self._progress_relay(request, attempt), running.should_stop)

    def _context(self, request: TrainingRequested) -> _Context:
        current = L.current_adapter(self._ledger(), request.user_id)
        if current is None or current.adapter_version is None:
            return _Context(None, "the base model", None)
        version = current.adapter_version
        try:
            read_manifest(self.artifacts, current.adapter_uri)  # checksums verified
            ref = VerifiedAdapter(version=version, path=str(self.artifacts.resolve(current.adapter_uri)))
        except InfraError as exc:
            if self.cfg.training.incremental:
                raise TrainerError(f"cannot train on top of adapter v{version}: {exc}") from exc
            log.warning(
                "the user's adapter v%d fails verification (%s); the gate compares with the base model", version, exc
            )
            return _Context(None, f"the base model (adapter v{version} failed verification: {exc})", None)
        return _Context(ref, f"adapter v{version}", ref if self.cfg.training.incremental else None)

    def _conclude(
        self,
        request: TrainingRequested,
        result: JobResult,
        context: _Context,
        attempt: int,
        overrides: dict[str, Any],
        duration_s: float,
    ) -> None:
        rid = str(request.request_id)
        staging = self.staging(request)
        control = [
            gate.ControlAnswer(c.prompt, c.before, c.after, c.base_correct, c.adapter_correct) for c in result.control
        ]
        decision = gate.decide(
            self.cfg.evaluation, result.metrics, result.baseline_metrics, context.baseline_name, control
        )
        if not decision.publish:
            shutil.rmtree(staging, ignore_errors=True)
            log.info("adapter for request %s rejected by the gate: %s", rid, decision.reason)
            self._emit(outcomes.rejected(request, decision.reason, result.metrics, result.baseline_metrics))
            self._flush()
            self._discard(rid)
            return
        config = self.cfg.redacted()  # the manifest shows the config, never a secret in it
        lineage = {
            "request_id": rid,
            "base_model": BaseModelRef(
                name_or_path=self.cfg.model.base, weights_sha256=weights_sha256(self.cfg.model.base)
            ).model_dump(),
            "config_sha256": config_sha256(config),
            "config": {k: config[k] for k in ("model", "lora", "quantization", "training", "evaluation")},
            "resolved_training": result.resolved,
            "overrides": overrides,
            "attempt": attempt,
            "dataset": {"uri": request.dataset.uri, "sha256": request.dataset.sha256},
            "method": result.method,
            "pair_ids": {
                "train": result.train_pairs,
                "validation": result.validation_pairs,
                "heldout": result.heldout_pairs,
            },
            "example_ids": {
                "train": result.train_examples,
                "validation": result.validation_examples,
                "heldout": result.heldout_examples,
            },
            "metrics": result.metrics,
            "baseline": {
                "name": context.baseline_name,
                "version": context.baseline.version if context.baseline else None,
                "metrics": result.baseline_metrics,
            },
            "parent_version": context.parent.version if context.parent else None,
            "gate": {"publish": True, "reasons": list(decision.reasons)},
            "control": [c.model_dump() for c in result.control],
        }
        try:
            published = publish_adapter_dir(self.artifacts, staging, request.user_id, request.generation, lineage)
        except (ArtifactError, OSError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self._fail(request, attempt, f"publishing the adapter failed: {exc}", type(exc).__name__)
            return
        self._emit(outcomes.adapter_published(request, published.manifest, published.uri))
        self._emit(outcomes.succeeded(request, published.uri, result.metrics, duration_s))
        self._flush()
        self._discard(rid)
        log.info(
            "adapter version %d published (%s), held-out accuracy %s vs %s",
            request.generation,
            published.uri,
            result.metrics.get("heldout_policy_accuracy"),
            context.baseline_name,
        )

    def _stopped(self, running: RunningJob, request: TrainingRequested) -> bool:
        if running.aborted:
            log.info("job %s stopped (%s); its next owner resumes it", request.request_id, running.stop_reason)
            return False
        self._emit(outcomes.cancelled(request, running.stop_reason or "cancelled", running.command_id))
        self._flush()
        shutil.rmtree(self.staging(request), ignore_errors=True)
        self._discard(str(request.request_id))
        return True

    def _fail(self, request: TrainingRequested, attempt: int, cause: str, error_type: str) -> bool:
        log.warning("training failed for request %s: %s", request.request_id, cause)
        self._emit(outcomes.failed(request, max(attempt, 1), cause, error_type))
        self._flush()
        shutil.rmtree(self.staging(request), ignore_errors=True)
        self._discard(str(request.request_id))
        return True

    def _progress_relay(self, request: TrainingRequested, attempt: int) -> Callable[[dict[str, Any]], None]:
        last = [0.0]

        def relay(line: dict[str, Any]) -> None:
            if line.get("type") != "progress":
                return
            now = time.monotonic()
            evaluation = line.get("loss") is None
            final = line.get("step") == line.get("total")
            if not (evaluation or final) and now - last[0] < self.cfg.trainer.progress_interval_s:
                return
            if not evaluation:
                last[0] = now
            self._emit(outcomes.progressed(request, attempt, line))

        return relay

    def staging(self, request: TrainingRequested) -> Path:
        final = self.artifacts.resolve(self.artifacts.adapter_uri(request.user_id, request.generation))
        return final.with_name(f".staging-{request.request_id}")

    def checkpoint_dir(self, rid: str) -> Path:
        return self.artifacts.resolve(f"checkpoints/{rid}")

    def _discard(self, rid: str) -> None:
        checkpoints.discard(self.checkpoint_dir(rid))
