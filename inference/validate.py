"""Checks an adapter must pass before it serves anyone. Each failure raises AdapterRejected with a stable code.

Pure checks on what the loader read (file names, the adapter config, the manifest, the tensors) and
on the base model's shapes; the loader (:mod:`inference.loader`) does the I/O around them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference.errors import AdapterRejected
from schemas.events import AdapterRef

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE)
ALLOWED_FILES = (WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE)

_TENSOR_KEY = re.compile(r"^base_model\.model\.(?P<module>[A-Za-z0-9_.]+)\.lora_(?P<part>[AB])\.weight$")

# PEFT LoRA options this node does not implement: an adapter using one is refused, never half-applied.
_MUST_BE_OFF = (
    "use_dora",
    "lora_bias",
    "fan_in_fan_out",
    "use_qalora",
    "use_bdlora",
    "layer_replication",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
    "alora_invocation_tokens",
    "arrow_config",
    "target_parameters",
    "trainable_token_indices",
    "megatron_config",
)


@dataclass(frozen=True)
class ModuleShape:
    in_features: int
    out_features: int


@dataclass(frozen=True)
class LoraSpec:
    """What the adapter config says, once checked."""

    rank: int
    alpha: float
    scale: float
    target_modules: frozenset[str] | None  # None: a regex target we do not interpret


def check_file_names(ref: AdapterRef) -> None:
    for name in ref.files:
        if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
            raise AdapterRejected("path_escape", f"file name {name!r} is not a plain name")
        if name not in ALLOWED_FILES:
            if not name.endswith((".safetensors", ".json")):
                raise AdapterRejected("not_safetensors", f"{name}: only safetensors weights (and JSON) are loaded")
            raise AdapterRejected("unexpected_file", f"{name}: an adapter has only {', '.join(ALLOWED_FILES)}")
    missing = [name for name in REQUIRED_FILES if name not in ref.files]
    if missing:
        raise AdapterRejected("missing_file", f"the event lists no {', '.join(missing)}")


def check_base(ref: AdapterRef, base_sha256: str) -> None:
    if ref.base_model.weights_sha256 != base_sha256:
        raise AdapterRejected(
            "base_mismatch",
            f"trained on {ref.base_model.name_or_path} (weights {ref.base_model.weights_sha256[:16]}...), "
            f"this node serves weights {base_sha256[:16]}...",
        )


def check_manifest(manifest: Any, ref: AdapterRef) -> None:
    if not isinstance(manifest, dict):
        raise AdapterRejected("manifest_mismatch", "manifest.json is not a JSON object")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise AdapterRejected("manifest_mismatch", "manifest.json lists no files")
    for name, sha in ref.files.items():
        if name != MANIFEST_FILE and files.get(name) != sha:
            raise AdapterRejected("manifest_mismatch", f"{name}: manifest sha256 {files.get(name)} != event {sha}")
    base = manifest.get("base_model")
    if not isinstance(base, dict) or base.get("weights_sha256") != ref.base_model.weights_sha256:
        raise AdapterRejected("base_mismatch", "the manifest's base model differs from the event's")
    if manifest.get("version") not in (None, ref.version):
        raise AdapterRejected("manifest_mismatch", f"manifest version {manifest.get('version')} != {ref.version}")


def check_config(config: Any, max_rank: int) -> LoraSpec:
    if not isinstance(config, dict):
        raise AdapterRejected("invalid_config", "adapter_config.json is not a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterRejected("unsupported_config", f"peft_type {config.get('peft_type')!r}: only LORA is served")
    enabled = [key for key in _MUST_BE_OFF if config.get(key)]
    if config.get("bias", "none") != "none":
        enabled.append(f"bias={config.get('bias')}")
    if enabled:
        raise AdapterRejected("unsupported_config", f"LoRA options this node does not serve: {', '.join(enabled)}")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterRejected("invalid_config", f"r must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise AdapterRejected("rank_mismatch", f"rank {rank} is larger than this node's max_rank {max_rank}")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise AdapterRejected("invalid_config", f"lora_alpha must be a positive number, got {alpha!r}")
    scale = float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)
    targets = config.get("target_modules")
    target_set = frozenset(targets) if isinstance(targets, list) and all(isinstance(t, str) for t in targets) else None
    if targets is not None and target_set is None and not isinstance(targets, str):
        raise AdapterRejected("invalid_config", f"target_modules must be a list or a regex, got {targets!r}")
    return LoraSpec(rank, float(alpha), scale, target_set)


@dataclass(frozen=True)
class TensorPair:
    module: str
    a: Any  # torch.Tensor (rank, in)
    b: Any  # torch.Tensor (out, rank)


def check_tensors(tensors: Mapping[str, Any], spec: LoraSpec, shapes: Mapping[str, ModuleShape]) -> list[TensorPair]:
    """Pair the A/B matrices by module and check them against the config and the base's shapes."""
    import torch

    if not tensors:
        raise AdapterRejected("empty_adapter", "the weights file holds no tensor")
    parts: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = _TENSOR_KEY.match(key)
        if match is None:
            raise AdapterRejected("unexpected_tensor", f"{key}: not a LoRA A/B weight")
        parts.setdefault(match["module"], {})[match["part"]] = tensor
    pairs = []
    for module, ab in sorted(parts.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterRejected("incomplete_adapter", f"{module}: has lora_{''.join(ab)} only")
        shape = shapes.get(module)
        if shape is None:
            raise AdapterRejected("incompatible_module", f"{module}: the base model has no such linear layer")
        if spec.target_modules is not None and module.rsplit(".", 1)[-1] not in spec.target_modules:
            raise AdapterRejected("invalid_config", f"{module}: not among target_modules {sorted(spec.target_modules)}")
        a, b = ab["A"], ab["B"]
        if not (a.is_floating_point() and b.is_floating_point()):
            raise AdapterRejected("invalid_weights", f"{module}: weights must be floating point, got {a.dtype}")
        if a.dim() != 2 or b.dim() != 2:
            raise AdapterRejected("shape_mismatch", f"{module}: A and B must be matrices")
        if a.shape[0] != spec.rank or b.shape[1] != spec.rank:
            raise AdapterRejected(
                "rank_mismatch", f"{module}: A {tuple(a.shape)} / B {tuple(b.shape)} do not have rank {spec.rank}"
            )
        if a.shape[1] != shape.in_features or b.shape[0] != shape.out_features:
            raise AdapterRejected(
                "shape_mismatch",
                f"{module}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit "
                f"the base layer ({shape.in_features} -> {shape.out_features})",
            )
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise AdapterRejected("non_finite", f"{module}: weights contain NaN or infinity")
        pairs.append(TensorPair(module, a, b))
    return pairs
