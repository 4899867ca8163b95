"""The provenance record of a converted base model: where it came from, and the sha256 of every file.

It lives beside the weights (``samtuner-model.json``). A second fetch or import reads it, checks
that the source is the same and that every file still has its recorded hash, and stops there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

RECORD_NAME = "samtuner-model.json"


class GgufInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The GGUF's file name.")
    sha256: str
    architecture: str = Field(description="general.architecture, e.g. 'llama'.")
    name: str = Field("", description="general.name, as the GGUF declares it.")
    license: str = Field("", description="general.license, as the GGUF declares it.")
    tensor_types: dict[str, int] = Field(description="How many tensors of each GGML type (Q4_1, F32, ...).")


class ModelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = 1
    name: str = Field(description="The model's name in the model cache.")
    source: dict[str, str] = Field(description="Where the GGUF came from (a PyPI wheel, or a local file).")
    gguf: GgufInfo
    parameters: int
    dtype: str
    files: dict[str, str] = Field(description="Every file written, relative to the model directory -> sha256.")
    converted_with: dict[str, str] = Field(description="Versions of the libraries that did the conversion.")
    converted_at: str
    convert_seconds: float


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` except the record itself."""
    return {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != RECORD_NAME
    }


def read_record(directory: Path) -> ModelRecord | None:
    """The directory's record, or None when there is none or it cannot be read (then it is rebuilt)."""
    path = directory / RECORD_NAME
    try:
        return ModelRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def write_record(directory: Path, record: ModelRecord) -> Path:
    path = directory / RECORD_NAME
    path.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def verify_files(directory: Path, record: ModelRecord) -> list[str]:
    """What differs from the record: missing files and files whose sha256 changed (empty = intact)."""
    problems = []
    for name, expected in record.files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name} has changed (sha256 differs from the record)")
    return problems
