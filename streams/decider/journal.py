"""The decider's durable state: keyed by user, bounded per user, in a compacted Faust table.

Keys (``PPPPP`` = the partition, 5 digits; ``\\x1f`` between parts):

* ``PPPPP h``: the partition's head: per source topic, the offset of the last event handled;
* ``PPPPP u <user>``: one user's value: their ``UserState``, and the open chunk of each of their two
  rings, sightings (event/command ids, pair/example fingerprints) and MinHash signatures;
* ``PPPPP s <user> <slot>`` / ``PPPPP g <user> <slot>``: the closed chunks of those rings, written
  once when they fill up; slot = chunk number mod (chunks kept + 1), so a key is reused and the
  changelog keeps one value per slot;
* ``PPPPP e <user key>``: an erased user: their counters and one-way hashes of the ids they had,
  under a hash of the user id (``schemas.ids.user_key``), never the id.

So the compacted changelog holds a bounded number of values per user, and a restore reads what the
users are now, not the history that led there. The bounds (``streams.state`` in the config):
``max_sightings_per_user`` ids and fingerprints, ``max_signatures_per_user`` signatures, at least
the last N of each (a ring drops its oldest chunk when a new one closes). Within the horizon, an
event delivered again at a new offset is a redelivery and the same pair a duplicate; beyond it,
it is decided as new. Whatever its age, an event at an offset the head holds is skipped.

Write order of a batch, per partition, all produced to that partition's changelog partition
(``streams/decider/changelog.py``), which keeps order: erased users' records, tombstones of what they had, closed
chunks, user values, and last the head. A head that is durable implies that everything before it
is. A prefix without its head is safe too: a user's state and the sightings of the events it holds
are one value, so an event decided again finds its own sighting (a redelivery: its outputs were
acked before any of this was written); a closed chunk takes a slot that the user's durable value
does not read (chunks kept + 1 slots).

A partition is loaded by its own keys: the table's keys are grouped by partition once per
assignment, and a user's chunks are read by the slots their value names.

Journals written before (keys ``PPPPP <seq>``, one value per batch) are folded into this form the
first time their partition is loaded, and their keys deleted once the keyed form is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from schemas.ids import user_key
from streams.decider.state import Sighting, UserState, decode_signature, encode_signature, spent_key
from streams.errors import JournalFormatError

log = logging.getLogger("samtuner.streams.decider.journal")

SEP = "\x1f"
SIGHTING_CHUNK = 16  # entries per closed chunk: small, as the open one is rewritten with its user
SIGNATURE_CHUNK = 4  # a signature is ~350 bytes of JSON
VERSION = 2

# One journal write: a value, or None for a tombstone.
Write = tuple[str, Any]

T = TypeVar("T")


@dataclass(frozen=True)
class StateLimits:
    max_sightings_per_user: int = 128
    max_signatures_per_user: int = 32


def head_key(partition: int) -> str:
    return f"{partition:05d}{SEP}h"


def user_value_key(partition: int, user_id: str) -> str:
    return f"{partition:05d}{SEP}u{SEP}{user_id}"


def chunk_key(partition: int, ring: str, user_id: str, slot: int) -> str:
    return f"{partition:05d}{SEP}{ring}{SEP}{user_id}{SEP}{slot}"


def erased_key(partition: int, ukey: str) -> str:
    return f"{partition:05d}{SEP}e{SEP}{ukey}"


def legacy_key(partition: int) -> str:
    """Spent id hashes migrated from a journal of the old form (they name no user)."""
    return f"{partition:05d}{SEP}x"


def old_entry_key(partition: int, seq: int) -> str:
    """A key of the journal's old form, one value per partition per batch."""
    return f"{partition:05d}{SEP}{seq:012d}"


def key_partition(key: str) -> int | None:
    head = key[:5]
    return int(head) if len(key) > 5 and key[5] == SEP and head.isdigit() else None


def is_old_key(key: str) -> bool:
    tail = key[6:]
    return len(tail) == 12 and tail.isdigit()


