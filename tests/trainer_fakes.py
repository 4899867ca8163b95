"""A scripted JobRunner: the trainer's seam for failures, slow jobs and outcomes, without a model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.snapshot import read_snapshot
from trainer.dataset import split_rows
from trainer.runner import ProgressFn, StopFn
from trainer.spec import ControlRecord, JobResult, JobSpec

Step = Callable[[JobSpec, ProgressFn, StopFn], JobResult]


def write_adapter(spec: JobSpec, payload: bytes = b"fake weights") -> None:
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_model.safetensors").write_bytes(payload + spec.request_id.encode())
    (out / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))


def succeed(
    accuracy: float = 1.0, baseline: float = 0.0, heldout: int = 8, control_kept: bool = True, steps: int = 3
) -> Step:
    def step(spec: JobSpec, on_progress: ProgressFn, should_stop: StopFn) -> JobResult:
        for s in range(1, steps + 1):
            on_progress(
                {
                    "type": "progress",
                    "step": s,
                    "total": steps,
                    "epoch": s / steps,
                    "loss": 1.0 / s,
                    "metrics": {"rewards/accuracies": 0.5 + s / (2 * steps)},
                    "eta_s": steps - s,
                }
            )
        write_adapter(spec)
        split = split_rows(read_snapshot(Path(spec.dataset_path).read_bytes()), 0.2, 0.1)
        return JobResult(
            status="succeeded",
            metrics={
                "heldout_pref_accuracy": accuracy,
                "heldout_reward_margin": accuracy,
                "heldout_pairs": heldout,
                "heldout_policy_accuracy": accuracy,
                "heldout_policy_margin": accuracy,
            },
            baseline_metrics={
                "heldout_pref_accuracy": baseline,
                "heldout_reward_margin": baseline,
                "heldout_policy_accuracy": baseline,
                "heldout_policy_margin": baseline,
                "heldout_pairs": heldout,
            },
            control=[
                ControlRecord(
                    prompt="What is 7 plus 5?",
                    before="7 plus 5 is 12.",
                    after="7 plus 5 is 12. Hope this helps!" if control_kept else "7 plus 5 is 75.",
                    base_correct=True,
                    adapter_correct=control_kept,
                    kept=control_kept,
                )
            ],
            resolved={"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
            train_pairs=[str(r["pair_id"]) for r in split.train],
            validation_pairs=[str(r["pair_id"]) for r in split.validation],
            heldout_pairs=[str(r["pair_id"]) for r in split.heldout],
        )

    return step


def fail(error_type: str = "OutOfMemoryError", cause: str = "CUDA out of memory") -> Step:
    def step(spec: JobSpec, on_progress: ProgressFn, should_stop: StopFn) -> JobResult:
        batch = spec.dpo_overrides.get("per_device_train_batch_size", 8)
        accumulation = spec.dpo_overrides.get("gradient_accumulation_steps", 1)
        return JobResult(
            status="failed",
            cause=cause,
            error_type=error_type,
            resolved={"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation},
        )

    return step


def block_until_stopped(started: threading.Event | None = None, timeout_s: float = 60) -> Step:
    def step(spec: JobSpec, on_progress: ProgressFn, should_stop: StopFn) -> JobResult:
        on_progress({"type": "progress", "step": 1, "total": 100, "epoch": 0.01, "loss": 1.0, "metrics": {}})
        if started is not None:
            started.set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reason = should_stop()
            if reason is not None:
                return JobResult(status="stopped", cause=reason, error_type="Stopped")
            time.sleep(0.02)
        raise AssertionError("the job was never stopped")

    return step


class FakeJobRunner:
    """Plays ``script`` one step per attempt (the last step repeats); records every spec it got."""

    def __init__(self, *script: Step) -> None:
        self.script = list(script)
        self.specs: list[JobSpec] = []

    def run(self, spec: JobSpec, job_dir: Path, on_progress: ProgressFn, should_stop: StopFn) -> JobResult:
        self.specs.append(spec)
        step = self.script[min(len(self.specs), len(self.script)) - 1]
        return step(spec, on_progress, should_stop)

    def overrides(self) -> list[dict[str, Any]]:
        return [dict(s.dpo_overrides) for s in self.specs]
