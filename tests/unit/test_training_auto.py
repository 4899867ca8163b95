"""'auto' training settings follow the data size: the measured recipe at 64 pairs, the seed's 3 epochs at scale."""

from __future__ import annotations

from trainer.auto import resolve_auto, steps_per_epoch

AUTO = {
    "num_train_epochs": "auto",
    "learning_rate": "auto",
    "per_device_train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "bf16": "auto",
    "gradient_checkpointing": "auto",
    "beta": 0.1,
}


def test_64_pairs_on_cpu_get_the_measured_recipe() -> None:
    out = resolve_auto(AUTO, 64, cuda=False, bf16_supported=False)
    assert out == {
        **AUTO,
        "num_train_epochs": 20,
        "learning_rate": 2e-3,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "bf16": False,
        "gradient_checkpointing": False,
    }
    assert steps_per_epoch(64, out) == 8


def test_many_pairs_train_fewer_epochs_with_a_larger_effective_batch() -> None:
    out = resolve_auto(AUTO, 2000, cuda=True, bf16_supported=True)
    assert out["num_train_epochs"] == 3
    assert out["per_device_train_batch_size"] * out["gradient_accumulation_steps"] == 32
    assert out["learning_rate"] == 0.004  # 2e-3 * sqrt(32 / 8)
    assert out["bf16"] is True and out["gradient_checkpointing"] is True


def test_few_pairs_shrink_the_batch() -> None:
    out = resolve_auto(AUTO, 3, cuda=False, bf16_supported=False)
    assert out["per_device_train_batch_size"] == 3 and out["gradient_accumulation_steps"] == 3


def test_explicit_values_are_kept() -> None:
    explicit = {**AUTO, "num_train_epochs": 2, "per_device_train_batch_size": 4, "learning_rate": 5e-4}
    out = resolve_auto(explicit, 500, cuda=False, bf16_supported=False)
    assert (out["num_train_epochs"], out["per_device_train_batch_size"], out["learning_rate"]) == (2, 4, 5e-4)
    assert out["gradient_accumulation_steps"] == 4  # 4 x 4 = the effective batch of 16 for 500 pairs


def test_a_pretrained_model_gets_its_own_measured_profile() -> None:
    from trainer.auto import PRETRAINED, profile_for

    assert profile_for(None).name == profile_for(2_500_000).name == "small"
    assert profile_for(134_515_008) is PRETRAINED
    out = resolve_auto(AUTO, 45, cuda=False, bf16_supported=False, model_params=134_515_008)
    assert out["learning_rate"] == PRETRAINED.base_lr and out["per_device_train_batch_size"] == 8
    assert PRETRAINED.min_epochs <= out["num_train_epochs"] <= PRETRAINED.max_epochs
    assert (
        resolve_auto(AUTO, 2000, cuda=False, bf16_supported=False, model_params=134_515_008)["num_train_epochs"]
        == PRETRAINED.min_epochs
    )
    mix = {**AUTO, "loss_type": ["sigmoid", "sft"], "loss_weights": "auto"}
    assert resolve_auto(mix, 45, False, False, model_params=134_515_008)["loss_weights"] == [1.0, 1.0]
    assert resolve_auto(mix, 45, False, False, model_params=2_500_000)["loss_weights"] == [1.0, 3.0]
    assert "loss_weights" not in resolve_auto({**mix, "loss_type": ["sigmoid"]}, 45, False, False)
    # The small model's recipe is unchanged.
    assert resolve_auto(AUTO, 64, cuda=False, bf16_supported=False, model_params=2_500_000)["num_train_epochs"] == 20