@dataclass
class Ring(Generic[T]):
    """The last entries of one kind for one user, in chunks: an open one, and ``keep`` closed ones."""

    chunk: int
    keep: int
    number: int = 0  # the open chunk's number
    open: list[T] = field(default_factory=list)
    closed: dict[int, list[T]] = field(default_factory=dict)

    @property
    def slots(self) -> int:
        return self.keep + 1  # the slot a new chunk takes is never one the durable user value reads

    def append(self, item: T) -> tuple[tuple[int, list[T]] | None, list[T]]:
        """Add ``item``; returns the chunk it closed (number, entries), if any, and the entries dropped."""
        self.open.append(item)
        if len(self.open) < self.chunk:
            return None, []
        done = (self.number, self.open)
        self.closed[self.number] = self.open
        self.number += 1
        self.open = []
        return done, self.closed.pop(self.number - 1 - self.keep, [])

    def entries(self) -> Iterator[T]:
        for number in sorted(self.closed):
            yield from self.closed[number]
        yield from self.open

    def wanted(self) -> range:
        """The numbers of the closed chunks a user value with this ring reads."""
        return range(max(0, self.number - self.keep), self.number)


def _ring_limits(limit: int, chunk: int) -> tuple[int, int]:
    size = min(chunk, limit)
    return size, math.ceil(limit / size)


# Ring entries, as stored: [kind + SEP + ident, sighting as list] and [index, encoded signature].
SightingEntry = tuple[str, Sighting]
SignatureEntry = tuple[int, str, np.ndarray, int]


def _sighting_out(entry: SightingEntry) -> list[Any]:
    name, s = entry
    # An event's or command's own sighting names its id already: not stored twice
    fid = "" if name.partition(SEP)[2] == s.feedback_event_id else s.feedback_event_id
    return [name, s.partition, s.offset, fid, s.epoch, s.content]


def _sighting_in(raw: list[Any]) -> SightingEntry:
    name = str(raw[0])
    fid = str(raw[3]) or name.partition(SEP)[2]
    return name, Sighting(int(raw[1]), int(raw[2]), fid, int(raw[4]), str(raw[5]))


def _signature_out(entry: SignatureEntry) -> list[Any]:
    index, pair_key, signature, epoch = entry
    return [index, encode_signature(pair_key, signature, epoch)]


def _signature_in(raw: list[Any]) -> SignatureEntry | None:
    decoded = decode_signature(raw[1])
    return None if decoded is None else (int(raw[0]), decoded[0], decoded[1], decoded[2])


def _decoded(decode: Any, raw: list[Any]) -> list[Any]:
    return [e for e in map(decode, raw) if e is not None]


@dataclass
class UserMemory:
    state: UserState
    sightings: Ring[SightingEntry]
    signatures: Ring[SignatureEntry]


@dataclass
class ErasedUser:
    state: UserState
    spent: list[str] = field(default_factory=list)  # oldest first, at most max_sightings_per_user


