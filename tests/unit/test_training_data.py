"""The held-out split is stable per pair, so the gate compares adapters on pairs neither trained on."""

from __future__ import annotations

import pytest

from trainer.dataset import shuffle_labels, split_holdout, to_preference_records
from trainer.errors import DatasetError
from trainer.local import pair_rows


def rows(n: int, start: int = 0) -> list[dict]:
    return pair_rows("alice", [(f"Q{i}?", f"A{i}. Hope this helps!", f"A{i}.") for i in range(start, start + n)])


def test_a_pair_stays_on_its_side_when_the_dataset_grows() -> None:
    first_train, first_held = split_holdout(rows(64), 0.2)
    _, second_held = split_holdout(rows(64) + rows(64, start=64), 0.2)
    ids = lambda rs: {r["pair_id"] for r in rs}  # noqa: E731
    assert ids(first_held) <= ids(second_held)
    assert not ids(second_held) & ids(first_train)  # v1 never trained on what v2 holds out
    assert 0.1 < len(second_held) / 128 < 0.3


def test_the_split_ignores_row_order() -> None:
    data = rows(40)
    assert split_holdout(data, 0.2) == split_holdout(list(reversed(data)), 0.2)


def test_tiny_datasets_are_trained_on_whole_and_empty_ones_are_an_error() -> None:
    assert split_holdout(rows(4), 0.2)[1] == []
    assert len(split_holdout(rows(5), 0.2)[1]) >= 1
    with pytest.raises(DatasetError):
        split_holdout([], 0.2)


def test_pairs_with_zero_weight_are_not_trained_on() -> None:
    data = rows(3)
    data[1]["training_weight"] = 0.0
    assert [r["prompt"][0]["content"] for r in to_preference_records(data)] == ["Q0?", "Q2?"]


def test_shuffled_labels_swap_about_half_of_the_pairs() -> None:
    records = to_preference_records(rows(100))
    swapped = sum(r["chosen"] != s["chosen"] for r, s in zip(records, shuffle_labels(records, 0), strict=True))
    assert 30 < swapped < 70
