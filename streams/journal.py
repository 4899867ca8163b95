"""The decider's durable state: one journal entry per partition per batch, in a Faust table.

Each batch appends, for every partition it touched, ONE table value holding everything the batch
changed there (user states, sightings, MinHash signatures). One value is one changelog message, so
a batch's state change is atomic per partition, and the changelog carries a handful of messages per
batch instead of several per event (producing them through Faust costs far more than deciding).
Faust restores the table on start and on rebalance; the decider folds a partition's entries into
memory the first time it sees that partition after an assignment.

Erasure (``forget_user``) is the one change that rewrites the past: every earlier entry of the
partition that mentions the user is written again without them (same key: the changelog is
compacted, so the old value goes when Kafka compacts it). What stays of an erased user: their
counters under a hash of their id (entry ``e``), and one-way hashes of the event and command ids
they had (entry ``h``), so that a replay of the log changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.ids import user_key
from streams.state import Sighting, UserState, decode_signature, encode_signature, spent_key

log = logging.getLogger("samtuner.streams.journal")

SEP = "\x1f"


def entry_key(partition: int, seq: int) -> str:
    return f"{partition:05d}{SEP}{seq:012d}"


def parse_key(key: str) -> tuple[int, int] | None:
    head, sep, tail = key.partition(SEP)
    if not sep or not head.isdigit() or not tail.isdigit():
        return None
    return int(head), int(tail)


@dataclass
class PartitionState:
    """Everything the decider knows about the users of one partition."""

    partition: int
    next_seq: int = 0
    users: dict[str, UserState] = field(default_factory=dict)
    sightings: dict[str, Sighting] = field(default_factory=dict)
    signatures: dict[str, list[tuple[int, str, np.ndarray, int]]] = field(default_factory=dict)
    # Per source topic: the offset of the last event handled (decided, skipped or dead-lettered). The
    # decider takes a partition's events strictly in offset order from here (see streams/decider.py).
    through: dict[str, int] = field(default_factory=dict)
    # Erased users: their counters by user key (never the id), and hashes of their spent ids.
    erased: dict[str, UserState] = field(default_factory=dict)
    spent: set[str] = field(default_factory=set)
    # What this batch changed, in the journal's compact form.
    pending: list[list[Any]] = field(default_factory=list)
    pending_through: dict[str, int] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)  # users erased in this batch: rewrite their past

    def user(self, user_id: str) -> UserState:
        return self.users.get(user_id) or self.erased.get(user_key(user_id)) or UserState()

    def sighting(self, key: str) -> Sighting | None:
        return self.sightings.get(key)

    def is_spent(self, kind: str, ident: str) -> bool:
        """Was this event ('f') or command ('c') id handled before its user was erased?"""
        return spent_key(kind, ident) in self.spent

    def holdings(self, user_id: str) -> dict[str, int]:
        """What this partition's state holds of a user, by kind (what an erasure would drop)."""
        kinds = {"p": "pair_fingerprints", "x": "example_fingerprints", "f": "feedback_ids_hashed",
                 "c": "command_ids_hashed"}
        out = dict.fromkeys(kinds.values(), 0)
        prefix = user_id + SEP
        for key in self.sightings:
            if key.startswith(prefix):
                name = kinds.get(key[len(prefix):].partition(SEP)[0])
                if name:
                    out[name] += 1
        out["minhash_signatures"] = len(self.signatures.get(user_id, ()))
        return out

    def forget_user(self, user_id: str, after: UserState) -> None:
        """Drop everything of a user but ``after`` (their counters, by user key) and hashes of the ids
        they had; the batch's journal entries and the earlier ones are rewritten without them."""
        prefix = user_id + SEP
        for key in [k for k in self.sightings if k.startswith(prefix)]:
            kind, _, ident = key[len(prefix):].partition(SEP)
            del self.sightings[key]
            if kind in ("f", "c"):
                digest = spent_key(kind, ident)
                self.spent.add(digest)
                self.pending.append(["h", digest])
        self.signatures.pop(user_id, None)
        self.users.pop(user_id, None)
        self.pending = [e for e in self.pending if not mentions(e, user_id)]
        ukey = user_key(user_id)
        self.erased[ukey] = after
        self.pending.append(["e", ukey, after.to_json()])
        self.forgotten.add(user_id)

    def user_signatures(self, user_id: str, state: UserState) -> Iterator[tuple[str, np.ndarray]]:
        for index, pair_key, signature, epoch in self.signatures.get(user_id, ()):
            if index >= state.sig_base and epoch == state.epoch:
                yield pair_key, signature

    # -- changes (applied now, journalled by the batch) -------------------------------------------

    def put_user(self, user_id: str, state: UserState) -> None:
        self.users[user_id] = state
        self.pending.append(["u", user_id, state.to_json()])

    def put_sighting(self, key: str, sighting: Sighting) -> None:
        self.sightings[key] = sighting
        self.pending.append(["s", key, sighting.to_json()])

    def put_through(self, topic: str, offset: int) -> None:
        self.through[topic] = offset
        self.pending_through[topic] = offset

    def put_signature(self, user_id: str, index: int, pair_key: str, signature: np.ndarray, epoch: int) -> None:
        self.signatures.setdefault(user_id, []).append((index, pair_key, signature, epoch))
        self.pending.append(["g", user_id, index, encode_signature(pair_key, signature, epoch)])

    def apply(self, entries: list[list[Any]]) -> None:
        """Fold journalled entries (on load)."""
        for entry in entries:
            kind = entry[0]
            if kind == "u":
                self.users[entry[1]] = UserState.from_json(entry[2])
            elif kind == "s":
                sighting = Sighting.from_json(entry[2])
                if sighting is not None:
                    self.sightings[entry[1]] = sighting
            elif kind == "t":
                self.through[entry[1]] = max(self.through.get(entry[1], -1), int(entry[2]))
            elif kind == "g":
                decoded = decode_signature(entry[3])
                if decoded is not None:
                    self.signatures.setdefault(entry[1], []).append((int(entry[2]), decoded[0], decoded[1], decoded[2]))
            elif kind == "e":
                self.erased[entry[1]] = UserState.from_json(entry[2])
            elif kind == "h":
                self.spent.add(entry[1])


