"""The training subprocess: ``python -m trainer.job SPEC.json RESULT.json``.

Trains one DPO LoRA adapter with TRL + PEFT on exactly the snapshot in the spec (its sha256 is
verified), writes ``adapter_model.safetensors`` and ``adapter_config.json`` to the output dir, and
prints one JSON object per line on stdout for progress. It runs in its own process so the
consumer keeps polling and a crash or OOM cannot take the worker down.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

from infra.artifacts import sha256_bytes
from schemas.config import Config
from streams.snapshot import read_snapshot
from trainer.dataset import split_holdout, to_preference_records
from trainer.errors import DatasetError, TrainerError
from trainer.spec import JobResult, JobSpec

KEEP_FILES = {"adapter_model.safetensors", "adapter_config.json"}


_protocol = sys.stdout


def _claim_stdout() -> None:
    """Keep the real stdout for our JSON lines; everything libraries print goes to stderr."""
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def emit(kind: str, **fields: Any) -> None:
    _protocol.write(json.dumps({"type": kind, **fields}) + "\n")
    _protocol.flush()


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            logs = logs or {}
            if "loss" not in logs:
                return
            elapsed = time.monotonic() - self.started
            done = max(state.global_step, 1)
            eta = elapsed / done * max(state.max_steps - state.global_step, 0)
            keep = ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "learning_rate")
            emit(
                "progress",
                step=state.global_step,
                total=state.max_steps,
                epoch=float(state.epoch or 0.0),
                loss=float(logs["loss"]),
                metrics={k: float(logs[k]) for k in keep if k in logs},
                eta_s=round(eta, 2),
            )

    return ProgressCallback()


def run(spec: JobSpec) -> JobResult:
    started = time.monotonic()
    import torch

    from infra.models import load_base_model, load_tokenizer, resolved_quantization
    from trainer.evaluate import preference_metrics
    from trainer.library_config import to_dpo_config, to_lora_config

    cfg = Config.model_validate(spec.config)
    data = Path(spec.dataset_path).read_bytes()
    if sha256_bytes(data) != spec.dataset_sha256:
        raise DatasetError(f"dataset {spec.dataset_path} does not match sha256 {spec.dataset_sha256}")
    rows = read_snapshot(data)
    train_rows, held_rows = split_holdout(rows, cfg.training.holdout_fraction, cfg.training.seed)
    records = to_preference_records(train_rows)
    if not records:
        raise DatasetError("no pair with a positive training weight is left to train on")
    emit("status", phase="loading", train_pairs=len(records), heldout_pairs=len(held_rows))

    torch.manual_seed(cfg.training.seed)
    use_cpu = not torch.cuda.is_available()
    quant = resolved_quantization(cfg.quantization)
    if use_cpu and quant != "none":
        raise TrainerError(f"quantization.mode={cfg.quantization.mode} needs CUDA (bitsandbytes); set it to 'none'")
    tokenizer = load_tokenizer(cfg.model.base)
    model = load_base_model(cfg.model, cfg.quantization)

    from datasets import Dataset
    from trl import DPOTrainer

    args = to_dpo_config(cfg, output_dir=str(Path(spec.output_dir) / "_trainer"), use_cpu=use_cpu,
                         overrides=spec.dpo_overrides)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=to_lora_config(cfg),
        callbacks=[_progress_callback()],
    )
    emit("status", phase="training")
    output = trainer.train()
    trained: Any = trainer.model
    trained.eval()
    metrics: dict[str, float] = {"train_loss": float(output.training_loss), "steps": float(output.global_step)}
    emit("status", phase="evaluating")
    metrics.update(preference_metrics(trained, tokenizer, held_rows, beta=float(args.beta),
                                      reference=trained.disable_adapter))
    out = Path(spec.output_dir)
    trained.save_pretrained(str(out), safe_serialization=True)
    for path in out.iterdir():
        if path.is_file() and path.name not in KEEP_FILES:
            path.unlink()
    _remove_tree(out / "_trainer")
    return JobResult(
        status="succeeded",
        metrics=metrics,
        train_pairs=[str(r["pair_id"]) for r in train_rows],
        heldout_pairs=[str(r["pair_id"]) for r in held_rows],
        duration_s=round(time.monotonic() - started, 3),
    )


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m trainer.job SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    _claim_stdout()
    started = time.monotonic()
    try:
        spec = JobSpec.model_validate_json(spec_path.read_text())
        result = run(spec)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = JobResult(status="failed", cause=f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__,
                           duration_s=round(time.monotonic() - started, 3))
    result_path.write_text(result.model_dump_json())
    emit("result", status=result.status)
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
