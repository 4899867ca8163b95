"""The artifact store confines paths to its root and verifies checksums."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.artifacts import ArtifactStore, sha256_bytes
from infra.errors import ArtifactMissing, ChecksumMismatch, PathEscapeError


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "", "a\x00b"])
def test_paths_outside_the_root_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(PathEscapeError):
        ArtifactStore(tmp_path).resolve(path)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathEscapeError):
        ArtifactStore(root).resolve("link/secret")


def test_datasets_are_content_addressed_and_verified(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    uri, sha = store.put_dataset(b"rows")
    assert uri == f"datasets/{sha}.parquet" and sha == sha256_bytes(b"rows")
    assert store.put_dataset(b"rows") == (uri, sha)
    assert store.read_verified(uri, sha) == b"rows"
    store.resolve(uri).write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch):
        store.read_verified(uri, sha)
    with pytest.raises(ArtifactMissing):
        store.read_verified("datasets/none.parquet", sha)


def test_user_ids_never_steer_paths() -> None:
    uri = ArtifactStore.adapter_uri("../../etc/passwd", 3)
    assert uri.startswith("adapters/") and ".." not in uri and uri.endswith("/3")
