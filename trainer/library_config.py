"""Pure converters from our config to the libraries' configs: ``to_lora_config``, ``to_dpo_config``.

Every ``training.dpo`` key is checked against the pinned TRL version's ``DPOConfig``: an unknown or
removed key is an error that names it and the valid keys, and a value of the wrong type names the
key and the type the field has. ``job_settings`` is what a job trains with (the 'auto' values
resolved, checkpoints and evaluation around them); ``validate_training_config`` builds the DPOConfig
through it for jobs of several sizes, so a config a job would refuse is refused before any job runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.config import AUTO_DPO_KEYS, Config, dpo_for_trl
from trainer.errors import TrainingConfigError

# Keys we set ourselves from other sections or per job; users set them elsewhere.
RESERVED = {
    "output_dir": "set per job",
    "seed": "use training.seed",
    "report_to": "progress is reported as events",
    "save_strategy": "use training.checkpoint_steps",
    "save_steps": "use training.checkpoint_steps",
    "save_total_limit": "checkpoints are managed by the trainer",
    "resume_from_checkpoint": "jobs resume from their own checkpoints",
    "use_cpu": "chosen from the machine",
    "disable_tqdm": "progress is reported as events",
}
# Known removals in TRL's DPO refactor, with what to use instead.
REMOVED = {
    "max_prompt_length": "removed from DPOConfig in TRL 1.x; use max_length (with truncation_mode)",
    "max_completion_length": "removed from DPOConfig in TRL 1.x; use max_length",
    "rpo_alpha": "removed from DPOConfig in TRL 1.x; use loss_type ['sigmoid', 'sft'] with loss_weights",
    "generate_during_eval": "removed from DPOConfig in TRL 1.x",
    "reference_free": "removed from DPOConfig in TRL 1.x",
    "ref_model_init_kwargs": "removed from DPOConfig in TRL 1.x",
    "use_logits_to_keep": "removed from DPOConfig in TRL 1.x",
}


@functools.cache
def dpo_field_types() -> dict[str, Any]:
    """``DPOConfig``'s init fields of the installed TRL, with their type annotations."""
    from trl import DPOConfig

    hints = typing.get_type_hints(DPOConfig)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(DPOConfig) if f.init}


@functools.cache
def dpo_loss_types() -> frozenset[str]:
    """The loss types the installed TRL documents on ``DPOConfig.loss_type`` (its field help lists them).

    TRL itself refuses an unknown one only at the first training step, after the model is loaded.
    Empty when the help text no longer lists them: then nothing is checked here.
    """
    import re

    from trl import DPOConfig

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    return frozenset(re.findall(r"`'([a-z_]+)'`", str(field.metadata.get("help", ""))))


def check_dpo_keys(dpo: Mapping[str, Any]) -> None:
    """Every key is a DPOConfig field of the installed TRL and every value has that field's type."""
    from pydantic import TypeAdapter, ValidationError

    types = dpo_field_types()
    valid = set(types)
    problems = []
    for key, value in dpo.items():
        if key in RESERVED:
            problems.append(f"training.dpo.{key}: {RESERVED[key]}")
        elif key in REMOVED and key not in valid:
            problems.append(f"training.dpo.{key}: {REMOVED[key]}")
        elif key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(
                f"training.dpo.{key}: not a DPOConfig field of the installed TRL{hint}; "
                f"valid keys: {', '.join(sorted(valid - set(RESERVED)))}"
            )
        elif value is None or (value == "auto" and key in AUTO_DPO_KEYS):
            continue  # null: TRL's default
        else:
            try:
                TypeAdapter(types[key]).validate_python(value)
            except ValidationError as exc:
                expected = getattr(types[key], "__name__", None) or str(types[key])
                problems.append(f"training.dpo.{key}: {value!r} is not a valid {expected} ({exc.errors()[0]['msg']})")
    loss_type = dpo.get("loss_type")
    known = dpo_loss_types()
    if known and isinstance(loss_type, list):
        unknown = [t for t in loss_type if t not in known]
        if unknown:
            problems.append(
                f"training.dpo.loss_type: {', '.join(map(repr, unknown))} is not a loss type of the "
                f"installed TRL; valid: {', '.join(sorted(known))}"
            )
    if problems:
        raise TrainingConfigError("; ".join(problems))


@dataclass(frozen=True)
class JobSettings:
    """What one job trains with: the resolved ``training.dpo`` and what the trainer manages around it."""

    dpo: dict[str, Any]  # no 'auto' left
    checkpoint_steps: int  # 0 = no checkpoints
    evaluate: bool  # evaluate the held-out set at the checkpoints (early stopping)
    patience: int


def job_settings(
    cfg: Config,
    train_pairs: int,
    eval_pairs: int,
    *,
    cuda: bool,
    bf16_supported: bool,
    checkpointing: bool,
    dpo_overrides: Mapping[str, Any] | None = None,
    model_params: int | None = None,
) -> JobSettings:
    """The settings trainer/job.py trains with, for a job of ``train_pairs`` pairs on this machine.

    ``eval_pairs``: the pairs early stopping evaluates (the validation split); ``model_params`` picks
    the ``auto`` profile (trainer/auto.py).
    """
    from trainer.auto import resolve_auto, steps_per_epoch

    mode = cfg.quantization.mode
    if not cuda and mode in ("4bit", "8bit"):
        raise TrainingConfigError(f"quantization.mode={mode} needs CUDA (bitsandbytes); set it to 'none' or 'auto'")
    dpo = resolve_auto(
        {**cfg.training.dpo, **(dpo_overrides or {})}, train_pairs, cuda, bf16_supported, model_params=model_params
    )
    every = cfg.training.checkpoint_steps
    checkpoint_steps = (
        0 if not checkpointing else (steps_per_epoch(train_pairs, dpo) if every == "auto" else int(every))
    )
    patience = cfg.evaluation.early_stopping_patience
    evaluate = eval_pairs > 0 and patience > 0 and checkpoint_steps > 0
    return JobSettings(dpo=dpo, checkpoint_steps=checkpoint_steps, evaluate=evaluate, patience=patience)


