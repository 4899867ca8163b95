"""Token counting for the length checks: the configured tokenizer's fast (Rust) implementation."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("samtuner.streams")


def token_counter(name_or_path: str) -> Callable[[str], int]:
    """A function counting tokens of the tokenizer at ``name_or_path`` (no special tokens)."""
    path = Path(name_or_path).expanduser()
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(tokenizer_json))
        return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
    return _hf_counter(name_or_path)


@functools.lru_cache(maxsize=4)
def _hf_counter(name_or_path: str) -> Callable[[str], int]:
    from infra.models import load_tokenizer

    tokenizer = load_tokenizer(name_or_path)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
