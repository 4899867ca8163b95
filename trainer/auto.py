"""``auto`` training settings, chosen per job from the number of training pairs, the model and the machine.

Two profiles, by the base model's parameter count (``infra.models.parameter_count``, read from its
config; unknown counts as small). The rules are documented in the README ("auto" values):

* **small** (< 20M parameters: the project's own demo and test models, pre-trained from scratch on
  a templated corpus). Measured on the ~2.5M-parameter demo model with a sign-off style: about
  1,280 pairs seen in all, between 3 and 20 epochs (64 pairs -> 20 epochs, the setting measured to
  make a style appear; 427 pairs or more -> 3, the seed's default); learning rate 2e-3 at an
  effective batch of 8; ``loss_weights`` [1, 3] (sigmoid, sft).
* **pretrained** (>= 20M parameters: a real instruct model). Measured on SmolLM2-135M-Instruct
  (``make bench-quality``): a real model learns the style in a few epochs and its own learning rate
  matters more than more epochs (at 5e-4 only 29% of the unseen answers carried the sign-off, at
  1e-3 all of them); about 120 pairs seen in all, between 3 and 5 epochs (40 training pairs -> 3);
  learning rate 1e-3 at an effective batch of 8; ``loss_weights`` [1, 1].

In both, whatever the profile:

* ``per_device_train_batch_size``: 8, or fewer when there are fewer pairs.
* ``gradient_accumulation_steps``: enough for an effective batch of 8 pairs below 256 training pairs,
  16 below 1024, 32 from there on.
* ``learning_rate``: the profile's rate scaled by the square root of (effective batch / 8).
* ``bf16``: on when CUDA is present and supports it; ``gradient_checkpointing``: on with CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_BATCH = 8
PRETRAINED_FROM_PARAMS = 20_000_000


@dataclass(frozen=True)
class Profile:
    name: str
    base_lr: float  # at an effective batch of 8
    seen_pairs: int  # epochs = ceil(seen_pairs / training pairs), clipped to [min_epochs, max_epochs]
    min_epochs: int
    max_epochs: int
    sft_weight: float  # loss_weights auto with loss_type [sigmoid, sft] = [1, sft_weight]


SMALL = Profile("small", base_lr=2e-3, seen_pairs=1280, min_epochs=3, max_epochs=20, sft_weight=3.0)
PRETRAINED = Profile("pretrained", base_lr=1e-3, seen_pairs=120, min_epochs=3, max_epochs=5, sft_weight=1.0)


def profile_for(model_params: int | None) -> Profile:
    return PRETRAINED if model_params is not None and model_params >= PRETRAINED_FROM_PARAMS else SMALL


def effective_batch_target(train_pairs: int) -> int:
    if train_pairs < 256:
        return 8
    if train_pairs < 1024:
        return 16
    return 32


def resolve_auto(
    dpo: Mapping[str, Any], train_pairs: int, cuda: bool, bf16_supported: bool, model_params: int | None = None
) -> dict[str, Any]:
    """``dpo`` with every ``'auto'`` value replaced; explicit values are kept as they are."""
    if train_pairs < 1:
        raise ValueError("auto settings need at least one training pair")
    profile = profile_for(model_params)
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
        epochs = math.ceil(profile.seen_pairs / train_pairs)
        out["num_train_epochs"] = min(profile.max_epochs, max(profile.min_epochs, epochs))
    if is_auto("learning_rate"):
        out["learning_rate"] = round(profile.base_lr * math.sqrt(batch * accumulation / 8), 8)
    if is_auto("bf16"):
        out["bf16"] = bool(cuda and bf16_supported)
    if is_auto("gradient_checkpointing"):
        out["gradient_checkpointing"] = bool(cuda)
    if is_auto("loss_weights"):
        loss_types = out.get("loss_type")
        if loss_types == ["sigmoid", "sft"]:
            out["loss_weights"] = [1.0, profile.sft_weight]
        else:  # another mix: TRL's equal weights
            out.pop("loss_weights")
    return out


def steps_per_epoch(train_pairs: int, dpo: Mapping[str, Any]) -> int:
    """Optimizer steps in one epoch once ``dpo`` is resolved."""
    batches = math.ceil(train_pairs / int(dpo.get("per_device_train_batch_size", MAX_BATCH)))
    return max(1, math.ceil(batches / int(dpo.get("gradient_accumulation_steps", 1))))