def checked_job_sizes(cfg: Config) -> tuple[int, ...]:
    """Training-pair counts the check builds a job's DPOConfig for: a one-pair job, the first triggered
    job, and jobs past the sizes where the 'auto' rules change (trainer/auto.py)."""
    first = max(1, round(cfg.trigger.min_new_pairs * (1.0 - cfg.training.holdout_fraction)))
    return tuple(sorted({1, first, 300, 2000}))


def validate_training_config(cfg: Config, cuda: bool | None = None, bf16_supported: bool | None = None) -> None:
    """Build every job's DPOConfig as a job would (this machine, several job sizes): raises TrainingConfigError.

    Needs no model. ``cuda``/``bf16_supported`` default to this machine's.
    """
    check_dpo_keys(cfg.training.dpo)
    if cuda is None or bf16_supported is None:
        import torch

        cuda = bool(torch.cuda.is_available()) if cuda is None else cuda
        bf16_supported = bool(cuda and torch.cuda.is_bf16_supported()) if bf16_supported is None else bf16_supported
    from infra.models import parameter_count

    output_dir = str(Path(tempfile.gettempdir()) / "samtuner-config-check")  # DPOConfig does not create it
    model_params = parameter_count(cfg.model.base)
    for pairs in checked_job_sizes(cfg):
        settings = job_settings(
            cfg,
            pairs,
            eval_pairs=1,
            cuda=cuda,
            bf16_supported=bf16_supported,
            checkpointing=True,
            model_params=model_params,
        )
        try:
            to_dpo_config(
                cfg,
                settings.dpo,
                output_dir=output_dir,
                use_cpu=not cuda,
                checkpoint_steps=settings.checkpoint_steps,
                evaluate=settings.evaluate,
                patience=settings.patience,
            )
        except TrainingConfigError as exc:
            raise TrainingConfigError(f"{exc} (a job of {pairs} training pairs on this machine)") from exc


def to_lora_config(cfg: Config) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _managed(checkpoint_steps: int, evaluate: bool, patience: int) -> dict[str, Any]:
    """The arguments the trainer manages itself: checkpoints, and evaluation at the same steps."""
    managed: dict[str, Any] = {"save_strategy": "no"}
    if checkpoint_steps > 0:
        managed = {"save_strategy": "steps", "save_steps": checkpoint_steps, "save_total_limit": 2}
    if evaluate and checkpoint_steps > 0:
        managed.update(eval_strategy="steps", eval_steps=checkpoint_steps)
        if patience > 0:
            managed.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return managed


def to_dpo_config(
    cfg: Config,
    dpo: Mapping[str, Any],
    output_dir: str,
    use_cpu: bool,
    checkpoint_steps: int = 0,
    evaluate: bool = False,
    patience: int = 0,
) -> Any:
    """TRL's DPOConfig from resolved ``dpo`` values (no 'auto' left) plus what the trainer manages itself.

    ``checkpoint_steps`` > 0 saves resumable checkpoints; with ``evaluate`` the validation set is evaluated
    at the same steps, and with ``patience`` the best checkpoint (lowest validation loss) is kept.
    """
    from trl import DPOConfig

    check_dpo_keys(dpo)
    leftover = [k for k, v in dpo.items() if v == "auto"]
    if leftover:
        raise TrainingConfigError(f"unresolved 'auto' values: {', '.join(leftover)}")
    managed = _managed(checkpoint_steps, evaluate, patience)
    try:
        return DPOConfig(
            output_dir=output_dir,
            seed=cfg.training.seed,
            report_to=[],
            use_cpu=use_cpu,
            disable_tqdm=True,
            **dpo_for_trl({**dpo, **managed}),
        )
    except (TypeError, ValueError) as exc:
        raise TrainingConfigError(f"training.dpo is not accepted by DPOConfig: {exc}") from exc


# DPO settings whose meaning is DPO's own: KTO takes them from training.kto instead.
DPO_ONLY_IN_MEANING = ("beta", "loss_type")


def to_kto_config(
    cfg: Config,
    dpo: Mapping[str, Any],
    output_dir: str,
    use_cpu: bool,
    checkpoint_steps: int = 0,
    evaluate: bool = False,
    patience: int = 0,
) -> Any:
    """TRL's KTOConfig for ``training.method: kto``.

    The settings both trainers share (learning rate, epochs, batch, accumulation, lengths, precision,
    logging) come from the resolved ``dpo`` values, so one recipe drives both; KTO's own (beta, the
    desirable/undesirable weights, the loss type) come from ``training.kto``; DPO-only keys are dropped.
    """
    from trl import KTOConfig

    check_dpo_keys(dpo)
    fields = {f.name for f in dataclasses.fields(KTOConfig) if f.init}
    shared = {k: v for k, v in dpo.items() if k in fields and k not in DPO_ONLY_IN_MEANING}
    try:
        return KTOConfig(
            output_dir=output_dir,
            seed=cfg.training.seed,
            report_to=[],
            use_cpu=use_cpu,
            disable_tqdm=True,
            **{**shared, **_managed(checkpoint_steps, evaluate, patience)},
            **cfg.training.kto.model_dump(),
        )
    except (TypeError, ValueError) as exc:
        raise TrainingConfigError(
            f"training.kto (with the shared training.dpo settings) is not accepted by KTOConfig: {exc}"
        ) from exc
