"""Loading the base model and tokenizer: the real ``from_pretrained(path_or_id)``, offline.

A local path and a model id load the same way, so a real model is a config change. Nothing is
downloaded at run time (``HF_HUB_OFFLINE`` is set unless the caller set it).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from schemas.config import ModelSettings, QuantizationSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolved_quantization(quant: QuantizationSettings) -> str:
    """'none', '4bit' or '8bit' after resolving 'auto' (4bit when CUDA is present)."""
    if quant.mode == "auto":
        return "4bit" if cuda_available() else "none"
    return quant.mode


def quantization_config(quant: QuantizationSettings) -> Any | None:
    mode = resolved_quantization(quant)
    if mode == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=getattr(torch, quant.bnb_4bit_compute_dtype),
        bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
    )


def load_tokenizer(base: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model: ModelSettings, quant: QuantizationSettings) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if model.dtype != "auto":
        kwargs["dtype"] = getattr(torch, model.dtype)
    qconfig = quantization_config(quant)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = {"": 0}
    loaded = AutoModelForCausalLM.from_pretrained(model.base, **kwargs)
    loaded.eval()
    return loaded


def weights_sha256(base: str) -> str:
    """sha256 over the base model's weight files (name and content), for lineage and validation."""
    path = Path(base).expanduser()
    if not path.is_dir():
        return "unresolved:" + hashlib.sha256(base.encode()).hexdigest()
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    stamps = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(str(path.resolve()), stamps)


@functools.lru_cache(maxsize=8)
def _hash_files(root: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        digest.update(name.encode() + b"\0")
        with (Path(root) / name).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def parameter_count(base: str) -> int | None:
    """Parameters of the base model, from its config alone (built on the meta device: no weights read).

    None when the config cannot be read (the ``auto`` training rules then use the small-model profile).
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(base)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return int(sum(p.numel() for p in model.parameters()))
    except (OSError, ValueError, KeyError):
        return None
