"""Snapshots are deterministic: the same pairs in any order give the same bytes (and sha256)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from infra.artifacts import sha256_bytes
from schemas.snapshot import read_snapshot, row_kind, snapshot_bytes


def rows(n: int) -> list[dict]:
    return [
        {
            "pair_id": uuid.UUID(int=i),
            "prompt": f"p{i}",
            "chosen_response": f"c{i}",
            "rejected_response": f"r{i}",
            "confidence_score": 0.9,
            "quality_score": 0.8,
            "training_weight": 1.0,
            "feedback_type": "correction",
            "created_at": datetime(2026, 11, 25, tzinfo=UTC),
            "metadata": "{}",
        }
        for i in range(n)
    ]


def test_same_pairs_any_order_same_bytes() -> None:
    a = snapshot_bytes(rows(5))
    b = snapshot_bytes(list(reversed(rows(5))))
    assert sha256_bytes(a) == sha256_bytes(b)
    assert [r["prompt"] for r in read_snapshot(a)] == ["p0", "p1", "p2", "p3", "p4"]


def test_different_pairs_different_bytes() -> None:
    assert snapshot_bytes(rows(5)) != snapshot_bytes(rows(4))


def test_labelled_examples_travel_in_the_same_snapshot_after_the_pairs() -> None:
    example = {
        "example_id": uuid.UUID(int=99),
        "prompt": "q",
        "response": "a",
        "desirable": True,
        "confidence_score": 0.9,
        "created_at": datetime(2026, 11, 25, tzinfo=UTC),
        "metadata": "{}",
    }
    read = read_snapshot(snapshot_bytes(rows(2), [example]))
    assert [(r["kind"], r["pair_id"], r["example_id"]) for r in read] == [
        ("pair", str(uuid.UUID(int=0)), None),
        ("pair", str(uuid.UUID(int=1)), None),
        ("example", None, str(uuid.UUID(int=99))),
    ]
    assert read[2]["feedback_type"] == "thumbs_up" and read[2]["response"] == "a"
    assert snapshot_bytes(rows(2), [example]) != snapshot_bytes(rows(2))


def test_rows_of_snapshots_without_a_kind_are_pairs() -> None:
    assert row_kind({"pair_id": "x"}) == "pair" and row_kind({"kind": "example"}) == "example"
