"""Snapshot rows -> TRL's conversational preference format, with a deterministic held-out split."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from trainer.errors import DatasetError


def split_holdout(
    rows: Sequence[dict[str, Any]], fraction: float, seed: int = 0, min_train: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out): the same pairs always land on the same side, whatever the row order."""
    if not rows:
        raise DatasetError("the dataset snapshot holds no pairs")
    ordered = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r['pair_id']}".encode()).hexdigest())
    n_hold = math.floor(len(ordered) * fraction) if len(ordered) >= 5 else 0
    n_hold = min(n_hold, max(0, len(ordered) - min_train))
    held, train = ordered[:n_hold], ordered[n_hold:]
    return train, held


def to_preference_records(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversational prompt/chosen/rejected records, as TRL's DPOTrainer takes them."""
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen_response"]}],
            "rejected": [{"role": "assistant", "content": r["rejected_response"]}],
        }
        for r in rows
        if float(r.get("training_weight", 1.0)) > 0.0
    ]
