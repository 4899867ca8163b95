"""The artifact store: dataset snapshots and adapters under one root, confined and checksummed.

Layout::

    {root}/datasets/{sha256}.parquet
    {root}/adapters/{user key}/{version}/adapter_model.safetensors, adapter_config.json, manifest.json

The user key is a hash of the user id (:func:`schemas.ids.user_key`), never the raw id. Every path a
reader gets comes through :meth:`ArtifactStore.resolve`, which refuses anything outside the root.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path, PurePosixPath

from infra.errors import ArtifactMissing, ChecksumMismatch, PathEscapeError
from schemas.ids import user_key

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def resolve(self, relative: str) -> Path:
        """``relative`` as a path under the root; raises PathEscapeError for anything else."""
        pure = PurePosixPath(relative)
        if not relative or pure.is_absolute() or ".." in pure.parts or "\x00" in relative:
            raise PathEscapeError(f"artifact path {relative!r} is not a plain relative path")
        path = (self.root / pure).resolve()
        if not path.is_relative_to(self.root):
            raise PathEscapeError(f"artifact path {relative!r} resolves outside {self.root}")
        return path

    def write_atomic(self, relative: str, data: bytes) -> Path:
        path = self.resolve(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def put_dataset(self, data: bytes) -> tuple[str, str]:
        """Store a snapshot by content; returns (uri, sha256). Storing the same bytes twice is a no-op."""
        digest = sha256_bytes(data)
        uri = f"datasets/{digest}.parquet"
        if not self.resolve(uri).exists():
            self.write_atomic(uri, data)
        return uri, digest

    def read_verified(self, relative: str, sha256: str) -> bytes:
        path = self.resolve(relative)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactMissing(f"{relative}: no such artifact under {self.root}") from exc
        actual = sha256_bytes(data)
        if actual != sha256:
            raise ChecksumMismatch(relative, sha256, actual)
        return data

    def verify_file(self, relative: str, sha256: str) -> Path:
        path = self.resolve(relative)
        if not path.is_file():
            raise ArtifactMissing(f"{relative}: no such artifact under {self.root}")
        actual = sha256_file(path)
        if actual != sha256:
            raise ChecksumMismatch(relative, sha256, actual)
        return path

    @staticmethod
    def adapter_uri(user_id: str, version: int) -> str:
        return f"adapters/{user_key(user_id)}/{int(version)}"
