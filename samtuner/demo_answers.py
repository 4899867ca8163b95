"""SAM's original answers for the demo: the base model's own greedy answers, generated once and cached.

The cache key covers the model's weights, the prompts and the generation settings, so a changed
model or plan generates again; the answers are never committed (a run makes them).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from schemas.config import Config, default_cache_dir

BATCH = 16


def cache_key(weights_sha256: str, prompts: Sequence[str], max_new_tokens: int) -> str:
    blob = json.dumps(
        {"weights": weights_sha256, "prompts": list(prompts), "max_new_tokens": max_new_tokens, "decoding": "greedy"},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def base_answers(
    cfg: Config, prompts: Sequence[str], say: Callable[[str], None], cache_dir: Path | None = None
) -> dict[str, str]:
    """prompt -> the base model's greedy answer (the node's chat template and token limit)."""
    from infra.models import weights_sha256

    key = cache_key(weights_sha256(cfg.model.base), prompts, cfg.model.max_new_tokens)
    path = (cache_dir or default_cache_dir() / "demo-answers") / f"{key}.json"
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        say(f"SAM's original answers: {len(cached)} from the cache ({path})")
        return dict(cached)
    answers = _generate(cfg, list(prompts), say)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(answers, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return answers


def _generate(cfg: Config, prompts: list[str], say: Callable[[str], None]) -> dict[str, str]:
    from infra.models import load_base_model, load_tokenizer
    from trainer.evaluate import generate_answers

    say(
        f"SAM's original answers: the base model answers {len(prompts)} prompts (greedy, "
        f"{cfg.model.max_new_tokens} tokens at most, {BATCH} at a time)"
    )
    tokenizer = load_tokenizer(cfg.model.base)
    model = load_base_model(cfg.model, cfg.quantization)  # as the node loads it: the answers it would give
    started = time.monotonic()
    answers: list[str] = []
    for start in range(0, len(prompts), BATCH):
        answers += generate_answers(
            model, tokenizer, prompts[start : start + BATCH], cfg.model.max_new_tokens, batch_size=BATCH
        )
        done = len(answers)
        eta = (time.monotonic() - started) / done * (len(prompts) - done)
        say(f"  answered {done}/{len(prompts)} ({time.monotonic() - started:.0f}s, about {eta:.0f}s left)")
    return dict(zip(prompts, answers, strict=True))