@dataclass
class PartitionState:
    """Everything the decider knows about the users of one partition."""

    partition: int
    limits: StateLimits = field(default_factory=StateLimits)
    users: dict[str, UserMemory] = field(default_factory=dict)
    sightings: dict[str, Sighting] = field(default_factory=dict)  # by seen_key, for lookups
    # Per source topic: the offset of the last event handled (decided, skipped or dead-lettered). The
    # decider takes a partition's events strictly in offset order from here (see streams/decider/batch.py).
    through: dict[str, int] = field(default_factory=dict)
    erased: dict[str, ErasedUser] = field(default_factory=dict)  # by user key
    legacy_spent: set[str] = field(default_factory=set)
    # What this batch changed, written by ``DeciderMemory.written``.
    dirty: set[str] = field(default_factory=set)  # users whose value changed
    closed: dict[str, Any] = field(default_factory=dict)  # chunk key -> value (insertion order kept)
    tombstones: list[str] = field(default_factory=list)
    dirty_erased: set[str] = field(default_factory=set)
    moved_through: bool = False
    old_keys: list[str] = field(default_factory=list)  # a journal of the old form, deleted once rewritten
    write_legacy: bool = False

    def _new_user(self) -> UserMemory:
        s_chunk, s_keep = _ring_limits(self.limits.max_sightings_per_user, SIGHTING_CHUNK)
        g_chunk, g_keep = _ring_limits(self.limits.max_signatures_per_user, SIGNATURE_CHUNK)
        return UserMemory(UserState(), Ring(s_chunk, s_keep), Ring(g_chunk, g_keep))

    def _memory(self, user_id: str) -> UserMemory:
        mem = self.users.get(user_id)
        if mem is None:
            mem = self.users[user_id] = self._new_user()
            mem.state = self.user(user_id)
        return mem

    def user(self, user_id: str) -> UserState:
        mem = self.users.get(user_id)
        if mem is not None:
            return mem.state
        gone = self.erased.get(user_key(user_id))
        return gone.state if gone is not None else UserState()

    def sighting(self, key: str) -> Sighting | None:
        return self.sightings.get(key)

    def is_spent(self, user_id: str, kind: str, ident: str) -> bool:
        """Was this event ('f') or command ('c') id handled before its user was erased?"""
        digest = spent_key(kind, ident)
        gone = self.erased.get(user_key(user_id))
        return (gone is not None and digest in gone.spent) or digest in self.legacy_spent

    def holdings(self, user_id: str) -> dict[str, int]:
        """What this partition's state holds of a user, by kind (what an erasure would drop)."""
        kinds = {
            "p": "pair_fingerprints",
            "x": "example_fingerprints",
            "f": "feedback_ids_hashed",
            "c": "command_ids_hashed",
        }
        out = dict.fromkeys(kinds.values(), 0)
        mem = self.users.get(user_id)
        if mem is None:
            out["minhash_signatures"] = 0
            return out
        prefix = user_id + SEP
        for name in dict.fromkeys(name for name, _ in mem.sightings.entries()):
            kind = kinds.get(name.partition(SEP)[0])
            if kind and prefix + name in self.sightings:
                out[kind] += 1
        out["minhash_signatures"] = sum(1 for _ in mem.signatures.entries())
        return out

    def forget_user(self, user_id: str, after: UserState) -> None:
        """Drop everything of a user but ``after`` (their counters, by user key) and hashes of the ids
        they had: their keys get tombstones."""
        ukey = user_key(user_id)
        gone = self.erased.get(ukey) or ErasedUser(after)
        gone.state = after
        mem = self.users.pop(user_id, None)
        if mem is not None:
            prefix = user_id + SEP
            for name in dict.fromkeys(name for name, _ in mem.sightings.entries()):
                self.sightings.pop(prefix + name, None)
                kind, _, ident = name.partition(SEP)
                if kind in ("f", "c"):
                    gone.spent.append(spent_key(kind, ident))
            del gone.spent[: -self.limits.max_sightings_per_user]
            for ring, chunks in (("s", mem.sightings), ("g", mem.signatures)):
                for slot in range(min(chunks.number, chunks.slots)):
                    key = chunk_key(self.partition, ring, user_id, slot)
                    self.closed.pop(key, None)
                    self.tombstones.append(key)
            self.tombstones.append(user_value_key(self.partition, user_id))
        self.dirty.discard(user_id)
        self.erased[ukey] = gone
        self.dirty_erased.add(ukey)

    def user_signatures(self, user_id: str, state: UserState) -> Iterator[tuple[str, np.ndarray]]:
        mem = self.users.get(user_id)
        if mem is None:
            return
        for index, pair_key, signature, epoch in mem.signatures.entries():
            if index >= state.sig_base and epoch == state.epoch:
                yield pair_key, signature

    # -- changes (applied now, written by the batch) ----------------------------------------------

    def put_user(self, user_id: str, state: UserState) -> None:
        self._memory(user_id).state = state
        self.dirty.add(user_id)

    def put_sighting(self, key: str, sighting: Sighting) -> None:
        user_id, _, name = key.partition(SEP)
        mem = self._memory(user_id)
        self.sightings[key] = sighting
        closed, dropped = mem.sightings.append((name, sighting))
        for old_name, old in dropped:
            if self.sightings.get(user_id + SEP + old_name) == old:  # not seen again since
                del self.sightings[user_id + SEP + old_name]
        if closed is not None:
            self._close(user_id, "s", mem.sightings, closed[0], [_sighting_out(e) for e in closed[1]])
        self.dirty.add(user_id)

    def put_through(self, topic: str, offset: int) -> None:
        self.through[topic] = offset
        self.moved_through = True

    def put_signature(
        self, user_id: str, index: int, pair_key: str, signature: np.ndarray, epoch: int, state: UserState | None = None
    ) -> list[str]:
        """Store a signature; returns the pair keys that left the user's signatures (as
        ``user_signatures(user_id, state)`` yields them) because the ring dropped older ones."""
        mem = self._memory(user_id)
        closed, dropped = mem.signatures.append((index, pair_key, signature, epoch))
        if closed is not None:
            self._close(user_id, "g", mem.signatures, closed[0], [_signature_out(e) for e in closed[1]])
        self.dirty.add(user_id)
        if not dropped or state is None:
            return []
        live = lambda e: e[0] >= state.sig_base and e[3] == state.epoch  # noqa: E731
        kept = {e[1] for e in mem.signatures.entries() if live(e)}
        return sorted({e[1] for e in dropped if live(e)} - kept)

    def _close(self, user_id: str, ring: str, chunks: Ring[Any], number: int, entries: list[Any]) -> None:
        self.closed[chunk_key(self.partition, ring, user_id, number % chunks.slots)] = {"n": number, "e": entries}

    # -- stored form ------------------------------------------------------------------------------

    def user_value(self, user_id: str) -> dict[str, Any]:
        mem = self.users[user_id]
        return {
            "u": user_id,
            "st": mem.state.to_json(),
            "s": [mem.sightings.number, mem.sightings.keep, [_sighting_out(e) for e in mem.sightings.open]],
            "g": [mem.signatures.number, mem.signatures.keep, [_signature_out(e) for e in mem.signatures.open]],
        }

    def load_user(self, value: dict[str, Any], journal: MutableMapping[str, Any]) -> None:
        user_id = str(value["u"])
        mem = self._new_user()
        mem.state = UserState.from_json(value["st"])
        for ring, chunks, raw, decode in (
            ("s", mem.sightings, value["s"], _sighting_in),
            ("g", mem.signatures, value["g"], _signature_in),
        ):
            stored = Ring[Any](chunks.chunk, int(raw[1]), int(raw[0]))
            for number in stored.wanted():
                chunk = journal.get(chunk_key(self.partition, ring, user_id, number % stored.slots))
                if chunk and int(chunk["n"]) == number:
                    stored.closed[number] = _decoded(decode, chunk["e"])
            stored.open = _decoded(decode, raw[2])
            if stored.keep == chunks.keep:
                chunks.number, chunks.open, chunks.closed = stored.number, stored.open, stored.closed
            else:  # the bound changed: keep what the new one allows, in chunks of the new form
                self._rechunk(user_id, ring, stored, chunks)
        for name, sighting in mem.sightings.entries():
            self.sightings[user_id + SEP + name] = sighting
        self.users[user_id] = mem

    def _rechunk(self, user_id: str, ring: str, stored: Ring[Any], chunks: Ring[Any]) -> None:
        for slot in range(min(stored.number, stored.slots)):
            self.tombstones.append(chunk_key(self.partition, ring, user_id, slot))
        for entry in list(stored.entries())[-(chunks.keep * chunks.chunk) :]:
            closed, _ = chunks.append(entry)
            if closed is not None:
                out = _sighting_out if ring == "s" else _signature_out
                self._close(user_id, ring, chunks, closed[0], [out(e) for e in closed[1]])
        self.dirty.add(user_id)

    def fold_old(self, entries: list[list[Any]]) -> None:
        """Fold the entries of one value of the journal's old form (migration)."""
        for entry in entries:
            kind = entry[0]
            if kind == "u":
                self.put_user(entry[1], UserState.from_json(entry[2]))
            elif kind == "s":
                sighting = Sighting.from_json(entry[2])
                if sighting is not None:
                    self.put_sighting(entry[1], sighting)
            elif kind == "t":
                self.put_through(entry[1], max(self.through.get(entry[1], -1), int(entry[2])))
            elif kind == "g":
                decoded = decode_signature(entry[3])
                if decoded is not None:
                    self.put_signature(entry[1], int(entry[2]), decoded[0], decoded[1], decoded[2])
            elif kind == "e":
                self.erased[entry[1]] = ErasedUser(UserState.from_json(entry[2]))
                self.dirty_erased.add(entry[1])
            elif kind == "h":
                self.legacy_spent.add(entry[1])
                self.write_legacy = True


