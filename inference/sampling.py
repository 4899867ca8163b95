"""The next token of each row: greedy, or sampled with the row's own temperature and top-p (as transformers does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature is None or self.temperature <= 0


def next_tokens(
    logits: torch.Tensor,
    rows: Sequence[Sampling],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """``logits``: (rows, vocab) of each row's last position; returns one token id per row."""
    chosen = logits.argmax(dim=-1).tolist()
    for i, params in enumerate(rows):
        if not params.greedy:
            chosen[i] = _sample(logits[i], params, generators[i])
    return [int(t) for t in chosen]


def _sample(logits: torch.Tensor, params: Sampling, generator: torch.Generator | None) -> int:
    scores = logits.float() / float(params.temperature or 1.0)
    if params.top_p is not None and params.top_p < 1.0:
        ordered, index = torch.sort(scores, descending=False)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - params.top_p)
        drop[-1] = False  # keep at least the most likely token
        scores = scores.scatter(0, index[drop], float("-inf"))
    probs = scores.softmax(dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())
