"""Snapshot rows -> TRL's conversational preference format, with a stable held-out split.

A pair is held out when a hash of (seed, pair id) falls below the held-out fraction, so a pair
stays on the same side in every dataset it is part of. That keeps the gate fair: the user's
previous adapter never trained on a pair that the next job holds out (same seed and fraction).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from trainer.errors import DatasetError

MIN_PAIRS_TO_HOLD_OUT = 5


def _rank(pair_id: Any, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()
    return int(digest[:16], 16) / float(1 << 64)


def is_held_out(pair_id: Any, fraction: float, seed: int = 0) -> bool:
    """Whether a pair falls on the held-out side (in datasets of 5 pairs or more)."""
    return _rank(pair_id, seed) < fraction


def split_holdout(
    rows: Sequence[dict[str, Any]], fraction: float, seed: int = 0, min_train: int = 1
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out), each sorted by pair id. Fewer than 5 pairs are all trained on.

    When no pair's hash falls below ``fraction`` (small datasets), the lowest-ranked pair is held out.
    """
    if not rows:
        raise DatasetError("the dataset snapshot holds no pairs")
    ordered = sorted(rows, key=lambda r: _rank(r["pair_id"], seed))
    if len(ordered) < MIN_PAIRS_TO_HOLD_OUT or fraction <= 0.0:
        return sorted(ordered, key=lambda r: str(r["pair_id"])), []
    n_hold = sum(1 for r in ordered if _rank(r["pair_id"], seed) < fraction) or 1
    n_hold = min(n_hold, max(0, len(ordered) - min_train))
    held, train = ordered[:n_hold], ordered[n_hold:]
    return sorted(train, key=lambda r: str(r["pair_id"])), sorted(held, key=lambda r: str(r["pair_id"]))


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


def shuffle_labels(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Fault injection: chosen and rejected swapped on a random half of the records."""
    rng = random.Random(seed)
    out = []
    for record in records:
        if rng.random() < 0.5:
            record = {**record, "chosen": record["rejected"], "rejected": record["chosen"]}
        out.append(record)
    return out
