"""After a failed attempt: out of memory is retried with a smaller batch; everything else gives up at once."""

from __future__ import annotations

from schemas.config import TrainerSettings
from trainer.retry import GiveUp, Retry, after_failure
from trainer.spec import JobResult

SETTINGS = TrainerSettings(max_attempts=4, retry_backoff_s=2.0)


def oom(batch: int = 8, accumulation: int = 1) -> JobResult:
    return JobResult(
        status="failed",
        error_type="OutOfMemoryError",
        cause="CUDA out of memory",
        resolved={"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation},
    )


def test_out_of_memory_halves_the_batch_and_keeps_the_effective_batch() -> None:
    decision = after_failure(oom(), 1, {}, SETTINGS)
    assert isinstance(decision, Retry)
    assert decision.overrides == {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    assert decision.wait_s == 2.0
    again = after_failure(oom(4, 2), 2, decision.overrides, SETTINGS)
    assert isinstance(again, Retry) and again.wait_s == 4.0
    assert again.overrides == {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}


def test_a_process_killed_by_the_kernel_counts_as_out_of_memory() -> None:
    killed = JobResult(
        status="failed", error_type="JobKilled", cause="signal SIGKILL", resolved={"per_device_train_batch_size": 8}
    )
    assert isinstance(after_failure(killed, 1, {}, SETTINGS), Retry)


def test_giving_up_keeps_the_cause() -> None:
    at_one = after_failure(oom(1, 8), 1, {}, SETTINGS)
    assert isinstance(at_one, GiveUp) and at_one.cause == "out of memory even at batch size 1: CUDA out of memory"
    limit = after_failure(oom(), 4, {}, SETTINGS)
    assert isinstance(limit, GiveUp) and limit.cause.startswith("gave up after 4 attempt(s)")
    loading = after_failure(JobResult(status="failed", error_type="OutOfMemoryError", cause="x"), 1, {}, SETTINGS)
    assert isinstance(loading, GiveUp) and "before training started" in loading.cause


def test_other_failures_are_not_retried() -> None:
    bad = JobResult(status="failed", error_type="TrainingConfigError", cause="training.dpo.beta: bad")
    assert after_failure(bad, 1, {}, SETTINGS) == GiveUp("training.dpo.beta: bad")
