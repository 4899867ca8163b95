"""The trainer worker: a queue of jobs run one at a time, with retries, resume, cancel and the gate.

Three threads share a worker (see trainer/consumer.py):

* the consumer thread folds the training topic into the ledger and *offers* requests: a request
  still to do is queued here (``TrainingQueued``) and its offset stays uncommitted until the job
  has an outcome, so a worker that dies leaves it to the next owner of the partition;
* the job thread (:meth:`TrainerWorker.run_jobs`) runs the queue in order, each job in a
  subprocess, retrying what can pass, resuming from the job's last checkpoint;
* the control thread delivers ``CancelTraining`` (:meth:`TrainerWorker.cancel`).

A job that is stopped because its partition moved to another worker, or because the worker is
shutting down, publishes nothing: its next owner resumes it. Exactly one adapter is published per
request: publication is atomic and first-wins, and a job resumed after its adapter was already
in place re-publishes that adapter's events (same ids) instead of training again.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from infra.artifacts import ArtifactStore
from infra.errors import ArtifactError, InfraError
from infra.kafka import EventPublisher
from infra.logcontext import correlation
from infra.models import cuda_available, weights_sha256
from schemas.commands import CancelTraining, EraseUser
from schemas.config import Config
from schemas.events import AdapterPublished, BaseModelRef, Event, TrainingRequested
from schemas.topics import Topics
from trainer import checkpoints, gate, outcomes
from trainer import ledger as L
from trainer.errors import TrainerError
from trainer.manifest import config_sha256, publish_adapter_dir, published_for, read_manifest
from trainer.retry import GiveUp, after_failure
from trainer.runner import JobRunner, SubprocessJobRunner
from trainer.spec import JobResult, JobSpec, VerifiedAdapter

log = logging.getLogger("samtuner.trainer")

Position = tuple[str, int, int]  # topic, partition, offset of the request's message
Partition = tuple[str, int]


@dataclass
class _Item:
    request: TrainingRequested
    position: Position | None

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    def on(self, partitions: set[Partition]) -> bool:
        return self.position is not None and (self.position[0], self.position[1]) in partitions


@dataclass
class _Running:
    item: _Item
    stop_reason: str | None = None
    aborted: bool = False  # stopped for another owner to resume: no outcome is published
    command_id: UUID | None = None
    erase: bool = False  # its user was erased: remove its files once it stopped
    done: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> str | None:
        """Why the job should stop (the runner polls it), or None to go on."""
        return self.stop_reason


@dataclass(frozen=True)
class _Context:
    """What the user has now: the gate's baseline, and the parent of an incremental job."""

    baseline: VerifiedAdapter | None
    baseline_name: str
    parent: VerifiedAdapter | None


