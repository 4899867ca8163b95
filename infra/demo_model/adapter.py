"""Synthetic LoRA adapters for tests and benchmarks, published exactly as the trainer publishes one.

:func:`build_adapter` writes ``adapter_model.safetensors`` (PEFT's key layout), ``adapter_config.json``
and ``manifest.json`` under ``adapters/{user key}/{version}/`` and returns the ``AdapterPublished``
event, with random (seeded) weights strong enough that two users' answers differ. :func:`make_faulty`
derives broken adapters, one per failure kind a node must survive (:data:`FAULTS` names the reason
each kind must be refused with).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore, sha256_bytes
from infra.models import weights_sha256
from schemas.events import AdapterPublished, BaseModelRef, utc_now
from schemas.ids import adapter_event_id, derived_event_id

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def linear_shapes(model: Any, targets: Iterable[str] = DEFAULT_TARGETS) -> dict[str, tuple[int, int]]:
    """``{module name: (in_features, out_features)}`` of the model's target linear layers."""
    wanted = tuple(targets)
    return {
        name: (m.in_features, m.out_features)
        for name, m in model.named_modules()
        if name.rsplit(".", 1)[-1] in wanted and hasattr(m, "in_features")
    }


def adapter_tensors(shapes: dict[str, tuple[int, int]], rank: int, seed: int, strength: float) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (n_in, n_out) in sorted(shapes.items()):
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, n_in, generator=gen) / n_in**0.5
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(n_out, rank, generator=gen) * strength
    return tensors


def lora_config(base: str, rank: int, alpha: float, targets: Iterable[str]) -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(targets),
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "inference_mode": True,
    }


