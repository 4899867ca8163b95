"""The training subprocess: ``python -m trainer.job SPEC.json RESULT.json``.

Trains one LoRA adapter with TRL + PEFT on exactly the snapshot in the spec (its sha256 is
verified): DPO on the pairs, each weighted by its ``training_weight`` (trainer/weighted.py), or KTO
on labelled examples (``training.method``). It resumes from the spec's checkpoint when there is
one, with early stopping and the choice of the checkpoint on the validation pairs. Then it measures
what the gate needs on the held-out pairs, which nothing before saw: preference accuracy and margin
of the new adapter and of what the user has now, and the answers the base model and the new adapter
give to the control prompts.
It writes ``adapter_model.safetensors`` and ``adapter_config.json`` to the output dir and prints
one JSON object per line on stdout for progress. It runs in its own process so the consumer keeps
polling, a crash or OOM cannot take the worker down, and a cancel is a signal; it exits by itself
when its parent (the worker) dies.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

from infra.artifacts import sha256_bytes
from schemas.config import Config
from schemas.snapshot import read_snapshot
from trainer.dataset import (
    DatasetSplit,
    resolve_method,
    shuffle_labels,
    split_dataset,
    to_kto_records,
    to_preference_records,
)
from trainer.errors import DatasetError, TrainerError, TrainingConfigError
from trainer.gate import ControlAnswer, check_control, control_metrics
from trainer.spec import ControlRecord, JobResult, JobSpec

KEEP_FILES = {"adapter_model.safetensors", "adapter_config.json"}
PROGRESS_KEYS = ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "learning_rate")

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


def _watch_parent(interval_s: float = 0.5) -> None:
    """Exit when the worker that started us is gone (killed workers must not leave training behind)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Timing:
    """Where the job's time goes: step starts (for the step time) and time spent in validation evaluations."""

    def __init__(self) -> None:
        self.step_starts: list[float] = []
        self.eval_s = 0.0


