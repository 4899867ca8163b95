"""The three-way split is stable per pair: the gate judges on pairs neither training nor checkpoint choice saw."""

from __future__ import annotations

import uuid

import pytest

from trainer.dataset import (
    resolve_method,
    shuffle_labels,
    split_dataset,
    split_holdout,
    split_rows,
    to_kto_records,
    to_preference_records,
)
from trainer.errors import DatasetError
from trainer.local import pair_rows


def rows(n: int, start: int = 0) -> list[dict]:
    return pair_rows("alice", [(f"Q{i}?", f"A{i}. Hope this helps!", f"A{i}.") for i in range(start, start + n)])


def ids(rs: list[dict]) -> set[str]:
    return {r["pair_id"] for r in rs}


def test_a_pair_stays_on_its_side_when_the_dataset_grows() -> None:
    first = split_rows(rows(64), 0.2, 0.1)
    second = split_rows(rows(64) + rows(64, start=64), 0.2, 0.1)
    assert ids(first.heldout) <= ids(second.heldout)
    assert not ids(second.heldout) & ids(first.train)  # v1 never trained on what v2 is judged on
    assert not ids(second.heldout) & ids(first.validation)  # ... nor chose its checkpoint on it
    assert 0.1 < len(second.heldout) / 128 < 0.3 and 0.03 < len(second.validation) / 128 < 0.2


def test_the_three_sides_are_disjoint_and_cover_the_dataset() -> None:
    split = split_rows(rows(80), 0.2, 0.1)
    sides = [ids(split.train), ids(split.validation), ids(split.heldout)]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sides[0] | sides[1] | sides[2] == ids(rows(80))


def test_the_split_ignores_row_order() -> None:
    data = rows(40)
    assert split_rows(data, 0.2, 0.1) == split_rows(list(reversed(data)), 0.2, 0.1)


def test_with_few_pairs_the_split_degrades_validation_first_then_the_held_out_set() -> None:
    nine = split_rows(rows(9), 0.2, 0.1)
    assert nine.validation == [] and len(nine.heldout) >= 1  # no early stopping below 10 pairs
    assert len(split_rows(rows(10), 0.2, 0.1).validation) >= 1
    four = split_rows(rows(4), 0.2, 0.1)
    assert four.heldout == [] and four.validation == [] and len(four.train) == 4  # nothing to judge on
    assert len(split_rows(rows(1), 0.9, 0.09).train) == 1  # at least one pair always trains
    with pytest.raises(DatasetError):
        split_holdout([], 0.2)
    with pytest.raises(DatasetError):
        split_dataset([], 0.2, 0.1, 0)


def test_the_two_way_split_is_the_three_way_split_without_validation() -> None:
    data = rows(64)
    train, held = split_holdout(data, 0.2)
    split = split_rows(data, 0.2, 0.0)
    assert (train, held) == (split.train, split.heldout)


def test_training_weights_reach_the_records_relative_to_their_mean() -> None:
    data = rows(3)
    for row, weight in zip(data, (0.1, 5.0, 1.0), strict=True):
        row["training_weight"] = weight
    records = to_preference_records(data)
    assert [r["training_weight"] for r in records] == pytest.approx(
        [0.1 / 2.0333, 5.0 / 2.0333, 1.0 / 2.0333], rel=1e-3
    )
    assert sum(r["training_weight"] for r in records) == pytest.approx(3.0)


def test_pairs_with_zero_weight_are_not_trained_on() -> None:
    data = rows(3)
    data[1]["training_weight"] = 0.0
    assert [r["prompt"][0]["content"] for r in to_preference_records(data)] == ["Q0?", "Q2?"]


def test_near_identical_pairs_get_the_configured_weight() -> None:
    data = rows(2)
    data[0]["metadata"] = '{"near_identical": true, "similarity": 0.95}'  # as read back from a snapshot
    assert [r["training_weight"] for r in to_preference_records(data, near_identical_weight=1.0)] == [1.0, 1.0]
    half = [r["training_weight"] for r in to_preference_records(data, near_identical_weight=0.5)]
    assert half == pytest.approx([0.5 / 0.75, 1.0 / 0.75])
    assert len(to_preference_records(data, near_identical_weight=0.0)) == 1


def test_shuffled_labels_swap_about_half_of_the_pairs() -> None:
    records = to_preference_records(rows(100))
    swapped = sum(r["chosen"] != s["chosen"] for r, s in zip(records, shuffle_labels(records, 0), strict=True))
    assert 30 < swapped < 70


def examples(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "kind": "example",
            "example_id": str(uuid.UUID(int=i + 1)),
            "prompt": f"Q{i}?",
            "response": f"A{i}." if i % 2 else f"A{i}. Hope this helps!",
            "desirable": bool(i % 2 == 0),
        }
        for i in range(start, start + n)
    ]


def test_a_thumbs_only_user_is_trained_with_kto_on_the_examples() -> None:
    split = split_dataset(examples(40), 0.2, 0.1, 0)
    assert split.pairs.train == [] and len(split.examples.heldout) >= 4 and split.examples.validation
    assert resolve_method("auto", split) == "kto"
    assert resolve_method("auto", split_dataset(rows(10) + examples(40), 0.2, 0.1, 0)) == "dpo"
    assert resolve_method("kto", split_dataset(rows(10), 0.2, 0.1, 0)) == "kto"
    records = to_kto_records(split.examples.train)
    assert {r["label"] for r in records} == {True, False}
    assert records[0]["completion"][0]["role"] == "assistant"


def test_kto_unrolls_each_pair_into_a_desirable_and_an_undesirable_answer() -> None:
    (pair,) = rows(1)
    records = to_kto_records([], [pair])
    assert [(r["completion"][0]["content"], r["label"]) for r in records] == [
        ("A0. Hope this helps!", True),
        ("A0.", False),
    ]
    assert {r["label"] for r in shuffle_labels(to_kto_records([], rows(50)), 0)} == {True, False}
