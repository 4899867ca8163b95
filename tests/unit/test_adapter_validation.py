"""The checks an adapter passes before it serves anyone, each refusing with its own reason."""

from __future__ import annotations

import pytest
import torch

from inference.errors import AdapterRejected
from inference.validate import ModuleShape, check_config, check_file_names, check_manifest, check_tensors
from schemas.events import AdapterRef, BaseModelRef

BASE = BaseModelRef(name_or_path="base", weights_sha256="b" * 64)
GOOD_CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "bias": "none"}
SHAPES = {"model.layers.0.self_attn.q_proj": ModuleShape(16, 16)}


def ref(files: dict[str, str]) -> AdapterRef:
    return AdapterRef(version=1, uri="adapters/x/1", files=files, base_model=BASE)


def reason(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(AdapterRejected) as info:
        call()
    return info.value.reason


@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({"adapter_model.safetensors": "0", "adapter_config.json": "0", "../evil.json": "0"}, "path_escape"),
        ({"adapter_model.bin": "0", "adapter_config.json": "0"}, "not_safetensors"),
        ({"adapter_model.safetensors": "0", "adapter_config.json": "0", "extra.json": "0"}, "unexpected_file"),
        ({"adapter_config.json": "0"}, "missing_file"),
    ],
)
def test_file_lists_that_are_refused(files: dict[str, str], code: str) -> None:
    assert reason(lambda: check_file_names(ref(files))) == code


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"use_dora": True}, "unsupported_config"),
        ({"modules_to_save": ["lm_head"]}, "unsupported_config"),
        ({"bias": "all"}, "unsupported_config"),
        ({"rank_pattern": {"q_proj": 8}}, "unsupported_config"),
        ({"peft_type": "IA3"}, "unsupported_config"),
        ({"r": 0}, "invalid_config"),
        ({"r": 1024}, "rank_mismatch"),
        ({"lora_alpha": float("nan")}, "invalid_config"),
        ({"target_modules": 3}, "invalid_config"),
    ],
)
def test_adapter_configs_that_are_refused(change: dict, code: str) -> None:
    assert reason(lambda: check_config({**GOOD_CONFIG, **change}, max_rank=64)) == code


def test_the_scale_follows_alpha_over_rank_or_rslora() -> None:
    assert check_config(GOOD_CONFIG, 64).scale == 2.0
    assert check_config({**GOOD_CONFIG, "use_rslora": True}, 64).scale == 4.0
    assert check_config(GOOD_CONFIG, 64).target_modules == frozenset({"q_proj"})


def tensors(a: torch.Tensor, b: torch.Tensor, module: str = "model.layers.0.self_attn.q_proj") -> dict:
    return {f"base_model.model.{module}.lora_A.weight": a, f"base_model.model.{module}.lora_B.weight": b}


@pytest.mark.parametrize(
    ("weights", "code"),
    [
        ({}, "empty_adapter"),
        ({"base_model.model.model.embed_tokens.weight": torch.zeros(2, 2)}, "unexpected_tensor"),
        ({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 16)}, "incomplete_adapter"),
        (tensors(torch.zeros(4, 16), torch.zeros(16, 4), "model.layers.9.self_attn.q_proj"), "incompatible_module"),
        (tensors(torch.zeros(2, 16), torch.zeros(16, 2)), "rank_mismatch"),
        (tensors(torch.zeros(4, 15), torch.zeros(16, 4)), "shape_mismatch"),
        (tensors(torch.zeros(4, 16, dtype=torch.int32), torch.zeros(16, 4, dtype=torch.int32)), "invalid_weights"),
        (tensors(torch.zeros(4, 16), torch.full((16, 4), float("inf"))), "non_finite"),
    ],
)
def test_tensors_that_are_refused(weights: dict, code: str) -> None:
    spec = check_config(GOOD_CONFIG, 64)
    assert reason(lambda: check_tensors(weights, spec, SHAPES)) == code


def test_good_tensors_pair_up_by_module() -> None:
    spec = check_config(GOOD_CONFIG, 64)
    (pair,) = check_tensors(tensors(torch.ones(4, 16), torch.ones(16, 4)), spec, SHAPES)
    assert pair.module == "model.layers.0.self_attn.q_proj" and pair.a.shape == (4, 16)


def test_a_manifest_must_agree_with_the_event() -> None:
    files = {"adapter_model.safetensors": "a" * 64, "adapter_config.json": "c" * 64}
    good = {"files": files, "base_model": BASE.model_dump(), "version": 1}
    check_manifest(good, ref(files))
    assert (
        reason(lambda: check_manifest({**good, "files": {**files, "adapter_config.json": "d" * 64}}, ref(files)))
        == "manifest_mismatch"
    )
    assert (
        reason(lambda: check_manifest({**good, "base_model": {"weights_sha256": "x"}}, ref(files))) == "base_mismatch"
    )
    assert reason(lambda: check_manifest([], ref(files))) == "manifest_mismatch"
