"""The job ledger: a pure fold over the training topic's events. One job per request id.

    requested -> queued -> running -> succeeded | failed | cancelled | rejected
                   ^          |
                   +- retrying (a failure that can pass: TrainingFailed(will_retry=True))

Folding is idempotent: an event already applied (same event id) changes nothing, so a worker can
re-read a partition it already folded. Events of finished jobs change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from uuid import UUID

from schemas.events import (
    Event,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)

Status = Literal["requested", "queued", "running", "retrying", "succeeded", "failed", "cancelled", "rejected"]
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "rejected"})


@dataclass(frozen=True)
class Job:
    request: TrainingRequested
    status: Status = "requested"
    attempt: int = 0  # the last attempt started
    failures: int = 0  # attempts that ended in TrainingFailed
    worker: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    adapter_version: int | None = None
    adapter_uri: str = ""
    cause: str = ""
    overrides: dict[str, int | float] = field(default_factory=dict)  # set by retries; a resumed job keeps them
    updated_at: datetime | None = None
    applied: frozenset[UUID] = frozenset()

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    @property
    def interrupted(self) -> int:
        """Attempts that started and never ended: their worker died or gave the job away."""
        return max(0, self.attempt - self.failures)


Ledger = dict[str, Job]


def apply(ledger: Ledger, event: Event) -> Ledger:
    """The ledger after ``event`` (the input is not modified). Unknown or unrelated events change nothing."""
    if isinstance(event, TrainingRequested):
        key = str(event.request_id)
        if key in ledger:
            return ledger  # a repeated request is a no-op
        return {**ledger, key: Job(request=event, updated_at=event.occurred_at, applied=frozenset({event.event_id}))}
    request_id = getattr(event, "request_id", None)
    job = ledger.get(str(request_id)) if request_id is not None else None
    if job is None or job.done or event.event_id in job.applied:
        return ledger
    changed = _transition(job, event)
    if changed is None:
        return ledger
    changed = replace(changed, updated_at=event.occurred_at, applied=job.applied | {event.event_id})
    return {**ledger, job.request_id: changed}


def _transition(job: Job, e: Event) -> Job | None:
    if isinstance(e, TrainingQueued):
        return replace(job, status="queued", worker=e.worker or job.worker)
    if isinstance(e, TrainingStarted):
        return replace(
            job,
            status="running",
            attempt=max(job.attempt, e.attempt),
            worker=e.worker or job.worker,
            step=e.resumed_from_step,
            overrides=dict(e.overrides),
            eta_s=None,
        )
    if isinstance(e, TrainingProgressed):
        if e.loss is None:  # a held-out evaluation: keep its metrics next to the training ones
            return replace(job, status="running", metrics={**job.metrics, **e.metrics})
        return replace(
            job,
            status="running",
            step=e.step,
            total_steps=e.total_steps,
            epoch=e.epoch,
            loss=e.loss,
            metrics={**job.metrics, **e.metrics},
            eta_s=e.eta_s,
        )
    if isinstance(e, TrainingSucceeded):
        return replace(
            job,
            status="succeeded",
            adapter_version=e.adapter_version,
            adapter_uri=e.adapter_uri,
            metrics=dict(e.metrics),
            eta_s=None,
        )
    if isinstance(e, TrainingFailed):
        return replace(
            job,
            status="retrying" if e.will_retry else "failed",
            cause=e.cause,
            attempt=max(job.attempt, e.attempt),
            failures=job.failures + 1,
            eta_s=None,
        )
    if isinstance(e, TrainingCancelled):
        return replace(job, status="cancelled", cause=e.reason or "cancelled", eta_s=None)
    if isinstance(e, TrainingRejected):
        return replace(job, status="rejected", cause=e.reason, metrics=dict(e.metrics), eta_s=None)
    return None


def should_run(ledger: Ledger, request_id: str) -> bool:
    job = ledger.get(request_id)
    return job is not None and not job.done


def current_adapter(ledger: Ledger, user_id: str) -> Job | None:
    """The user's newest published adapter: the succeeded job with the highest adapter version."""
    done = [
        j
        for j in ledger.values()
        if j.request.user_id == user_id and j.status == "succeeded" and j.adapter_version is not None
    ]
    return max(done, key=lambda j: j.adapter_version or 0) if done else None


def jobs_of(ledger: Ledger, user_id: str | None = None) -> list[Job]:
    """Jobs in request order (oldest first), optionally of one user."""
    jobs = [j for j in ledger.values() if user_id is None or j.request.user_id == user_id]
    return sorted(jobs, key=lambda j: (j.request.occurred_at, j.request.generation))