def _callbacks(step_delay_s: float) -> tuple[Any, Timing]:
    from transformers import TrainerCallback

    timing = Timing()

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.monotonic()
            self.first_step: int | None = None
            self.step_ended = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            timing.step_starts.append(time.perf_counter())
            if self.first_step is None:
                self.first_step = state.global_step
                self.started = time.monotonic()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            if step_delay_s:
                time.sleep(step_delay_s)  # fault injection: a slow job
            self.step_ended = time.perf_counter()

        def on_evaluate(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            # Evaluation runs right after a step ends (before any checkpoint is saved).
            timing.eval_s += time.perf_counter() - self.step_ended

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            logs = logs or {}
            if "eval_loss" in logs:
                emit(
                    "progress",
                    step=state.global_step,
                    total=state.max_steps,
                    epoch=float(state.epoch or 0.0),
                    loss=None,
                    metrics={
                        k: float(v) for k, v in logs.items() if k.startswith("eval_") and isinstance(v, int | float)
                    },
                    eta_s=None,
                )
                return
            if "loss" not in logs:
                return
            done = max(state.global_step - (self.first_step or 0), 1)
            eta = (time.monotonic() - self.started) / done * max(state.max_steps - state.global_step, 0)
            emit(
                "progress",
                step=state.global_step,
                total=state.max_steps,
                epoch=float(state.epoch or 0.0),
                loss=float(logs["loss"]),
                metrics={k: float(logs[k]) for k in PROGRESS_KEYS if k in logs},
                eta_s=round(eta, 2),
            )

    return ProgressCallback(), timing


def _injected_failure(kind: str, attempt: int) -> Exception:
    import torch

    message = f"injected by trainer.fault_injection on attempt {attempt}"
    if kind == "OutOfMemoryError":
        return torch.OutOfMemoryError(message)
    return RuntimeError(message)


def _check_parent_lora(cfg: Config, parent: Path) -> None:
    try:
        recorded = json.loads((parent / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainerError(f"the parent adapter {parent} has no readable adapter_config.json: {exc}") from exc
    wanted = {"r": cfg.lora.r, "lora_alpha": cfg.lora.alpha, "target_modules": sorted(cfg.lora.target_modules)}
    found = {
        "r": recorded.get("r"),
        "lora_alpha": recorded.get("lora_alpha"),
        "target_modules": sorted(recorded.get("target_modules") or []),
    }
    if wanted != found:
        raise TrainingConfigError(
            f"training.incremental needs the parent adapter's LoRA settings: the parent has "
            f"{found}, the config says {wanted}"
        )


def run(spec: JobSpec, notes: dict[str, Any] | None = None) -> JobResult:
    """Train and evaluate; ``notes`` gets the resolved settings early, for the result of a failed run."""
    started = time.monotonic()
    notes = notes if notes is not None else {}
    import torch

    from infra.models import load_tokenizer, parameter_count
    from trainer.library_config import job_settings, to_dpo_config, to_kto_config

    cfg = Config.model_validate(spec.config)
    faults = cfg.trainer.fault_injection
    training = cfg.training
    split, method, records, validation = _training_data(spec, cfg)

    cuda = bool(torch.cuda.is_available())
    bf16_ok = cuda and bool(torch.cuda.is_bf16_supported())
    # The same settings `samtuner config check` builds (trainer/library_config.py).
    settings = job_settings(
        cfg,
        len(records),
        len(validation),
        cuda=cuda,
        bf16_supported=bf16_ok,
        checkpointing=spec.checkpoint_dir is not None,
        dpo_overrides=spec.dpo_overrides,
        model_params=parameter_count(cfg.model.base),
    )
    dpo = settings.dpo
    notes["resolved"] = dpo
    emit(
        "status",
        phase="loading",
        method=method,
        train_pairs=len(records),
        validation_pairs=len(validation),
        heldout_pairs=len(split.pairs.heldout) + len(split.examples.heldout),
        resolved=dpo,
    )
    torch.manual_seed(training.seed)
    tokenizer = load_tokenizer(cfg.model.base)
    model, peft_config = _model_to_train(cfg, spec)
    if faults.fail_attempts >= spec.attempt:
        raise _injected_failure(faults.failure, spec.attempt)

    from datasets import Dataset
    from transformers import EarlyStoppingCallback

    # Early stopping and the best checkpoint look at the validation pairs only; the held-out ones are the gate's.
    patience, evaluate = settings.patience, settings.evaluate
    output_dir = spec.checkpoint_dir or str(Path(spec.output_dir) / "_trainer")
    to_config = to_dpo_config if method == "dpo" else to_kto_config
    args = to_config(
        cfg,
        dpo,
        output_dir=output_dir,
        use_cpu=not cuda,
        checkpoint_steps=settings.checkpoint_steps,
        evaluate=evaluate,
        patience=patience,
    )
    progress, timing = _callbacks(faults.step_delay_s)
    callbacks: list[Any] = [progress]
    if evaluate:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = _trainer_class(method)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        eval_dataset=Dataset.from_list(validation) if evaluate else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    emit("status", phase="training", resumed_from=spec.resume_from)
    loaded = time.monotonic()
    output = trainer.train(resume_from_checkpoint=spec.resume_from)
    trained_at = time.monotonic()
    trained: Any = trainer.model
    trained.eval()
    metrics = _training_metrics(output, trainer.state, timing, len(records), len(validation))

    emit("status", phase="evaluating")
    new, baseline, control = _evaluate(trained, tokenizer, cfg, spec, split, float(getattr(args, "beta", 0.1)))
    gated_at = time.monotonic()
    metrics.update(new)
    metrics.update(control_metrics(control))
    out = Path(spec.output_dir)
    trained.save_pretrained(str(out), safe_serialization=True, selected_adapters=["default"])
    _keep_only_adapter_files(out)
    # train_s includes the validation evaluations (eval_s); gate_s is the held-out and control measurements.
    metrics.update(
        load_s=round(loaded - started, 2),
        train_s=round(trained_at - loaded, 2),
        eval_s=round(timing.eval_s, 2),
        gate_s=round(gated_at - trained_at, 2),
        save_s=round(time.monotonic() - gated_at, 2),
    )
    metrics["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return JobResult(
        status="succeeded",
        metrics=metrics,
        baseline_metrics=baseline,
        control=[
            ControlRecord(
                prompt=a.prompt,
                before=a.before,
                after=a.after,
                base_correct=a.base_correct,
                adapter_correct=a.adapter_correct,
                kept=a.kept,
            )
            for a in control
        ],
        resolved=dpo,
        method=method,
        train_pairs=_ids(split.pairs.train, "pair_id"),
        validation_pairs=_ids(split.pairs.validation, "pair_id"),
        heldout_pairs=_ids(split.pairs.heldout, "pair_id"),
        train_examples=_ids(split.examples.train, "example_id"),
        validation_examples=_ids(split.examples.validation, "example_id"),
        heldout_examples=_ids(split.examples.heldout, "example_id"),
        duration_s=round(time.monotonic() - started, 3),
    )


def _training_data(spec: JobSpec, cfg: Config) -> tuple[DatasetSplit, str, list[dict[str, Any]], list[dict[str, Any]]]:
    """The verified snapshot, split; the method; the records to train on and the validation ones."""
    data = Path(spec.dataset_path).read_bytes()
    if sha256_bytes(data) != spec.dataset_sha256:
        raise DatasetError(f"dataset {spec.dataset_path} does not match sha256 {spec.dataset_sha256}")
    training = cfg.training
    split = split_dataset(read_snapshot(data), training.holdout_fraction, training.validation_fraction, training.seed)
    method = resolve_method(training.method, split)
    records, validation = _records(method, split, training.near_identical_weight)
    if not records:
        raise DatasetError(f"nothing with a positive training weight is left to train on ({method})")
    if cfg.trainer.fault_injection.shuffle_train_labels:
        records = shuffle_labels(records, training.seed)
    return split, method, records, validation


def _model_to_train(cfg: Config, spec: JobSpec) -> tuple[Any, Any]:
    """The base model and a fresh LoRA config, or the parent adapter to go on training (and no config)."""
    from infra.models import load_base_model
    from trainer.library_config import to_lora_config

    model = load_base_model(cfg.model, cfg.quantization)
    peft_config = to_lora_config(cfg)
    if spec.parent is not None:
        from peft import PeftModel

        _check_parent_lora(cfg, Path(spec.parent.path))
        model = PeftModel.from_pretrained(model, spec.parent.path, is_trainable=True)
        peft_config = None
    return model, peft_config


def _training_metrics(
    output: Any, state: Any, timing: Timing, train_pairs: int, validation_pairs: int
) -> dict[str, float]:
    """What the training run itself reports: loss, steps, early stop, step time, the best checkpoint's step."""
    step_times = [b - a for a, b in itertools.pairwise(timing.step_starts)]
    metrics: dict[str, float] = {
        "train_loss": float(output.training_loss),
        "steps": float(output.global_step),
        "max_steps": float(state.max_steps),
        "stopped_early": float(output.global_step < state.max_steps),
        "median_step_s": round(statistics.median(step_times), 5) if step_times else 0.0,
        "train_pairs": float(train_pairs),
        "validation_pairs": float(validation_pairs),
    }
    if state.best_model_checkpoint:
        metrics["best_step"] = float(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])
    return metrics


def _ids(rows: list[dict[str, Any]], key: str) -> list[str]:
    return [str(r[key]) for r in rows]


def _records(
    method: str, split: DatasetSplit, near_identical_weight: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, validation records) in the format of the method's TRL trainer."""
    if method == "dpo":
        return (
            to_preference_records(split.pairs.train, near_identical_weight),
            to_preference_records(split.pairs.validation, near_identical_weight),
        )
    return (
        to_kto_records(split.examples.train, split.pairs.train, near_identical_weight),
        to_kto_records(split.examples.validation, split.pairs.validation, near_identical_weight),
    )


def _trainer_class(method: str) -> Any:
    if method == "dpo":
        from trainer.weighted import weighted_dpo_trainer_class

        return weighted_dpo_trainer_class()
    from trl import KTOTrainer

    return KTOTrainer


def _evaluate(
    trained: Any, tokenizer: Any, cfg: Config, spec: JobSpec, split: DatasetSplit, beta: float
) -> tuple[dict[str, float], dict[str, float], list[ControlAnswer]]:
    """Held-out metrics of the new adapter and of what the user has now; control answers before and after.

    Only the held-out rows are measured: neither training nor the choice of the checkpoint saw them.
    Control answers are scored against their reference answers (trainer/gate.py).
    """
    from trainer.evaluate import example_metrics, example_scores, generate_answers, heldout_metrics, pair_logps

    ev = cfg.evaluation
    pairs, examples = split.pairs.heldout, split.examples.heldout
    labels = [bool(r["desirable"]) for r in examples]
    prompts = [c.prompt for c in ev.controls]
    tokens = ev.control_max_new_tokens
    with trained.disable_adapter():
        base = pair_logps(trained, tokenizer, pairs)
        base_examples = example_scores(trained, tokenizer, examples)
        before = generate_answers(trained, tokenizer, prompts, tokens) if prompts else []

    def measure() -> dict[str, float]:
        out = heldout_metrics(pair_logps(trained, tokenizer, pairs), base, beta)
        if examples:
            out.update(example_metrics(example_scores(trained, tokenizer, examples), base_examples, labels))
        return out

    new = measure()
    after = generate_answers(trained, tokenizer, prompts, tokens) if prompts else []
    if spec.baseline is None:
        baseline = measure_base(base, base_examples, labels, beta)
    else:
        trained.load_adapter(spec.baseline.path, adapter_name="baseline")
        trained.set_adapter("baseline")
        try:
            baseline = measure()
        finally:
            trained.set_adapter("default")
            trained.delete_adapter("baseline")
    return new, baseline, check_control(ev.controls, before, after)


def measure_base(base: Any, base_examples: list[Any], labels: list[bool], beta: float) -> dict[str, float]:
    """The base model's own held-out metrics (its implicit reward and its moves are 0)."""
    from trainer.evaluate import example_metrics, heldout_metrics

    out = heldout_metrics(base, base, beta)
    if base_examples:
        out.update(example_metrics(base_examples, base_examples, labels))
    return out


def _keep_only_adapter_files(out: Path) -> None:
    import shutil

    for path in out.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in KEEP_FILES:
            path.unlink()


def classify(exc: BaseException) -> str:
    """A stable error type; every way of running out of memory is ``OutOfMemoryError`` (it can be retried)."""
    name = type(exc).__name__
    text = str(exc)
    if (
        name == "OutOfMemoryError"
        or isinstance(exc, MemoryError)
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    ):
        return "OutOfMemoryError"
    return name


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m trainer.job SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    _claim_stdout()
    _watch_parent()
    started = time.monotonic()
    notes: dict[str, Any] = {}
    try:
        spec = JobSpec.model_validate_json(spec_path.read_text())
        result = run(spec, notes)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = JobResult(
            status="failed",
            cause=f"{type(exc).__name__}: {exc}",
            error_type=classify(exc),
            resolved=notes.get("resolved", {}),
            duration_s=round(time.monotonic() - started, 3),
        )
    result_path.write_text(result.model_dump_json())
    emit("result", status=result.status)
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
