"""A partial training.dpo keeps the recipe in code; `config check` refuses what a job would refuse;
`config show` says where each value came from (issue 13, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from samtuner.cli import app
from schemas.config import Config, _default_dpo, load_config, parse_config
from schemas.errors import ConfigError
from trainer.errors import TrainingConfigError
from trainer.library_config import job_settings, to_dpo_config, validate_training_config

SHIPPED = Path(__file__).resolve().parents[2] / "samtuner.yaml"
# The file from the issue: only three keys of the recipe.
ISSUE_FILE = {"training": {"dpo": {"num_train_epochs": 3, "learning_rate": 0.001, "loss_weights": [1, 1]}}}


def _job_dpo_config(cfg: Config, tmp_path: Path, pairs: int = 51):  # type: ignore[no-untyped-def]
    """The DPOConfig a job of ``pairs`` training pairs on a CPU machine builds (trainer/job.py's calls)."""
    s = job_settings(cfg, pairs, 10, cuda=False, bf16_supported=False, checkpointing=True)
    return to_dpo_config(
        cfg,
        s.dpo,
        str(tmp_path / "out"),
        use_cpu=True,
        checkpoint_steps=s.checkpoint_steps,
        evaluate=s.evaluate,
        patience=s.patience,
    )


def test_a_partial_dpo_section_adds_to_the_recipe_instead_of_replacing_it(tmp_path: Path) -> None:
    cfg = parse_config(ISSUE_FILE)
    validate_training_config(cfg, cuda=False, bf16_supported=False)

    args = _job_dpo_config(cfg, tmp_path)
    assert args.loss_type == ["sigmoid", "sft"]  # from the recipe, not TRL's single sigmoid
    assert args.loss_weights == [1, 1] and args.num_train_epochs == 3 and args.learning_rate == 0.001
    assert args.logging_steps == 1  # not TRL's 500: the curve keeps its training-loss line


def test_the_defaults_live_in_code_and_the_shipped_file_does_not_restate_them() -> None:
    assert parse_config({}).training.dpo == _default_dpo()
    assert load_config(SHIPPED).training.dpo == _default_dpo()
    shipped = yaml.safe_load(SHIPPED.read_text())
    assert not shipped["training"].get("dpo")  # documented there as comments only


def test_null_means_trls_own_default(tmp_path: Path) -> None:
    import dataclasses

    from trl import DPOConfig

    trl_default = {f.name: f.default for f in dataclasses.fields(DPOConfig)}["max_length"]
    cfg = parse_config({"training": {"dpo": {"max_length": None}}})
    assert _job_dpo_config(cfg, tmp_path).max_length == trl_default != 256
    assert Config.model_validate(cfg.model_dump()).training.dpo == cfg.training.dpo  # jobs re-validate it


def test_another_loss_type_without_weights_gets_equal_weights(tmp_path: Path) -> None:
    cfg = parse_config({"training": {"dpo": {"loss_type": ["sigmoid", "sft", "ipo"]}}})
    assert "loss_weights" not in cfg.training.dpo
    assert _job_dpo_config(cfg, tmp_path).loss_weights is None


def test_weights_that_do_not_fit_the_loss_types_name_both_and_where_they_came_from() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"training": {"dpo": {"loss_weights": [1.0]}}})
    message = str(info.value)
    assert "loss_weights [1.0] has 1 entries" in message and "loss_type ['sigmoid', 'sft'] has 2" in message


def test_check_refuses_what_only_trls_dpoconfig_refuses_and_the_job_refuses_it_too(tmp_path: Path) -> None:
    cfg = parse_config({"training": {"dpo": {"lr_scheduler_type": "cosine-ish"}}})
    with pytest.raises(TrainingConfigError, match="not a valid SchedulerType") as at_check:
        validate_training_config(cfg, cuda=False, bf16_supported=False)
    assert "a job of" in str(at_check.value)
    with pytest.raises(TrainingConfigError, match="not a valid SchedulerType"):
        _job_dpo_config(cfg, tmp_path)


def test_check_refuses_quantization_that_needs_a_gpu_on_a_cpu_machine() -> None:
    cfg = parse_config({"quantization": {"mode": "4bit"}})
    with pytest.raises(TrainingConfigError, match=r"quantization\.mode=4bit needs CUDA"):
        validate_training_config(cfg, cuda=False, bf16_supported=False)


def test_check_builds_jobs_of_every_size_where_the_auto_rules_change(tmp_path: Path) -> None:
    """Explicit batch 3 with accumulation 'auto': fine for a small job; every size builds."""
    cfg = parse_config({"training": {"dpo": {"per_device_train_batch_size": 3}}})
    validate_training_config(cfg, cuda=False, bf16_supported=False)
    big = _job_dpo_config(cfg, tmp_path, pairs=2000)
    assert big.per_device_train_batch_size == 3 and big.gradient_accumulation_steps == 11  # ceil(32 / 3)


def test_overrides_merge_into_the_files_dpo_section() -> None:
    cfg = parse_config(ISSUE_FILE).with_overrides(training={"dpo": {"beta": 0.2}})
    assert (cfg.training.dpo["beta"], cfg.training.dpo["learning_rate"]) == (0.2, 0.001)
    assert cfg.training.dpo["loss_type"] == ["sigmoid", "sft"]


# -- the commands ----------------------------------------------------------------------------------


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "samtuner.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_config_check_exits_2_naming_the_key_a_job_would_refuse(tmp_path: Path) -> None:
    bad = _write(tmp_path, {"training": {"dpo": {"lr_scheduler_type": "cosine-ish"}}})
    result = CliRunner().invoke(app, ["config", "check", "-c", str(bad)])
    assert result.exit_code == 2
    assert "cosine-ish" in result.output and "config ok" not in result.output


def test_config_check_accepts_the_issues_partial_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "check", "-c", str(_write(tmp_path, ISSUE_FILE))])
    assert result.exit_code == 0, result.output
    assert "config ok" in result.output


def test_config_show_marks_file_and_default_values_and_stays_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, {**ISSUE_FILE, "evaluation": {"enabled": False}})
    result = CliRunner().invoke(app, ["config", "show", "-c", str(path)])
    assert result.exit_code == 0, result.output
    lines, section = {}, ""
    for line in result.output.splitlines():
        if line and not line.startswith(" "):
            section = line.split(":")[0]
        if "#" in line:  # leaf names repeat across sections (enabled): key them by their section
            lines[f"{section}.{line.strip().split(':')[0]}"] = line
    assert lines["training.learning_rate"].endswith("# file")
    assert lines["training.loss_type"].endswith("# default")
    assert lines["evaluation.enabled"].endswith("# file")
    assert lines["console.enabled"].endswith("# default")
    assert lines["evaluation.min_accuracy"].endswith("# default")
    shown = yaml.safe_load(result.output)
    assert shown["training"]["dpo"] == parse_config(ISSUE_FILE).training.dpo


def test_an_unknown_loss_type_is_refused_at_check_time_not_at_the_first_step() -> None:
    from trainer.library_config import dpo_loss_types

    assert {"sigmoid", "sft", "ipo"} <= dpo_loss_types()  # fails if TRL's help stops listing them
    cfg = parse_config({"training": {"dpo": {"loss_type": ["sigmoid", "sfft"], "loss_weights": [1.0, 1.0]}}})
    with pytest.raises(TrainingConfigError, match=r"'sfft' is not a loss type of the installed TRL; valid: .*sft"):
        validate_training_config(cfg, cuda=False, bf16_supported=False)