def write_adapter(
    store: ArtifactStore,
    base: str,
    user_id: str,
    version: int,
    tensors: dict[str, Any],
    config: dict[str, Any],
    base_sha256: str | None = None,
) -> AdapterPublished:
    """Write the three files like the trainer does and return the event that publishes them."""
    from safetensors.torch import save

    uri = store.adapter_uri(user_id, version)
    weights = save(tensors)
    config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    files = {"adapter_model.safetensors": sha256_bytes(weights), "adapter_config.json": sha256_bytes(config_bytes)}
    base_ref = BaseModelRef(name_or_path=base, weights_sha256=base_sha256 or weights_sha256(base))
    request_id = derived_event_id("synthetic-training-request", user_id, str(version))
    manifest = {
        "schema": 1,
        "user_id": user_id,
        "version": version,
        "request_id": str(request_id),
        "base_model": base_ref.model_dump(),
        "files": files,
        "synthetic": True,
    }
    store.write_atomic(f"{uri}/adapter_model.safetensors", weights)
    store.write_atomic(f"{uri}/adapter_config.json", config_bytes)
    store.write_atomic(f"{uri}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    now = utc_now()
    return AdapterPublished(
        event_id=adapter_event_id(user_id, version),
        occurred_at=now,
        user_id=user_id,
        correlation_id=request_id,
        version=version,
        request_id=request_id,
        uri=uri,
        files=files,
        base_model=base_ref,
        dataset_sha256="0" * 64,
        triggered_at=now,
    )


def build_adapter(
    store: ArtifactStore,
    base: str,
    model: Any,
    user_id: str,
    version: int,
    *,
    seed: int,
    rank: int = 8,
    alpha: float = 16.0,
    strength: float = 0.5,
    targets: Iterable[str] = DEFAULT_TARGETS,
    base_sha256: str | None = None,
) -> AdapterPublished:
    """A random adapter for ``model`` (seeded), written and published like a trained one."""
    targets = tuple(targets)
    tensors = adapter_tensors(linear_shapes(model, targets), rank, seed, strength)
    return write_adapter(store, base, user_id, version, tensors, lora_config(base, rank, alpha, targets), base_sha256)


# -- broken adapters ---------------------------------------------------------------------------

FAULTS: dict[str, str] = {
    "corrupt": "corrupt_weights",  # garbage bytes, published with their own (matching) sha256
    "truncated": "corrupt_weights",  # the weights file cut in half, sha256 of the cut file
    "wrong_base": "base_mismatch",  # trained on another base model
    "checksum_mismatch": "checksum_mismatch",  # the file changed after publication
    "path_escape": "path_escape",  # the uri leaves the artifact root
    "symlink_escape": "path_escape",  # a file is a symlink to outside the root
    "pickle": "not_safetensors",  # weights as a pickle file
    "non_finite": "non_finite",  # NaN in a LoRA matrix
    "wrong_shape": "shape_mismatch",  # matrices that do not fit the base's layers
    "unknown_module": "incompatible_module",  # a layer the base model does not have
    "missing_file": "missing_file",  # the weights file is gone
}


def make_faulty(
    store: ArtifactStore, good: AdapterPublished, kind: str, outside: Path | None = None
) -> AdapterPublished:
    """A broken copy of ``good`` as a new version (``good.version + 1``) of the same user."""
    from safetensors.torch import load

    version = good.version + 1
    src = store.resolve(good.uri)
    weights = (src / "adapter_model.safetensors").read_bytes()
    config = json.loads((src / "adapter_config.json").read_text())
    base = good.base_model.name_or_path

    def publish(tensors: dict[str, Any] | None = None) -> AdapterPublished:
        return write_adapter(
            store,
            base,
            good.user_id,
            version,
            tensors if tensors is not None else load(weights),
            config,
            good.base_model.weights_sha256,
        )

    if kind == "corrupt":
        garbage = bytes((b * 7 + 13) % 256 for b in weights)
        return _raw_weights(store, good, version, garbage, config)
    if kind == "truncated":
        return _raw_weights(store, good, version, weights[: len(weights) // 2], config)
    if kind == "wrong_base":
        event = publish()
        return event.model_copy(
            update={
                "base_model": event.base_model.model_copy(
                    update={"weights_sha256": "f" * 64, "name_or_path": "some/other-model"}
                )
            }
        )
    if kind == "checksum_mismatch":
        event = publish()
        path = store.resolve(f"{event.uri}/adapter_model.safetensors")
        path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)
        return event
    if kind == "path_escape":
        return publish().model_copy(update={"uri": f"../../{uuid.uuid4().hex}/adapter"})
    if kind == "symlink_escape":
        event = publish()
        target = (outside or store.root.parent) / f"outside-{uuid.uuid4().hex}.safetensors"
        target.write_bytes(weights)
        path = store.resolve(f"{event.uri}/adapter_model.safetensors")
        path.unlink()
        path.symlink_to(target)
        return event
    if kind == "pickle":
        event = publish()
        files = {
            "adapter_model.bin": event.files["adapter_model.safetensors"],
            "adapter_config.json": event.files["adapter_config.json"],
        }
        return event.model_copy(update={"files": files})
    if kind == "non_finite":
        tensors = load(weights)
        first = sorted(k for k in tensors if k.endswith("lora_B.weight"))[0]
        tensors[first][0, 0] = float("nan")
        return publish(tensors)
    if kind == "wrong_shape":
        tensors = load(weights)
        for key in list(tensors):
            if key.endswith("lora_A.weight"):
                tensors[key] = tensors[key][:, :-1].contiguous()
        return publish(tensors)
    if kind == "unknown_module":
        tensors = load(weights)
        a, b = next((tensors[k], tensors[k.replace("lora_A", "lora_B")]) for k in tensors if "lora_A" in k)
        tensors["base_model.model.model.layers.99.self_attn.q_proj.lora_A.weight"] = a.clone()
        tensors["base_model.model.model.layers.99.self_attn.q_proj.lora_B.weight"] = b.clone()
        return publish(tensors)
    if kind == "missing_file":
        event = publish()
        store.resolve(f"{event.uri}/adapter_model.safetensors").unlink()
        return event
    raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(FAULTS)}")


def _raw_weights(
    store: ArtifactStore, good: AdapterPublished, version: int, data: bytes, config: dict[str, Any]
) -> AdapterPublished:
    """Publish ``data`` as the weights file as it is (it need not parse), with its own sha256."""
    uri = store.adapter_uri(good.user_id, version)
    config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    files = {"adapter_model.safetensors": sha256_bytes(data), "adapter_config.json": sha256_bytes(config_bytes)}
    store.write_atomic(f"{uri}/adapter_model.safetensors", data)
    store.write_atomic(f"{uri}/adapter_config.json", config_bytes)
    _rewrite_manifest(store, uri, files, good)
    return good.model_copy(
        update={"event_id": adapter_event_id(good.user_id, version), "version": version, "uri": uri, "files": files}
    )


def _rewrite_manifest(
    store: ArtifactStore, uri: str, files: dict[str, str], good: AdapterPublished | None = None
) -> None:
    path = store.resolve(f"{uri}/manifest.json")
    manifest = json.loads(path.read_text()) if path.exists() else {}
    if good is not None:
        manifest.update(
            {
                "schema": 1,
                "user_id": good.user_id,
                "version": int(uri.rsplit("/", 1)[-1]),
                "base_model": good.base_model.model_dump(),
            }
        )
    manifest["files"] = files
    store.write_atomic(f"{uri}/manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
