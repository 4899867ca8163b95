"""Adapter manifests: lineage and checksums, verified whenever they are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.artifacts import ArtifactStore
from infra.errors import ArtifactError, ChecksumMismatch
from trainer.manifest import publish_adapter_dir, published_for, read_manifest


def staged(tmp_path: Path, name: str = "stage") -> Path:
    stage = tmp_path / name
    stage.mkdir()
    (stage / "adapter_model.safetensors").write_bytes(b"weights")
    (stage / "adapter_config.json").write_text("{}")
    return stage


def test_a_published_adapter_records_its_lineage_and_checksums(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    published = publish_adapter_dir(store, staged(tmp_path), "alice", 1, {"request_id": "r1", "pair_ids": {}})
    manifest = read_manifest(store, published.uri)
    assert manifest["files"] == published.files and manifest["request_id"] == "r1"
    assert published_for(store, "alice", 1, "r1") == manifest
    assert published_for(store, "alice", 1, "r2") is None


def test_a_changed_file_fails_verification_on_read(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    published = publish_adapter_dir(store, staged(tmp_path), "alice", 1, {"request_id": "r1"})
    (store.resolve(published.uri) / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch):
        read_manifest(store, published.uri)
    assert read_manifest(store, published.uri, verify=False)["request_id"] == "r1"


def test_a_missing_file_fails_verification_on_read(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    published = publish_adapter_dir(store, staged(tmp_path), "alice", 1, {"request_id": "r1"})
    (store.resolve(published.uri) / "adapter_config.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        read_manifest(store, published.uri)


def test_first_publication_wins(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    first = publish_adapter_dir(store, staged(tmp_path, "a"), "alice", 1, {"request_id": "r1"})
    again = publish_adapter_dir(store, staged(tmp_path, "b"), "alice", 1, {"request_id": "r1"})
    assert again.files == first.files
    with pytest.raises(ArtifactError, match="another job"):
        publish_adapter_dir(store, staged(tmp_path, "c"), "alice", 1, {"request_id": "r2"})
