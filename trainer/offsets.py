"""Which offsets a trainer worker may commit (pure).

A request's offset stays uncommitted while its job is queued or running, so a worker that dies
leaves it to the next owner of the partition; everything before the oldest unfinished request is
committed as soon as it is handled.
"""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]


class OffsetTracker:
    def __init__(self) -> None:
        self._next: dict[Partition, int] = {}
        self._in_flight: dict[Partition, set[int]] = {}
        self._committed: dict[Partition, int] = {}

    def consumed(self, partition: Partition, offset: int, in_flight: bool) -> None:
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        if in_flight:
            self._in_flight.setdefault(partition, set()).add(offset)

    def finished(self, partition: Partition, offset: int) -> None:
        self._in_flight.get(partition, set()).discard(offset)

    def forget(self, partitions: Iterable[Partition]) -> None:
        for p in partitions:
            self._next.pop(p, None)
            self._in_flight.pop(p, None)
            self._committed.pop(p, None)

    def position(self, partition: Partition) -> int | None:
        """The offset to commit: the oldest unfinished request, or past everything consumed."""
        pending = self._in_flight.get(partition)
        if pending:
            return min(pending)
        return self._next.get(partition)

    def to_commit(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """Positions that moved since they were last committed."""
        out = {}
        for p in list(partitions) if partitions is not None else list(self._next):
            pos = self.position(p)
            if pos is not None and self._committed.get(p) != pos:
                out[p] = pos
        return out

    def committed(self, positions: dict[Partition, int]) -> None:
        self._committed.update(positions)
