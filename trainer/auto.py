"""``auto`` training settings, chosen per job from the number of training pairs and the machine.

The rules (documented in the README, measured on the demo model with a sign-off style):

* ``per_device_train_batch_size``: 8, or fewer when there are fewer pairs.
* ``gradient_accumulation_steps``: enough for an effective batch of 8 pairs below 256 training pairs,
  16 below 1024, 32 from there on.
* ``num_train_epochs``: about 1,280 pairs seen in all, between 3 and 20 epochs (64 pairs -> 20
  epochs: the setting measured to make a style appear; 427 pairs or more -> 3, the seed's default).
* ``learning_rate``: 2e-3 at an effective batch of 8, scaled by the square root of the effective
  batch. Measured on the ~2.5M-parameter demo model: set it explicitly for a real model.
* ``bf16``: on when CUDA is present and supports it; ``gradient_checkpointing``: on with CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_BATCH = 8
SEEN_PAIRS = 1280
MIN_EPOCHS, MAX_EPOCHS = 3, 20
BASE_LR = 2e-3


def effective_batch_target(train_pairs: int) -> int:
    if train_pairs < 256:
        return 8
    if train_pairs < 1024:
        return 16
    return 32


def resolve_auto(dpo: Mapping[str, Any], train_pairs: int, cuda: bool, bf16_supported: bool) -> dict[str, Any]:
    """``dpo`` with every ``'auto'`` value replaced; explicit values are kept as they are."""
    if train_pairs < 1:
        raise ValueError("auto settings need at least one training pair")
    out = dict(dpo)

    def is_auto(key: str) -> bool:
        return out.get(key) == "auto"

    if is_auto("per_device_train_batch_size"):
        out["per_device_train_batch_size"] = min(MAX_BATCH, train_pairs)
    batch = int(out.get("per_device_train_batch_size", MAX_BATCH))
    if is_auto("gradient_accumulation_steps"):
        out["gradient_accumulation_steps"] = max(1, math.ceil(effective_batch_target(train_pairs) / batch))
    accumulation = int(out.get("gradient_accumulation_steps", 1))
    if is_auto("num_train_epochs"):
        out["num_train_epochs"] = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(SEEN_PAIRS / train_pairs)))
    if is_auto("learning_rate"):
        out["learning_rate"] = round(BASE_LR * math.sqrt(batch * accumulation / 8), 8)
    if is_auto("bf16"):
        out["bf16"] = bool(cuda and bf16_supported)
    if is_auto("gradient_checkpointing"):
        out["gradient_checkpointing"] = bool(cuda)
    return out


def steps_per_epoch(train_pairs: int, dpo: Mapping[str, Any]) -> int:
    """Optimizer steps in one epoch once ``dpo`` is resolved."""
    batches = math.ceil(train_pairs / int(dpo.get("per_device_train_batch_size", MAX_BATCH)))
    return max(1, math.ceil(batches / int(dpo.get("gradient_accumulation_steps", 1))))
