"""Pure converters from our config to the libraries' configs: ``to_lora_config``, ``to_dpo_config``.

Every ``training.dpo`` key is checked against the pinned TRL version's ``DPOConfig``: an unknown or
removed key is an error that names it and the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from schemas.config import Config
from trainer.errors import TrainingConfigError

# Keys we set ourselves from other sections or the job; users set them elsewhere.
RESERVED = {
    "output_dir": "set per job",
    "seed": "use training.seed",
    "report_to": "progress is reported as events",
    "save_strategy": "checkpoints are managed by the trainer",
    "use_cpu": "chosen from the machine",
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


def dpo_fields() -> set[str]:
    from trl import DPOConfig

    return {f.name for f in dataclasses.fields(DPOConfig) if f.init}


def check_dpo_keys(dpo: dict[str, Any]) -> None:
    valid = dpo_fields()
    problems = []
    for key in dpo:
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
    if problems:
        raise TrainingConfigError("; ".join(problems))


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


def to_dpo_config(cfg: Config, output_dir: str, use_cpu: bool, overrides: dict[str, Any] | None = None) -> Any:
    from trl import DPOConfig

    values = {**cfg.training.dpo, **(overrides or {})}
    check_dpo_keys(values)
    try:
        return DPOConfig(
            output_dir=output_dir,
            seed=cfg.training.seed,
            report_to=[],
            save_strategy="no",
            use_cpu=use_cpu,
            disable_tqdm=True,
            **values,
        )
    except (TypeError, ValueError) as exc:
        raise TrainingConfigError(f"training.dpo is not accepted by DPOConfig: {exc}") from exc
