"""Convert a Llama-family GGUF into a model directory that ``from_pretrained(path)`` loads.

transformers loads a GGUF dequantized (float32); we rebuild that model without its GGUF quantizer,
save safetensors, the tokenizer and its chat template, reload what we saved and check that it gives
the same logits as the GGUF model, then record the provenance (``infra/model_record.py``). The new
directory appears atomically (built beside it, renamed into place). Importing the same GGUF again
verifies the recorded hashes and returns.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.errors import ModelIntegrityError, UnsupportedModelError
from infra.gguf_workarounds import correct_special_tokens, rebuilt_without_quantizer
from infra.model_record import GgufInfo, ModelRecord, hash_tree, read_record, sha256_file, verify_files, write_record

# Architectures whose GGUF tensors transformers maps onto LlamaForCausalLM (and which we test).
SUPPORTED_ARCHITECTURES = ("llama",)
SPECIAL_TOKEN_FIELDS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "pad": "tokenizer.ggml.padding_token_id",
    "unk": "tokenizer.ggml.unknown_token_id",
}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
PROBE_TEXT = "The capital of France is Paris. 7 plus 5 is 12."

ProgressFn = Callable[[str, str], None]
"""Called with (stage, message); stages: download, extract, convert, save, verify, done."""


def no_progress(stage: str, message: str) -> None:
    pass


@dataclass(frozen=True)
class GgufHeader:
    architecture: str
    name: str
    license: str
    context_length: int
    tensor_types: dict[str, int]
    special_tokens: dict[str, str]


@dataclass(frozen=True)
class ImportedModel:
    path: Path
    record: ModelRecord
    reused: bool  # an intact earlier conversion of the same GGUF was found; nothing was written


def model_name_from(path: Path) -> str:
    """A cache directory name from a file name: 'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'smollm2-135m-instruct.q4_1'."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-._")
    return stem[:100] or "model"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-' (at most 100)")
    return name


def read_gguf_header(path: Path) -> GgufHeader:
    """The GGUF's metadata, or UnsupportedModelError naming why it cannot be converted."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise UnsupportedModelError(f"{path}: not a readable GGUF file ({exc})") from exc

    def field(key: str, default: Any = None) -> Any:
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    arch = str(field("general.architecture", ""))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: a {arch or 'unknown'!r} GGUF; only Llama-family models ({', '.join(SUPPORTED_ARCHITECTURES)}) "
            "can be imported"
        )
    tokens = field("tokenizer.ggml.tokens")
    if not tokens:
        raise UnsupportedModelError(f"{path}: the GGUF carries no tokenizer (tokenizer.ggml.tokens)")
    special: dict[str, str] = {}
    for role, key in SPECIAL_TOKEN_FIELDS.items():
        token_id = field(key)
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            special[role] = str(tokens[int(token_id)])
    if "eos" not in special:
        raise UnsupportedModelError(f"{path}: the GGUF declares no end-of-sequence token (tokenizer.ggml.eos_token_id)")
    return GgufHeader(
        architecture=arch,
        name=str(field("general.name", "")),
        license=str(field("general.license", "")),
        context_length=int(field(f"{arch}.context_length", 2048)),
        tensor_types=dict(Counter(t.tensor_type.name for t in reader.tensors)),
        special_tokens=special,
    )


def intact_conversion(out_dir: Path) -> tuple[ModelRecord | None, list[str]]:
    """The directory's record and what no longer matches it ([] = intact; no record = (None, [...]))."""
    record = read_record(out_dir)
    if record is None:
        return None, [f"{out_dir} holds no conversion record"] if out_dir.exists() else []
    return record, verify_files(out_dir, record)


def import_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    name: str,
    source: dict[str, str],
    gguf_sha256: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
) -> ImportedModel:
    """Convert ``gguf_path`` into ``out_dir`` (once); ``source`` says where the GGUF came from."""
    check_name(name)
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise UnsupportedModelError(f"{gguf_path}: no such file")
    progress("verify", f"hashing {gguf_path.name}")
    sha = sha256_file(gguf_path)
    if gguf_sha256 is not None and sha != gguf_sha256:
        raise ModelIntegrityError(f"{gguf_path}: sha256 {sha} != expected {gguf_sha256}")
    if not force:
        record, problems = intact_conversion(out_dir)
        if record is not None and record.gguf.sha256 == sha and not problems:
            progress("done", f"{out_dir} already holds this model ({len(record.files)} files verified)")
            return ImportedModel(out_dir, record, reused=True)
        if record is not None:
            why = "; ".join(problems) if problems else "it was converted from a different GGUF"
            progress("verify", f"converting again: {why}")
    header = read_gguf_header(gguf_path)
    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        parameters = _convert(gguf_path, header, partial, progress)
        record = ModelRecord(
            name=name,
            source=source,
            gguf=GgufInfo(
                file=gguf_path.name,
                sha256=sha,
                architecture=header.architecture,
                name=header.name,
                license=header.license,
                tensor_types=header.tensor_types,
            ),
            parameters=parameters,
            dtype="float32",
            files=hash_tree(partial),
            converted_with=_library_versions(),
            converted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            convert_seconds=round(time.monotonic() - started, 1),
        )
        write_record(partial, record)
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    progress("done", f"{name}: {parameters / 1e6:.1f}M parameters in {out_dir} ({record.convert_seconds:.0f} s)")
    return ImportedModel(out_dir, record, reused=False)


def _convert(gguf_path: Path, header: GgufHeader, out: Path, progress: ProgressFn) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kinds = ", ".join(f"{n} {t}" for t, n in sorted(header.tensor_types.items()))
    progress("convert", f"loading and dequantizing {sum(header.tensor_types.values())} tensors ({kinds})")
    # A directory of its own: from_pretrained(dir) must not pick up other files beside the GGUF.
    with tempfile.TemporaryDirectory(prefix="samtuner-gguf-") as holder:
        link = Path(holder) / gguf_path.name
        link.symlink_to(gguf_path.resolve())
        try:
            loaded = AutoModelForCausalLM.from_pretrained(holder, gguf_file=link.name)
            tokenizer = AutoTokenizer.from_pretrained(holder, gguf_file=link.name)
        except (ValueError, NotImplementedError, KeyError, RuntimeError, OSError) as exc:
            raise UnsupportedModelError(f"{gguf_path}: transformers cannot load this GGUF: {exc}") from exc
    loaded.eval()
    correct_special_tokens(tokenizer, header.special_tokens, header.context_length)
    parameters = sum(p.numel() for p in loaded.parameters())
    progress("save", f"writing safetensors, tokenizer and chat template to {out.name}")
    out.mkdir(parents=True)
    rebuilt_without_quantizer(loaded).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for written in out.iterdir():
        written.chmod(0o644)  # safetensors writes 0600; the model cache is shared by whoever runs samtuner here
    progress("verify", "reloading the saved model and comparing its logits with the GGUF's")
    probe = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        expected = loaded(input_ids=probe).logits
        actual = saved(input_ids=probe).logits
    diff = float((expected - actual).abs().max())
    if diff > 1e-4:
        raise ModelIntegrityError(f"the saved model's logits differ from the GGUF's by {diff:.2e} (max abs)")
    return parameters


def _library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "gguf", "torch", "safetensors")}