class TrainerWorker:
    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher,
        runner: JobRunner | None = None,
        worker_id: str = "trainer",
    ) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.runner = runner or SubprocessJobRunner(python=cfg.training.python, grace_s=cfg.trainer.cancel_grace_s)
        self.worker_id = worker_id
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.artifacts = ArtifactStore(cfg.artifact_root)
        self.jobs_dir = cfg.state_path / "trainer" / "jobs"
        self.ledger: L.Ledger = {}
        self.finished: queue.Queue[Position] = queue.Queue()  # offsets the consumer may commit past
        self.ready = threading.Event()  # set once cancels issued before this worker started are known
        self.ready.set()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Item] = deque()
        self._running: _Running | None = None
        self._pending_cancels: dict[str, CancelTraining] = {}
        self._stopping = False

    # -- called by the consumer and control threads -------------------------------------------

    def fold(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                self.ledger = L.apply(self.ledger, event)

    def offer(self, request: TrainingRequested, position: Position | None = None) -> bool:
        """Fold a request; queue it when it still has to run here. True when it is now in flight."""
        with self._lock:
            self.ledger = L.apply(self.ledger, request)
            rid = str(request.request_id)
            if not L.should_run(self.ledger, rid) or self._holds(rid):
                return False  # done, or a repeated request for a job already here: a no-op
            command = self._pending_cancels.pop(rid, None)
            if command is not None:
                self._emit(
                    outcomes.cancelled(
                        request, f"cancelled by {command.issued_by} before it started", command.command_id
                    )
                )
                self.publisher.flush()
                return False
            self._queue.append(_Item(request, position))
            ahead = len(self._queue) - 1 + (1 if self._running else 0)
            self._emit(outcomes.queued(request, self.ledger[rid].attempt + 1, self.worker_id, ahead))
            self._wake.notify_all()
            return True

    def cancel(self, command: CancelTraining) -> None:
        """Cancel a queued or running job of this worker; remember cancels for requests not seen yet."""
        rid = str(command.request_id)
        with self._lock:
            job = self.ledger.get(rid)
            if job is not None and job.done:
                return  # a finished job is not affected
            for item in list(self._queue):
                if item.request_id == rid:
                    self._queue.remove(item)
                    self._emit(
                        outcomes.cancelled(
                            item.request, f"cancelled by {command.issued_by} while queued", command.command_id
                        )
                    )
                    self.publisher.flush()
                    if item.position is not None:
                        self.finished.put(item.position)
                    return
            running = self._running
            if running is not None and running.item.request_id == rid:
                if running.stop_reason is None:
                    running.stop_reason = f"cancelled by {command.issued_by}"
                    running.command_id = command.command_id
                    log.info("cancelling the running job %s", rid)
                return
            self._pending_cancels[rid] = command

    def erase(self, command: EraseUser) -> None:
        """The user was erased: their queued and running jobs are cancelled, and the job directories and
        checkpoints of their requests removed. Only requests triggered before the command count: the
        control topic is read again from the beginning at every start, and a user may come back."""
        user = command.user_id
        with self._lock:
            mine = [
                job.request
                for job in self.ledger.values()
                if job.request.user_id == user and job.request.triggered_at <= command.issued_at
            ]
            rids = {str(r.request_id) for r in mine}
            queued = [item for item in self._queue if item.request_id in rids]
            for item in queued:
                self._queue.remove(item)
                self._emit(outcomes.cancelled(item.request, "the user was erased", command.command_id))
                if item.position is not None:
                    self.finished.put(item.position)
            running = self._running if self._running is not None and self._running.item.request_id in rids else None
            if running is not None and running.stop_reason is None:
                running.stop_reason, running.command_id, running.erase = (
                    "the user was erased",
                    command.command_id,
                    True,
                )
        if queued:
            self.publisher.flush()
        removed = sum(self._remove_job_files(rid) for rid in rids if running is None or rid != running.item.request_id)
        if rids:
            log.info(
                "a user was erased: %d of their jobs cancelled; files of %d jobs removed (%d files)",
                len(queued) + (running is not None),
                len(rids) - (running is not None),
                removed,
            )

    def _remove_job_files(self, rid: str) -> int:
        count = 0
        for directory in (self.jobs_dir / rid, self._checkpoint_dir(rid)):
            if directory.is_dir():
                count += sum(1 for p in directory.rglob("*") if p.is_file())
                shutil.rmtree(directory, ignore_errors=True)
        return count

    def release(self, partitions: set[Partition], reason: str = "its partition moved to another worker") -> None:
        """Give up jobs of ``partitions`` (their new owner runs or resumes them); waits for a running one to stop."""
        with self._lock:
            self._queue = deque(item for item in self._queue if not item.on(partitions))
            running = self._running if self._running is not None and self._running.item.on(partitions) else None
            if running is not None:
                running.aborted, running.stop_reason = True, reason
        if running is not None:
            running.done.wait(self.cfg.trainer.cancel_grace_s + 30)

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running.aborted, self._running.stop_reason = True, "the worker is stopping"
            self._wake.notify_all()

    def queued(self) -> list[str]:
        with self._lock:
            return [item.request_id for item in self._queue]

    def _holds(self, rid: str) -> bool:
        running = self._running is not None and self._running.item.request_id == rid
        return running or any(item.request_id == rid for item in self._queue)

    def _emit(self, event: Event) -> None:
        topic = self.topics.adapters if isinstance(event, AdapterPublished) else self.topics.training
        self.publisher.publish(topic, event)
        with self._lock:
            self.ledger = L.apply(self.ledger, event)

    # -- the job thread ------------------------------------------------------------------------

    def run_jobs(self, stop: threading.Event) -> None:
        """Run queued jobs one at a time until ``stop`` is set or :meth:`shutdown` is called."""
        while True:
            with self._lock:
                while not (self._queue and self.ready.is_set()) and not (stop.is_set() or self._stopping):
                    self._wake.wait(0.25)
                if stop.is_set() or self._stopping:
                    return
                item = self._queue.popleft()
                running = self._running = _Running(item)
            finished = False
            try:
                with correlation(item.request.correlation_id):
                    finished = self.execute(running)
            except Exception:  # never let one job take the worker down; the offset stays uncommitted
                log.exception("trainer failed running request %s", item.request_id)
            finally:
                with self._lock:
                    self._running = None
                running.done.set()
            if running.erase:
                self._remove_job_files(item.request_id)
            if finished and item.position is not None:
                self.finished.put(item.position)

    def run_one(self, request: TrainingRequested) -> bool:
        """Offer and run one request in this thread (no Kafka loop): for local runs and benchmarks."""
        if not self.offer(request):
            return False
        with self._lock:
            item = self._queue.popleft()
            running = self._running = _Running(item)
        try:
            with correlation(item.request.correlation_id):
                return self.execute(running)
        finally:
            with self._lock:
                self._running = None
            running.done.set()

    def execute(self, running: _Running) -> bool:
        """Run a job to an outcome (True), or stop it for another owner to resume (False)."""
        request = running.item.request
        rid = running.item.request_id
        started = time.monotonic()
        with self._lock:
            job = self.ledger[rid]
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
            self.publisher.flush()
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
            self.publisher.flush()
            overrides = decision.overrides
            deadline = time.monotonic() + decision.wait_s
            while running.stop_reason is None and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if running.stop_reason is not None:
                return self._stopped(running, request)

    def _attempt(
        self, running: _Running, request: TrainingRequested, attempt: int, overrides: dict[str, Any], context: _Context
    ) -> JobResult:
        rid = str(request.request_id)
        checkpoint_dir: Path | None = None
        point = None
        if self.cfg.training.checkpoint_steps != 0:
            checkpoint_dir = self._checkpoint_dir(rid)
            key = checkpoints.run_key(
                config_sha256(self.cfg.model_dump(mode="json")),
                request.dataset.sha256,
                overrides,
                "cuda" if cuda_available() else "cpu",
            )
            point = checkpoints.prepare(checkpoint_dir, key)
        self._emit(outcomes.started(request, attempt, self.worker_id, point.step if point else 0, overrides))
        self.publisher.flush()
        staging = self._staging(request)
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
        with self._lock:
            current = L.current_adapter(self.ledger, request.user_id)
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
        staging = self._staging(request)
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
            self.publisher.flush()
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
        self.publisher.flush()
        self._discard(rid)
        log.info(
            "adapter version %d published (%s), held-out accuracy %s vs %s",
            request.generation,
            published.uri,
            result.metrics.get("heldout_policy_accuracy"),
            context.baseline_name,
        )

    def _stopped(self, running: _Running, request: TrainingRequested) -> bool:
        if running.aborted:
            log.info("job %s stopped (%s); its next owner resumes it", request.request_id, running.stop_reason)
            return False
        self._emit(outcomes.cancelled(request, running.stop_reason or "cancelled", running.command_id))
        self.publisher.flush()
        shutil.rmtree(self._staging(request), ignore_errors=True)
        self._discard(str(request.request_id))
        return True

    def _fail(self, request: TrainingRequested, attempt: int, cause: str, error_type: str) -> bool:
        log.warning("training failed for request %s: %s", request.request_id, cause)
        self._emit(outcomes.failed(request, max(attempt, 1), cause, error_type))
        self.publisher.flush()
        shutil.rmtree(self._staging(request), ignore_errors=True)
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

    def _staging(self, request: TrainingRequested) -> Path:
        final = self.artifacts.resolve(self.artifacts.adapter_uri(request.user_id, request.generation))
        return final.with_name(f".staging-{request.request_id}")

    def _checkpoint_dir(self, rid: str) -> Path:
        return self.artifacts.resolve(f"checkpoints/{rid}")

    def _discard(self, rid: str) -> None:
        checkpoints.discard(self._checkpoint_dir(rid))
