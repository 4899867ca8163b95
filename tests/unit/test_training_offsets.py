"""A worker commits past everything it handled, but never past a job that has no outcome yet."""

from __future__ import annotations

from trainer.offsets import OffsetTracker

P = ("sam.training.v1", 0)


def test_commits_stop_at_the_oldest_unfinished_request() -> None:
    t = OffsetTracker()
    t.consumed(P, 3, in_flight=True)
    t.consumed(P, 4, in_flight=False)
    t.consumed(P, 5, in_flight=True)
    assert t.to_commit() == {P: 3}
    t.committed({P: 3})
    assert t.to_commit() == {}
    t.finished(P, 3)
    assert t.to_commit() == {P: 5}
    t.finished(P, 5)
    assert t.to_commit() == {P: 6}


def test_forgotten_partitions_are_not_committed() -> None:
    t = OffsetTracker()
    t.consumed(P, 1, in_flight=False)
    t.forget([P])
    assert t.to_commit() == {}