class DeciderMemory:
    """In-memory state of the partitions this worker decides, loaded from the state table."""

    def __init__(self, journal: MutableMapping[str, Any], limits: StateLimits | None = None) -> None:
        self.journal = journal
        self.limits = limits or StateLimits()
        self._partitions: dict[int, PartitionState] = {}
        self._keys: dict[int, list[str]] | None = None

    def partition(self, partition: int) -> PartitionState:
        state = self._partitions.get(partition)
        if state is None:
            state = self._load(partition)
            self._partitions[partition] = state
        return state

    def _own_keys(self, partition: int) -> list[str]:
        if self._keys is None:  # once per assignment: the table's keys, by partition
            self._keys = {}
            for key in list(self.journal.keys()):
                number = key_partition(str(key))
                if number is not None:
                    self._keys.setdefault(number, []).append(str(key))
        return self._keys.get(partition, [])

    def _load(self, partition: int) -> PartitionState:
        state = PartitionState(partition, self.limits)
        keys = self._own_keys(partition)
        head = self.journal.get(head_key(partition))
        old = sorted(k for k in keys if is_old_key(k))
        if head:
            if int(head.get("v", 0)) != VERSION:
                raise JournalFormatError(partition, int(head.get("v", 0)), VERSION)
            state.through = {str(t): int(o) for t, o in head["t"].items()}
            legacy = self.journal.get(legacy_key(partition))
            state.legacy_spent = set(legacy or ())
            prefix_u, prefix_e = f"{partition:05d}{SEP}u{SEP}", f"{partition:05d}{SEP}e{SEP}"
            for key in keys:
                value = self.journal.get(key)
                if not value:
                    continue
                if key.startswith(prefix_u):
                    state.load_user(value, self.journal)
                elif key.startswith(prefix_e):
                    state.erased[key[len(prefix_e) :]] = ErasedUser(
                        UserState.from_json(value["st"]), list(value.get("h", ()))
                    )
            state.old_keys = old  # left over from a migration that was cut short: the keyed form holds them
        elif old:
            for key in old:
                value = self.journal.get(key)
                if value:
                    state.fold_old(value)
            state.old_keys = old
            state.moved_through = True
            log.warning(
                "partition %d: decider journal of the old form (%d entries) folded into the keyed form; "
                "its entries are deleted once the keyed form is written",
                partition,
                len(old),
            )
        if state.users or state.erased:
            log.info(
                "partition %d: decider state loaded (%d users, %d erased)",
                partition,
                len(state.users),
                len(state.erased),
            )
        return state

    def touched(self) -> list[PartitionState]:
        return [
            p
            for p in self._partitions.values()
            if p.dirty or p.moved_through or p.tombstones or p.dirty_erased or p.old_keys
        ]

    def drain_writes(self, state: PartitionState) -> list[Write]:
        """The writes for a partition's changes, in the order they must land (see the module
        docstring); clears them."""
        out: list[Write] = []
        if state.write_legacy:
            out.append((legacy_key(state.partition), sorted(state.legacy_spent)))
        for ukey in sorted(state.dirty_erased):
            gone = state.erased[ukey]
            out.append((erased_key(state.partition, ukey), {"st": gone.state.to_json(), "h": list(gone.spent)}))
        out.extend((key, None) for key in dict.fromkeys(state.tombstones))
        out.extend(state.closed.items())
        out.extend((user_value_key(state.partition, user), state.user_value(user)) for user in sorted(state.dirty))
        out.append((head_key(state.partition), {"v": VERSION, "t": dict(state.through)}))
        out.extend((key, None) for key in state.old_keys)  # after the head: the keyed form is durable
        state.dirty, state.closed, state.tombstones, state.dirty_erased = set(), {}, [], set()
        state.moved_through, state.old_keys, state.write_legacy = False, [], False
        return out

    def forget(self) -> None:
        """Drop everything in memory (after a rebalance, or a batch that did not complete)."""
        self._partitions.clear()
        self._keys = None


def apply_writes(journal: MutableMapping[str, Any], writes: Iterable[Write]) -> None:
    """Apply a batch's writes to a table (a tombstone deletes the key)."""
    for key, value in writes:
        if value is None:
            if key in journal:
                del journal[key]
        else:
            journal[key] = value
