"""The config file: defaults, unknown keys named, cross-field rules, TRL keys checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import Config, load_config, parse_config
from schemas.errors import ConfigError
from trainer.errors import TrainingConfigError
from trainer.library_config import check_dpo_keys


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAMTUNER_CONFIG", raising=False)
    assert load_config() == Config()


def test_unknown_keys_are_named_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"trigger": {"min_new_pair": 3}, "bogus": 1})
    text = str(info.value)
    assert "unknown key 'trigger.min_new_pair'" in text
    assert "min_new_pairs" in text
    assert "unknown key 'bogus'" in text


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"lora\.dropout"):
        parse_config({"lora": {"dropout": 1.5}})


def test_loss_weights_must_match_loss_types() -> None:
    with pytest.raises(ConfigError, match="loss_weights"):
        parse_config({"training": {"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}}})


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "samtuner.yaml"
    path.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match=r"samtuner\.yaml"):
        load_config(path)


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "samtuner.yaml")
    check_dpo_keys(cfg.training.dpo)


def test_removed_trl_keys_say_what_to_use_instead() -> None:
    with pytest.raises(TrainingConfigError) as info:
        check_dpo_keys({"max_prompt_length": 128, "rpo_alpha": 1.0})
    assert "max_prompt_length" in str(info.value) and "max_length" in str(info.value)
    assert "rpo_alpha" in str(info.value)


def test_unknown_trl_keys_list_the_valid_ones() -> None:
    with pytest.raises(TrainingConfigError) as info:
        check_dpo_keys({"betta": 0.1})
    assert "did you mean beta" in str(info.value)
    assert "learning_rate" in str(info.value)
