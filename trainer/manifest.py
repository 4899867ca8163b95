"""Adapter manifests (lineage) and the atomic publication of an adapter directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore, sha256_file
from infra.errors import ArtifactError, ChecksumMismatch

MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def config_sha256(config: dict[str, Any]) -> str:
    """Hash of the parts of the config that shape an adapter."""
    shaping = {k: config.get(k) for k in ("model", "lora", "quantization", "training")}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class PublishedAdapter:
    uri: str
    files: dict[str, str]
    manifest: dict[str, Any]


def publish_adapter_dir(
    store: ArtifactStore,
    staging: Path,
    user_id: str,
    version: int,
    lineage: dict[str, Any],
) -> PublishedAdapter:
    """Checksum the staged files, write the manifest, and move the directory into place atomically.

    Publishing the same request again keeps the directory that is already there (first wins), so a
    re-run job publishes the same files.
    """
    uri = store.adapter_uri(user_id, version)
    final = store.resolve(uri)
    if (final / MANIFEST).exists():
        existing = read_manifest(store, uri, verify=False)
        if existing.get("request_id") == lineage.get("request_id"):
            shutil.rmtree(staging, ignore_errors=True)
            return PublishedAdapter(uri, existing["files"], existing)
        raise ArtifactError(f"{uri} already holds another job's adapter ({existing.get('request_id')})")
    missing = [name for name in ADAPTER_FILES if not (staging / name).is_file()]
    if missing:
        raise ArtifactError(f"the training job wrote no {', '.join(missing)}")
    files = {name: sha256_file(staging / name) for name in ADAPTER_FILES}
    manifest = {
        "schema": 1,
        "user_id": user_id,
        "version": version,
        **lineage,
        "files": files,
        "libraries": library_versions(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)
    return PublishedAdapter(uri, files, manifest)


def read_manifest(store: ArtifactStore, uri: str, verify: bool = True) -> dict[str, Any]:
    """The manifest of an adapter directory. Every file it lists is checked against its sha256
    (``verify=False`` skips that, for listings), and it must list the adapter's files."""
    directory = store.resolve(uri)
    try:
        manifest: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{uri}: no manifest") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{uri}: manifest is not JSON: {exc}") from exc
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in ADAPTER_FILES):
        raise ArtifactError(f"{uri}: the manifest does not list {', '.join(ADAPTER_FILES)}")
    if verify:
        for name, expected in files.items():
            path = store.resolve(f"{uri}/{name}")
            if not path.is_file():
                raise ArtifactError(f"{uri}/{name}: listed in the manifest but missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumMismatch(f"{uri}/{name}", expected, actual)
    return manifest


def published_for(store: ArtifactStore, user_id: str, version: int, request_id: str) -> dict[str, Any] | None:
    """The verified manifest of ``request_id``'s adapter if it is already in place (a resumed job)."""
    uri = store.adapter_uri(user_id, version)
    if not (store.resolve(uri) / MANIFEST).is_file():
        return None
    manifest = read_manifest(store, uri)
    return manifest if manifest.get("request_id") == request_id else None
