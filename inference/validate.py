"""Checks an adapter must pass before it is loaded. Each failure has a stable reason code."""

from __future__ import annotations

from pathlib import Path

from inference.errors import AdapterRejected
from infra.artifacts import ArtifactStore
from infra.errors import ArtifactMissing, ChecksumMismatch, PathEscapeError
from schemas.events import AdapterPublished

REQUIRED_FILES = ("adapter_model.safetensors", "adapter_config.json")
ALLOWED_SUFFIXES = (".safetensors", ".json")


def validate_files(store: ArtifactStore, event: AdapterPublished) -> Path:
    """The adapter directory, once every file is under the root, safetensors-only and matches its sha256."""
    try:
        directory = store.resolve(event.uri)
    except PathEscapeError as exc:
        raise AdapterRejected("path_escape", str(exc)) from exc
    missing = [name for name in REQUIRED_FILES if name not in event.files]
    if missing:
        raise AdapterRejected("missing_file", f"the event lists no {', '.join(missing)}")
    for name, sha in event.files.items():
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise AdapterRejected("path_escape", f"file name {name!r} is not a plain name")
        if not name.endswith(ALLOWED_SUFFIXES):
            raise AdapterRejected("not_safetensors", f"{name}: only safetensors weights and JSON are loaded")
        try:
            store.verify_file(f"{event.uri}/{name}", sha)
        except PathEscapeError as exc:
            raise AdapterRejected("path_escape", str(exc)) from exc
        except ArtifactMissing as exc:
            raise AdapterRejected("missing_file", str(exc)) from exc
        except ChecksumMismatch as exc:
            raise AdapterRejected("checksum_mismatch", str(exc)) from exc
    return directory
