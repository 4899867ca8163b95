"""The base model a node serves, built once outside the node and passed in.

``load_served_base`` loads the configured model and tokenizer (``from_pretrained``), freezes the
model for serving and wraps it in the LoRA runtime that applies each user's adapter;
``served_base`` does the same for a model already in memory (tests, benchmarks).
``configure_torch`` holds the process-wide settings (torch's thread count, transformers' log level):
a process that serves calls it once at start (``inference.service.start_node``), not a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference.lora import LoRARuntime
from schemas.config import Config


@dataclass(frozen=True)
class ServedBase:
    model: Any
    tokenizer: Any
    sha256: str  # of the base weights: an adapter must have been trained on exactly these
    runtime: LoRARuntime


def configure_torch(cfg: Config) -> None:
    """Process-wide: transformers logs errors only; torch uses ``inference.torch_threads`` threads."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if cfg.inference.torch_threads is not None:
        torch.set_num_threads(cfg.inference.torch_threads)


def served_base(cfg: Config, model: Any, tokenizer: Any, sha256: str) -> ServedBase:
    """``model`` frozen for serving, with the LoRA runtime sized by ``cfg.inference``."""
    model.requires_grad_(False)
    model.eval()
    serving = cfg.inference
    runtime = LoRARuntime(
        model, serving.lora_serving, int(serving.merge_scratch_mb * 2**20), max_rows=serving.max_batch_size
    )
    return ServedBase(model, tokenizer, sha256, runtime)


def load_served_base(cfg: Config, model: Any | None = None) -> ServedBase:
    """The configured base (``cfg.model.base``, quantized per ``cfg.quantization``), or ``model`` with
    the configured tokenizer and weights hash."""
    from infra.models import load_base_model, load_tokenizer, weights_sha256

    tokenizer = load_tokenizer(cfg.model.base)
    return served_base(
        cfg, model or load_base_model(cfg.model, cfg.quantization), tokenizer, weights_sha256(cfg.model.base)
    )
