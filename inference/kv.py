"""The running batch's KV cache: rows of different lengths, left-padded to one, joined and dropped between steps.

This is the one door to transformers' cache internals. Checked against transformers 5.17: a
``DynamicCache`` holds one ``DynamicLayer`` per decoder layer with ``keys`` / ``values`` tensors of shape
``(batch, kv_heads, length, head_dim)``, and ``update`` concatenates along the length. Rows are aligned
on the right (left padding): a padded position is masked out by the 2-D attention mask, and each row
carries its own position ids, so a row's keys and queries are those it would have alone (RoPE is applied
before caching). :func:`check_supported` refuses any other cache layout with a clear error, and
``tests/unit/test_batching.py`` fails when the layout changes (batched rows must answer like rows alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inference.errors import GenerationError


def check_supported(model: Any) -> None:
    """Raise GenerationError unless the model's cache is a plain DynamicCache of full-attention layers."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    kinds = {type(layer).__name__ for layer in cache.layers}
    if not cache.layers or kinds != {DynamicLayer.__name__}:
        raise GenerationError(
            f"batched serving needs full-attention decoder layers (DynamicLayer); this model's "
            f"cache has {sorted(kinds) or 'no layers'} (sliding windows and recurrent state are "
            "not supported)"
        )


class BatchCache:
    """The cache of the running rows, their attention mask (1 = a real token) and next position ids."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.cache: Any = None  # DynamicCache, or None while no row runs
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)

    @property
    def rows(self) -> int:
        return int(self.positions.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def join(self, cache: Any, mask: torch.Tensor, keep: Sequence[int] | None = None) -> None:
        """Append the rows ``keep`` (default all) of a prefill: ``cache`` and its 2-D ``mask`` (left padding 0)."""
        from transformers import DynamicCache

        index = torch.tensor(list(range(mask.shape[0]) if keep is None else keep), dtype=torch.long)
        if not index.numel():
            return
        mask = mask.index_select(0, index)
        new_layers = [
            (
                layer.keys.index_select(0, index.to(layer.keys.device)),
                layer.values.index_select(0, index.to(layer.values.device)),
            )
            for layer in cache.layers
        ]
        positions = mask.sum(dim=1)
        if self.cache is None:
            self.cache = DynamicCache(ddp_cache_data=new_layers, config=self.config)
            self.mask, self.positions = mask, positions
            return
        width = max(self.length, int(mask.shape[1]))
        joined = []
        for layer, (keys, values) in zip(self.cache.layers, new_layers, strict=True):
            joined.append(
                (
                    torch.cat([_pad_left(layer.keys, width), _pad_left(keys, width)]),
                    torch.cat([_pad_left(layer.values, width), _pad_left(values, width)]),
                )
            )
        self.cache = DynamicCache(ddp_cache_data=joined, config=self.config)
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self.positions = torch.cat([self.positions, positions])

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention mask including the token about to be fed, position ids of that token), per row."""
        mask = torch.cat([self.mask, torch.ones(self.rows, 1, dtype=torch.long)], dim=1)
        return mask, self.positions[:, None]

    def advanced(self) -> None:
        """Record that every row got one more token (the forward pass appended it to the cache)."""
        self.mask = torch.cat([self.mask, torch.ones(self.rows, 1, dtype=torch.long)], dim=1)
        self.positions = self.positions + 1

    def keep(self, order: Sequence[int]) -> None:
        """Keep only rows ``order`` (in that order), then drop columns that are padding in every row."""
        if not order:
            self.clear()
            return
        index = torch.tensor(list(order), dtype=torch.long)
        mask = self.mask.index_select(0, index)
        real = mask.any(dim=0).nonzero()
        start = int(real[0]) if real.numel() else 0
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[:, :, start:]
            layer.values = layer.values.index_select(0, index.to(layer.values.device))[:, :, start:]
        self.mask = mask[:, start:]
        self.positions = self.positions.index_select(0, index)

    def clear(self) -> None:
        self.cache = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, position ids) of prompts prefilled together, aligned on the right."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions
