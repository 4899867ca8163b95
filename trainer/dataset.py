"""Snapshot rows -> TRL's training records, split three ways, each pair always on the same side.

A pair's side is a hash of (seed, pair id) -> a rank in [0, 1):

* rank < ``holdout_fraction``: **held out**, for the gate only. Neither training nor the choice of
  the checkpoint sees it. Since the rank does not depend on the rest of the dataset, a pair held out
  once is held out in every later dataset it is part of: no earlier adapter of the user trained on
  the pairs a new one is judged on (same seed and fraction).
* rank < ``holdout_fraction + validation_fraction``: **validation**, for early stopping and the
  choice of the best checkpoint.
* otherwise: **train**.

With few pairs the split degrades in this order (the gate's set is never shared with another use):

* fewer than ``MIN_PAIRS_TO_VALIDATE`` (10) pairs: no validation set, so no early stopping; the job
  trains for its configured epochs and keeps the last step;
* fewer than ``MIN_PAIRS_TO_HOLD_OUT`` (5) pairs: nothing is held out either; everything trains and
  the gate, which needs ``evaluation.min_heldout_pairs``, rejects the adapter (or is off);
* a band that no rank falls in (small datasets) takes the lowest-ranked remaining pair, so a
  dataset of 5+ pairs always has one held-out pair and one of 10+ one validation pair.

Labelled examples (thumbs up/down without a correction, for KTO) are split the same way by their id.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from schemas.snapshot import row_kind
from trainer.errors import DatasetError

MIN_PAIRS_TO_HOLD_OUT = 5
MIN_PAIRS_TO_VALIDATE = 10

Row = dict[str, Any]


def _rank(pair_id: Any, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()
    return int(digest[:16], 16) / float(1 << 64)


def is_held_out(pair_id: Any, fraction: float, seed: int = 0) -> bool:
    """Whether a pair falls on the held-out side (in datasets of 5 pairs or more)."""
    return _rank(pair_id, seed) < fraction


@dataclass(frozen=True)
class Split:
    """A user's rows three ways, each list sorted by id."""

    train: list[Row]
    validation: list[Row]
    heldout: list[Row]


def _band(ranks: list[float], upper: float, start: int, min_rows: int) -> int:
    """How many of ``ranks[start:]`` (sorted) fall below ``upper``; at least one once there are ``min_rows``."""
    n = sum(1 for r in ranks[start:] if r < upper)
    if n == 0 and len(ranks) >= min_rows and upper > 0.0:
        n = 1
    return n


def split_rows(
    rows: Sequence[Row], holdout_fraction: float, validation_fraction: float = 0.0, seed: int = 0, key: str = "pair_id"
) -> Split:
    """Train / validation / held out (see the module docstring); at least one row always trains."""
    if not rows:
        return Split([], [], [])
    ordered = sorted(rows, key=lambda r: _rank(r[key], seed))
    ranks = [_rank(r[key], seed) for r in ordered]
    total = len(ordered)
    n_held = (
        0
        if total < MIN_PAIRS_TO_HOLD_OUT or holdout_fraction <= 0.0
        else min(_band(ranks, holdout_fraction, 0, MIN_PAIRS_TO_HOLD_OUT), total - 1)
    )
    n_val = (
        0
        if total < MIN_PAIRS_TO_VALIDATE or validation_fraction <= 0.0
        else min(
            _band(ranks, holdout_fraction + validation_fraction, n_held, MIN_PAIRS_TO_VALIDATE), total - n_held - 1
        )
    )

    def by_id(part: list[Row]) -> list[Row]:
        return sorted(part, key=lambda r: str(r[key]))

    return Split(
        train=by_id(ordered[n_held + n_val :]),
        validation=by_id(ordered[n_held : n_held + n_val]),
        heldout=by_id(ordered[:n_held]),
    )


def split_holdout(rows: Sequence[Row], fraction: float, seed: int = 0) -> tuple[list[Row], list[Row]]:
    """(train, held out) with no validation set: the two-way split of earlier versions."""
    if not rows:
        raise DatasetError("the dataset snapshot holds no pairs")
    split = split_rows(rows, fraction, 0.0, seed)
    return split.train, split.heldout


@dataclass(frozen=True)
class DatasetSplit:
    """A snapshot's pairs and labelled examples, each split three ways."""

    pairs: Split
    examples: Split


def split_dataset(rows: Sequence[Row], holdout_fraction: float, validation_fraction: float, seed: int) -> DatasetSplit:
    """Pairs split by pair id, labelled examples (thumbs up/down, for KTO) by example id."""
    if not rows:
        raise DatasetError("the dataset snapshot holds no pairs and no labelled examples")
    pairs = [r for r in rows if row_kind(r) == "pair"]
    examples = [r for r in rows if row_kind(r) == "example"]
    return DatasetSplit(
        split_rows(pairs, holdout_fraction, validation_fraction, seed),
        split_rows(examples, holdout_fraction, validation_fraction, seed, key="example_id"),
    )


def resolve_method(method: str, data: DatasetSplit) -> Literal["dpo", "kto"]:
    """``training.method`` with 'auto' resolved: DPO when there are pairs to train on, else KTO."""
    if method == "auto":
        return "dpo" if data.pairs.train else "kto"
    if method not in ("dpo", "kto"):
        raise DatasetError(f"unknown training.method {method!r}")
    return "dpo" if method == "dpo" else "kto"


def is_near_identical(row: Row) -> bool:
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return False
    return bool(isinstance(metadata, dict) and metadata.get("near_identical"))


def pair_weight(row: Row, near_identical_weight: float = 1.0) -> float:
    """A pair's weight in the loss: its ``training_weight``, times ``near_identical_weight`` when flagged."""
    weight = float(row.get("training_weight", 1.0) if row.get("training_weight") is not None else 1.0)
    if is_near_identical(row):
        weight *= near_identical_weight
    return max(weight, 0.0)


def to_preference_records(rows: Sequence[Row], near_identical_weight: float = 1.0) -> list[dict[str, Any]]:
    """Conversational prompt/chosen/rejected records, as TRL's DPOTrainer takes them, each with its weight.

    Pairs whose weight is 0 are left out. ``training_weight`` is relative: the weights of the records
    are scaled so their mean is 1, so a pair of weight 2 counts twice as much as one of weight 1 and
    the learning rate keeps its meaning whatever the scale of the weights.
    """
    kept = [(r, pair_weight(r, near_identical_weight)) for r in rows]
    kept = [(r, w) for r, w in kept if w > 0.0]
    mean = sum(w for _, w in kept) / len(kept) if kept else 1.0
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen_response"]}],
            "rejected": [{"role": "assistant", "content": r["rejected_response"]}],
            "training_weight": round(w / mean, 6),
        }
        for r, w in kept
    ]


def to_kto_records(
    examples: Sequence[Row], pairs: Sequence[Row] = (), near_identical_weight: float = 1.0
) -> list[dict[str, Any]]:
    """Unpaired prompt/completion/label records, as TRL's KTOTrainer takes them.

    A labelled example is one record (thumbs up = desirable); a pair is two: its chosen answer
    desirable, its rejected one undesirable (pairs of weight 0 are left out). KTO has no per-record
    weight here: ``training_weight`` only includes or excludes a pair (DPO weights the loss).
    """
    out = [_kto(r["prompt"], r["response"], bool(r["desirable"])) for r in examples]
    for r in pairs:
        if pair_weight(r, near_identical_weight) > 0.0:
            out += [_kto(r["prompt"], r["chosen_response"], True), _kto(r["prompt"], r["rejected_response"], False)]
    return out


def _kto(prompt: str, completion: str, desirable: bool) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": completion}],
        "label": desirable,
    }


def shuffle_labels(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Fault injection: labels swapped on a random half of the records (chosen/rejected, or KTO's label)."""
    rng = random.Random(seed)
    out = []
    for record in records:
        if rng.random() < 0.5:
            if "label" in record:
                record = {**record, "label": not record["label"]}
            else:
                record = {**record, "chosen": record["rejected"], "rejected": record["chosen"]}
        out.append(record)
    return out