def mentions(entry: list[Any], user_id: str) -> bool:
    """Does a journal entry hold something of ``user_id`` (its state, a sighting, a signature)?"""
    kind = entry[0]
    if kind in ("u", "g"):
        return bool(entry[1] == user_id)
    if kind == "s":
        return str(entry[1]).startswith(user_id + SEP)
    return False


class DeciderMemory:
    """In-memory state of the partitions this worker decides, loaded from the journal table."""

    def __init__(self, journal: MutableMapping[str, Any]) -> None:
        self.journal = journal
        self._partitions: dict[int, PartitionState] = {}

    def partition(self, partition: int) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = self._load(partition)
            self._partitions[partition] = state
        return state

    def _load(self, partition: int) -> PartitionState:
        state = PartitionState(partition)
        chunks = []
        for key, value in list(self.journal.items()):
            parsed = parse_key(str(key))
            if parsed is not None and parsed[0] == partition and value:
                chunks.append((parsed[1], value))
        for seq, value in sorted(chunks, key=lambda c: c[0]):
            state.apply(value)
            state.next_seq = seq + 1
        if chunks:
            log.info("partition %d: decider state loaded from %d journal entries (%d users)", partition,
                     len(chunks), len(state.users))
        return state

    def touched(self) -> list[PartitionState]:
        return [p for p in self._partitions.values() if p.pending or p.pending_through]

    def rewrites(self, state: PartitionState) -> list[tuple[str, list[list[Any]]]]:
        """The earlier journal entries of a partition, rewritten without the users it forgot in this
        batch (only the entries that change); clears the list of forgotten users."""
        if not state.forgotten:
            return []
        out = []
        for key, value in list(self.journal.items()):
            parsed = parse_key(str(key))
            if parsed is None or parsed[0] != state.partition or not value:
                continue
            kept = [e for e in value if not any(mentions(e, user) for user in state.forgotten)]
            if len(kept) != len(value):
                out.append((str(key), kept))
        state.forgotten = set()
        return out

    def written(self, state: PartitionState) -> tuple[str, list[list[Any]]]:
        """The journal key and value for a partition's pending changes; clears them."""
        key = entry_key(state.partition, state.next_seq)
        # A user's state is written once per batch: its last value.
        last = {entry[1]: i for i, entry in enumerate(state.pending) if entry[0] == "u"}
        value = [e for i, e in enumerate(state.pending) if e[0] != "u" or last[e[1]] == i]
        value.extend(["t", topic, offset] for topic, offset in state.pending_through.items())
        state.pending = []
        state.pending_through = {}
        state.next_seq += 1
        return key, value

    def forget(self) -> None:
        """Drop everything in memory (after a rebalance, or a batch that did not complete)."""
        self._partitions.clear()
