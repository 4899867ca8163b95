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
from collections.abc import Iterable
from pathlib import Path

from infra.artifacts import ArtifactStore
from infra.kafka import EventPublisher
from infra.logcontext import correlation
from schemas.commands import CancelTraining, EraseUser
from schemas.config import Config
from schemas.events import AdapterPublished, Event, TrainingRequested
from schemas.topics import Topics
from trainer import ledger as L
from trainer import outcomes
from trainer.attempts import AttemptExecutor
from trainer.job_queue import JobQueue, Partition, Position, QueuedJob, RunningJob
from trainer.runner import JobRunner, SubprocessJobRunner

log = logging.getLogger("samtuner.trainer")

__all__ = ["Partition", "Position", "TrainerWorker"]


class TrainerWorker:
    """The ledger, the job queue (``trainer/job_queue.py``) and the attempts (``trainer/attempts.py``)
    of one worker, and the publishing of their outcomes, which happens outside any lock."""

    def __init__(
        self,
        cfg: Config,
        publisher: EventPublisher,
        runner: JobRunner | None = None,
        worker_id: str = "trainer",
    ) -> None:
        self.cfg = cfg
        self.publisher = publisher
        self.worker_id = worker_id
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.artifacts = ArtifactStore(cfg.artifact_root)
        self.ledger: L.Ledger = {}
        self.finished: queue.Queue[Position] = queue.Queue()  # offsets the consumer may commit past
        self.ready = threading.Event()  # set once cancels issued before this worker started are known
        self.ready.set()
        self._ledger_lock = threading.Lock()  # the ledger is folded by three threads
        self.jobs = JobQueue()
        self.attempts = AttemptExecutor(
            cfg,
            self.artifacts,
            runner or SubprocessJobRunner(python=cfg.training.python, grace_s=cfg.trainer.cancel_grace_s),
            worker_id,
            ledger=lambda: self.ledger,
            emit=self._emit,
            flush=self.publisher.flush,
        )

    @property
    def jobs_dir(self) -> Path:
        return self.attempts.jobs_dir

    @property
    def runner(self) -> JobRunner:
        return self.attempts.runner

    # -- called by the consumer and control threads -------------------------------------------

    def fold(self, events: Iterable[Event]) -> None:
        with self._ledger_lock:
            for event in events:
                self.ledger = L.apply(self.ledger, event)

    def offer(self, request: TrainingRequested, position: Position | None = None) -> bool:
        """Fold a request; queue it when it still has to run here. True when it is now in flight."""
        self.fold([request])
        rid = str(request.request_id)
        if not L.should_run(self.ledger, rid) or self.jobs.holds(rid):
            return False  # done, or a repeated request for a job already here: a no-op
        command = self.jobs.take_cancel(rid)
        if command is not None:
            self._emit(
                outcomes.cancelled(request, f"cancelled by {command.issued_by} before it started", command.command_id)
            )
            self.publisher.flush()
            return False
        # Queued is on the topic before the job can start (a later Queued would undo Started in a fold).
        self._emit(outcomes.queued(request, self.ledger[rid].attempt + 1, self.worker_id, self.jobs.ahead()))
        late = self.jobs.add(QueuedJob(request, position))
        if late is not None:  # cancelled between the two steps above
            self._emit(outcomes.cancelled(request, f"cancelled by {late.issued_by} while queued", late.command_id))
            self.publisher.flush()
            return False
        return True

    def cancel(self, command: CancelTraining) -> None:
        """Cancel a queued or running job of this worker; remember cancels for requests not seen yet."""
        job = self.ledger.get(str(command.request_id))
        if job is not None and job.done:
            return  # a finished job is not affected
        withdrawn = self.jobs.cancel(command)
        if isinstance(withdrawn, QueuedJob):
            self._emit(
                outcomes.cancelled(
                    withdrawn.request, f"cancelled by {command.issued_by} while queued", command.command_id
                )
            )
            self.publisher.flush()
            if withdrawn.position is not None:
                self.finished.put(withdrawn.position)
        elif isinstance(withdrawn, RunningJob):
            log.info("cancelling the running job %s", command.request_id)

    def erase(self, command: EraseUser) -> None:
        """The user was erased: their queued and running jobs are cancelled, and the job directories and
        checkpoints of their requests removed. Only requests triggered before the command count: the
        control topic is read again from the beginning at every start, and a user may come back."""
        user = command.user_id
        with self._ledger_lock:
            rids = {
                str(job.request.request_id)
                for job in self.ledger.values()
                if job.request.user_id == user and job.request.triggered_at <= command.issued_at
            }
        queued, running = self.jobs.withdraw(rids, "the user was erased", command.command_id, erase=True)
        for item in queued:
            self._emit(outcomes.cancelled(item.request, "the user was erased", command.command_id))
            if item.position is not None:
                self.finished.put(item.position)
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
        for directory in (self.attempts.jobs_dir / rid, self.attempts.checkpoint_dir(rid)):
            if directory.is_dir():
                count += sum(1 for p in directory.rglob("*") if p.is_file())
                shutil.rmtree(directory, ignore_errors=True)
        return count

    def release(self, partitions: set[Partition], reason: str = "its partition moved to another worker") -> None:
        """Give up jobs of ``partitions`` (their new owner runs or resumes them); waits for a running one to stop."""
        running = self.jobs.release(partitions, reason)
        if running is not None:
            running.done.wait(self.cfg.trainer.cancel_grace_s + 30)

    def shutdown(self) -> None:
        self.jobs.close("the worker is stopping")

    def queued(self) -> list[str]:
        return self.jobs.ids()

    def _emit(self, event: Event) -> None:
        topic = self.topics.adapters if isinstance(event, AdapterPublished) else self.topics.training
        self.publisher.publish(topic, event)
        self.fold([event])

    # -- the job thread ------------------------------------------------------------------------

    def run_jobs(self, stop: threading.Event) -> None:
        """Run queued jobs one at a time until ``stop`` is set or :meth:`shutdown` is called."""
        while True:
            running = self.jobs.next(stop, self.ready.is_set)
            if running is None:
                return
            item = running.item
            finished = False
            try:
                finished = self._execute(running)
            except Exception:  # never let one job take the worker down; the offset stays uncommitted
                log.exception("trainer failed running request %s", item.request_id)
            finally:
                self.jobs.finished(running)
            if running.erase:
                self._remove_job_files(item.request_id)
            if finished and item.position is not None:
                self.finished.put(item.position)

    def run_one(self, request: TrainingRequested) -> bool:
        """Offer and run one request in this thread (no Kafka loop): for local runs and benchmarks."""
        if not self.offer(request):
            return False
        running = self.jobs.start_now()
        try:
            return self._execute(running)
        finally:
            self.jobs.finished(running)

    def _execute(self, running: RunningJob) -> bool:
        with correlation(running.item.request.correlation_id):
            return self.attempts.execute(running)
