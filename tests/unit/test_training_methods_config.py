"""One recipe drives DPO and KTO; the three-way split's options are checked against each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import Config, parse_config
from schemas.errors import ConfigError
from trainer.auto import resolve_auto
from trainer.library_config import to_kto_config


def test_kto_takes_the_shared_settings_from_the_dpo_recipe_and_its_own_from_training_kto(tmp_path: Path) -> None:
    cfg = parse_config({"training": {"method": "kto", "kto": {"beta": 0.2, "undesirable_weight": 1.5}}})
    dpo = resolve_auto({**cfg.training.dpo, "learning_rate": 5e-4, "num_train_epochs": 4}, 40, False, False)
    args = to_kto_config(
        cfg, dpo, output_dir=str(tmp_path), use_cpu=True, checkpoint_steps=5, evaluate=True, patience=3
    )
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (5e-4, 4, 8)
    assert (args.beta, args.undesirable_weight, args.desirable_weight, args.loss_type) == (0.2, 1.5, 1.0, "kto")
    assert (args.max_length, args.bf16, args.gradient_checkpointing) == (dpo["max_length"], False, False)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and args.save_steps == 5
    assert not hasattr(args, "loss_weights")  # DPO's loss mix stays DPO's


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (
            {"training": {"holdout_fraction": 0.6, "validation_fraction": 0.4}},
            ["training.holdout_fraction", "training.validation_fraction"],
        ),
        (
            {"training": {"validation_fraction": 0.0}},
            ["evaluation.early_stopping_patience", "training.validation_fraction"],
        ),
        ({"training": {"method": "ppo"}}, ["training.method"]),
    ],
)
def test_split_and_method_conflicts_name_every_field_involved(raw: dict, fields: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    for name in fields:
        assert name in str(info.value)


def test_no_validation_share_is_fine_without_early_stopping() -> None:
    cfg = parse_config({"training": {"validation_fraction": 0.0}, "evaluation": {"early_stopping_patience": 0}})
    assert cfg.training.validation_fraction == 0.0


def test_the_shipped_gate_and_split() -> None:
    cfg = Config()
    assert (cfg.training.holdout_fraction, cfg.training.validation_fraction, cfg.training.method) == (0.2, 0.1, "auto")
    assert (cfg.evaluation.min_accuracy, cfg.evaluation.min_margin, cfg.evaluation.control_min_share) == (0.8, 0.0, 0.9)
    assert len(cfg.evaluation.controls) == 30 and all(c.references for c in cfg.evaluation.controls)
    assert cfg.training.near_identical_weight == 1.0 and cfg.trigger.min_new_examples == 128
