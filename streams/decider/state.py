"""The decider's per-user state and sightings, as stored in its Faust table (plain JSON values; the
keys and the bounded form they are kept in: ``streams/decider/journal.py``)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class UserState:
    """What the decider knows about one user (one value per user: its changelog message is atomic).

    Which events are already applied is the partition's business, not the user's: see
    ``PartitionState.through`` (the partition's head) in ``streams/decider/journal.py``. ``epoch`` grows when
    the user is erased: sightings and signatures of an older epoch are ignored. ``sig_count`` is how
    many MinHash signatures the user has stored (the last ``streams.state.max_signatures_per_user``
    of them are kept).
    """

    generation: int = 0
    new_pairs: int = 0
    epoch: int = 0
    sig_count: int = 0
    sig_base: int = 0  # signatures below this index belong to an erased epoch
    new_examples: int = 0  # labelled examples since the last generation

    def to_json(self) -> dict[str, Any]:
        out = {"g": self.generation, "n": self.new_pairs, "e": self.epoch, "s": self.sig_count, "b": self.sig_base}
        if self.new_examples:
            out["x"] = self.new_examples  # absent when 0: states written before examples counted read the same
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> UserState:
        if not raw:
            return cls()
        return cls(
            generation=int(raw["g"]),
            new_pairs=int(raw["n"]),
            epoch=int(raw.get("e", 0)),
            sig_count=int(raw.get("s", 0)),
            sig_base=int(raw.get("b", 0)),
            new_examples=int(raw.get("x", 0)),
        )


@dataclass(frozen=True)
class Sighting:
    """Where something (a pair, an example, a rejected feedback event) was first seen, and from which event.

    ``content`` is the hash of the event's content, for sightings of an event id (kinds 'f' and 'c'):
    the same id with other content is a conflict, not a redelivery. Empty in journals written before."""

    partition: int
    offset: int
    feedback_event_id: str
    epoch: int = 0
    content: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"p": self.partition, "o": self.offset, "f": self.feedback_event_id, "e": self.epoch}
        if self.content:
            out["h"] = self.content
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Sighting | None:
        if not raw:
            return None
        return cls(
            partition=int(raw["p"]),
            offset=int(raw["o"]),
            feedback_event_id=str(raw["f"]),
            epoch=int(raw.get("e", 0)),
            content=str(raw.get("h", "")),
        )


def seen_key(user_id: str, kind: str, ident: str) -> str:
    """Key in the sightings table: kind 'p' (pair), 'x' (labelled example), 'f' (feedback event) or
    'c' (command)."""
    return f"{user_id}\x1f{kind}\x1f{ident}"


def spent_key(kind: str, ident: str) -> str:
    """What is kept of an erased user's event or command id: a one-way hash, no user id, no content."""
    return hashlib.sha256(f"spent\x1f{kind}\x1f{ident}".encode()).hexdigest()[:32]


def encode_signature(pair_key: str, signature: np.ndarray, epoch: int) -> dict[str, Any]:
    return {"k": pair_key, "s": base64.b64encode(signature.astype(np.uint32).tobytes()).decode(), "e": epoch}


def decode_signature(raw: dict[str, Any] | None) -> tuple[str, np.ndarray, int] | None:
    if not raw:
        return None
    return str(raw["k"]), np.frombuffer(base64.b64decode(raw["s"]), dtype=np.uint32), int(raw.get("e", 0))
