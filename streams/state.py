"""The decider's per-user state, as stored in Faust tables (plain JSON values)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# Crossings remembered per user: enough to re-emit a threshold event after a crash, since at most
# the events after the last committed offset are processed again.
_KEEP_CROSSINGS = 16


@dataclass(frozen=True)
class UserState:
    """What the decider knows about one user.

    ``last_offset`` is the last feedback offset whose effects are in this state (a user's feedback
    lives in one partition), so an event at or below it is a re-delivery after a crash.
    """

    generation: int = 0
    new_pairs: int = 0
    partition: int = -1
    last_offset: int = -1
    crossings: tuple[tuple[int, int], ...] = field(default_factory=tuple)  # (offset, generation)

    def applied(self, partition: int, offset: int) -> bool:
        return partition == self.partition and offset <= self.last_offset

    def crossing_at(self, offset: int) -> int | None:
        for at, generation in self.crossings:
            if at == offset:
                return generation
        return None

    def advanced(self, partition: int, offset: int, **changes: Any) -> UserState:
        return replace(self, partition=partition, last_offset=offset, **changes)

    def with_crossing(self, offset: int, generation: int) -> tuple[tuple[int, int], ...]:
        return (*self.crossings, (offset, generation))[-_KEEP_CROSSINGS:]

    def to_json(self) -> dict[str, Any]:
        return {
            "g": self.generation,
            "n": self.new_pairs,
            "p": self.partition,
            "o": self.last_offset,
            "c": [list(c) for c in self.crossings],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> UserState:
        if not raw:
            return cls()
        return cls(
            generation=int(raw["g"]),
            new_pairs=int(raw["n"]),
            partition=int(raw["p"]),
            last_offset=int(raw["o"]),
            crossings=tuple((int(a), int(b)) for a, b in raw.get("c", [])),
        )


@dataclass(frozen=True)
class SeenPair:
    """A pair accepted earlier: where its feedback was read, and which feedback event it was."""

    partition: int
    offset: int
    feedback_event_id: str

    def to_json(self) -> dict[str, Any]:
        return {"p": self.partition, "o": self.offset, "f": self.feedback_event_id}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> SeenPair | None:
        if not raw:
            return None
        return cls(partition=int(raw["p"]), offset=int(raw["o"]), feedback_event_id=str(raw["f"]))
