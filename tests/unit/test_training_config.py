"""Training configuration: every error names the field; TRL keys and types checked against the pinned TRL."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import Config, parse_config
from schemas.errors import ConfigError
from trainer.errors import TrainingConfigError
from trainer.library_config import check_dpo_keys, to_dpo_config, validate_training_config


def test_an_unknown_key_in_the_evaluation_section_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"evaluation": {"min_acuracy": 0.7}})
    assert "unknown key 'evaluation.min_acuracy'" in str(info.value) and "min_accuracy" in str(info.value)


@pytest.mark.parametrize("key", ["max_prompt_length", "rpo_alpha", "max_completion_length", "reference_free"])
def test_keys_trl_removed_are_errors_that_name_the_key(key: str) -> None:
    with pytest.raises(TrainingConfigError, match=f"training.dpo.{key}: removed from DPOConfig"):
        check_dpo_keys({key: 1})


def test_a_value_of_the_wrong_type_names_the_key() -> None:
    with pytest.raises(TrainingConfigError, match=r"training\.dpo\.beta: 'high' is not a valid float"):
        validate_training_config(parse_config({"training": {"dpo": {"beta": "high"}}}))


def test_keys_the_trainer_sets_itself_say_where_to_set_them() -> None:
    with pytest.raises(TrainingConfigError, match=r"training\.dpo\.save_steps: use training\.checkpoint_steps"):
        check_dpo_keys({"save_steps": 10})


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"training": {"dpo": {"bf16": True, "fp16": True}}}, ["training.dpo.bf16", "training.dpo.fp16"]),
        ({"training": {"dpo": {"beta": "auto"}}}, ["training.dpo.beta"]),
        ({"training": {"holdout_fraction": 0.0}}, ["evaluation.enabled", "training.holdout_fraction"]),
        ({"training": {"checkpoint_steps": 0}}, ["evaluation.early_stopping_patience", "training.checkpoint_steps"]),
        (
            {"training": {"dpo": {"eval_strategy": "epoch"}}},
            ["training.dpo.eval_strategy", "evaluation.early_stopping_patience"],
        ),
        ({"training": {"checkpoint_steps": -3}}, ["training.checkpoint_steps"]),
    ],
)
def test_conflicting_options_name_every_field_involved(raw: dict, fields: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    for name in fields:
        assert name in str(info.value)


def test_the_conflicts_go_away_when_the_other_side_allows_it() -> None:
    cfg = parse_config(
        {
            "training": {"holdout_fraction": 0.0, "checkpoint_steps": 0},
            "evaluation": {"enabled": False, "early_stopping_patience": 0},
        }
    )
    validate_training_config(cfg)


def test_defaults_follow_the_seed_and_the_measurements() -> None:
    cfg = Config()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.1)
    assert cfg.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert cfg.training.dpo["beta"] == 0.1 and cfg.training.dpo["num_train_epochs"] == "auto"
    validate_training_config(cfg)


def test_unresolved_auto_values_never_reach_trl(tmp_path: Path) -> None:
    cfg = Config()
    with pytest.raises(TrainingConfigError, match="unresolved 'auto'"):
        to_dpo_config(cfg, cfg.training.dpo, str(tmp_path), use_cpu=True)


def test_dpo_config_gets_checkpoints_and_early_stopping(tmp_path: Path) -> None:
    cfg = Config()
    dpo = {
        **cfg.training.dpo,
        "learning_rate": 1e-3,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "bf16": False,
        "gradient_checkpointing": False,
        "loss_weights": [1.0, 3.0],
    }
    args = to_dpo_config(cfg, dpo, str(tmp_path), use_cpu=True, checkpoint_steps=5, evaluate=True, patience=2)
    assert (args.save_steps, args.eval_steps, args.load_best_model_at_end) == (5, 5, True)
    assert args.metric_for_best_model == "eval_loss" and args.greater_is_better is False
    assert args.loss_type == ["sigmoid", "sft"] and args.learning_rate == 1e-3
