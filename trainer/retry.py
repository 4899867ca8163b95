"""What to do after a failed attempt: retry with a smaller batch, or give up with the cause (pure).

Only running out of memory can pass: the retry halves ``per_device_train_batch_size`` and doubles
``gradient_accumulation_steps`` (the effective batch stays the same) after a backoff that doubles
each time. At batch size 1, after ``trainer.max_attempts`` attempts, or for any other failure, the
job fails for good with the cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.config import TrainerSettings
from trainer.spec import JobResult

# A training process killed by SIGKILL was most likely taken by the kernel's OOM killer.
RETRYABLE = frozenset({"OutOfMemoryError", "JobKilled"})
BATCH, ACCUMULATION = "per_device_train_batch_size", "gradient_accumulation_steps"


@dataclass(frozen=True)
class Retry:
    overrides: dict[str, Any]
    wait_s: float
    note: str


@dataclass(frozen=True)
class GiveUp:
    cause: str


def after_failure(
    result: JobResult, failures: int, overrides: Mapping[str, Any], settings: TrainerSettings
) -> Retry | GiveUp:
    """``failures`` counts the failed attempts of the job, this one included."""
    cause = result.cause or result.error_type or "unknown failure"
    if result.error_type not in RETRYABLE:
        return GiveUp(cause)
    if failures >= settings.max_attempts:
        return GiveUp(f"gave up after {failures} attempt(s) (trainer.max_attempts): {cause}")
    batch = _int(overrides.get(BATCH, result.resolved.get(BATCH)))
    accumulation = _int(overrides.get(ACCUMULATION, result.resolved.get(ACCUMULATION))) or 1
    if batch is None:
        return GiveUp(f"out of memory before training started (loading the model?): {cause}")
    if batch <= 1:
        return GiveUp(f"out of memory even at batch size 1: {cause}")
    smaller = {**overrides, BATCH: batch // 2, ACCUMULATION: accumulation * 2}
    wait_s = settings.retry_backoff_s * 2 ** (failures - 1)
    note = (
        f"out of memory at batch {batch} x accumulation {accumulation}; retrying with batch {batch // 2} x "
        f"{accumulation * 2} in {wait_s:.1f}s"
    )
    return Retry(smaller, wait_s, note)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
