"""The job ledger: a pure fold over the training topic's events. One job per request id."""

from __future__ import annotations

from dataclasses import dataclass, replace

from schemas.events import (
    Event,
    TrainingFailed,
    TrainingProgressed,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)

TERMINAL = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class Job:
    request: TrainingRequested
    status: str = "requested"
    attempt: int = 0
    step: int = 0
    total_steps: int = 0
    adapter_version: int | None = None
    cause: str = ""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


Ledger = dict[str, Job]


def apply(ledger: Ledger, event: Event) -> Ledger:
    """The ledger after ``event`` (the input is not modified). Unknown or unrelated events change nothing."""
    if isinstance(event, TrainingRequested):
        key = str(event.request_id)
        if key in ledger:
            return ledger  # a repeated request is a no-op
        return {**ledger, key: Job(request=event)}
    request_id = getattr(event, "request_id", None)
    job = ledger.get(str(request_id)) if request_id is not None else None
    if job is None or job.done:
        return ledger
    if isinstance(event, TrainingStarted):
        job = replace(job, status="running", attempt=max(job.attempt, event.attempt))
    elif isinstance(event, TrainingProgressed):
        job = replace(job, status="running", step=event.step, total_steps=event.total_steps)
    elif isinstance(event, TrainingSucceeded):
        job = replace(job, status="succeeded", adapter_version=event.adapter_version)
    elif isinstance(event, TrainingFailed):
        job = replace(job, status="requested" if event.will_retry else "failed", cause=event.cause,
                      attempt=max(job.attempt, event.attempt))
    else:
        return ledger
    return {**ledger, str(request_id): job}


def should_run(ledger: Ledger, request_id: str) -> bool:
    job = ledger.get(request_id)
    return job is not None and not job.done
