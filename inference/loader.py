"""Adapter files -> validated :class:`LoRAWeights`, or AdapterRejected with a stable reason.

Every file is read once: its sha256 is checked on the very bytes that are then parsed, so a file
swapped between the check and the parse cannot slip through. Weights are read with safetensors only
(no pickle), every path is confined to the artifact root, and nothing about the adapter reaches the
model before every check passed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inference.errors import AdapterRejected
from inference.lora import LoRAWeights
from inference.validate import (
    CONFIG_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    ModuleShape,
    check_base,
    check_config,
    check_file_names,
    check_manifest,
    check_tensors,
)
from infra.artifacts import ArtifactStore
from infra.errors import PathEscapeError
from schemas.events import AdapterRef


class AdapterLoader:
    def __init__(
        self,
        store: ArtifactStore,
        base_sha256: str,
        shapes: Mapping[str, ModuleShape],
        dtypes: Mapping[str, torch.dtype],
        max_rank: int,
        max_file_bytes: int,
    ) -> None:
        self.store = store
        self.base_sha256 = base_sha256
        self.shapes = shapes
        self.dtypes = dtypes
        self.max_rank = max_rank
        self.max_file_bytes = max_file_bytes

    def load(self, user_id: str, ref: AdapterRef) -> LoRAWeights:
        check_file_names(ref)
        check_base(ref, self.base_sha256)
        self._check_directory(ref.uri)
        raw = {name: self._read_verified(ref.uri, name, sha) for name, sha in ref.files.items()}
        manifest_bytes = raw.get(MANIFEST_FILE) or self._read(ref.uri, MANIFEST_FILE)
        check_manifest(_json(manifest_bytes, MANIFEST_FILE), ref)
        spec = check_config(_json(raw[CONFIG_FILE], CONFIG_FILE), self.max_rank)
        tensors = _safetensors(raw[WEIGHTS_FILE])
        pairs = check_tensors(tensors, spec, self.shapes)
        return LoRAWeights.from_pairs(user_id, ref.version, spec, pairs, self.dtypes)

    def _check_directory(self, uri: str) -> None:
        try:
            directory = self.store.resolve(uri)
        except PathEscapeError as exc:
            raise AdapterRejected("path_escape", str(exc)) from exc
        if not directory.is_dir():
            raise AdapterRejected("missing_file", f"{uri}: no such adapter directory under the artifact root")

    def _path(self, uri: str, name: str) -> Path:
        try:
            return self.store.resolve(f"{uri}/{name}")  # resolves symlinks, then confines to the root
        except PathEscapeError as exc:
            raise AdapterRejected("path_escape", str(exc)) from exc

    def _read(self, uri: str, name: str) -> bytes:
        path = self._path(uri, name)
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                raise AdapterRejected(
                    "too_large", f"{name}: {size} bytes, more than the cache holds ({self.max_file_bytes})"
                )
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise AdapterRejected("missing_file", f"{uri}/{name}: no such file") from exc
        except IsADirectoryError as exc:
            raise AdapterRejected("missing_file", f"{uri}/{name}: is a directory") from exc
        except OSError as exc:
            raise AdapterRejected("load_error", f"{uri}/{name}: {exc}") from exc

    def _read_verified(self, uri: str, name: str, sha256: str) -> bytes:
        data = self._read(uri, name)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise AdapterRejected("checksum_mismatch", f"{uri}/{name}: sha256 {actual} != published {sha256}")
        return data


def _json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AdapterRejected("invalid_config", f"{name} is not valid JSON: {str(exc)[:200]}") from exc


def _safetensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise AdapterRejected(
            "corrupt_weights", f"{WEIGHTS_FILE} is not a readable safetensors file: {str(exc)[:200]}"
        ) from exc
