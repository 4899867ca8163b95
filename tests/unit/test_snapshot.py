"""Snapshots are deterministic: the same pairs in any order give the same bytes (and sha256)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from infra.artifacts import sha256_bytes
from streams.snapshot import read_snapshot, snapshot_bytes


def rows(n: int) -> list[dict]:
    return [
        {"pair_id": uuid.UUID(int=i), "prompt": f"p{i}", "chosen_response": f"c{i}", "rejected_response": f"r{i}",
         "confidence_score": 0.9, "quality_score": 0.8, "training_weight": 1.0, "feedback_type": "correction",
         "created_at": datetime(2026, 11, 25, tzinfo=UTC), "metadata": "{}"}
        for i in range(n)
    ]


def test_same_pairs_any_order_same_bytes() -> None:
    a = snapshot_bytes(rows(5))
    b = snapshot_bytes(list(reversed(rows(5))))
    assert sha256_bytes(a) == sha256_bytes(b)
    assert [r["prompt"] for r in read_snapshot(a)] == ["p0", "p1", "p2", "p3", "p4"]


def test_different_pairs_different_bytes() -> None:
    assert snapshot_bytes(rows(5)) != snapshot_bytes(rows(4))
