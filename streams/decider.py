"""One batch of the decider: read tables, decide every event in order, then hand back what to send
and, separately, what to write to the tables.

The order of effects is what makes emission exactly-once on the wire: the agent sends the outputs
and waits for the broker's acks, and only then writes the new states to the tables. So a state that
holds an event implies its outputs are durable (the agent skips such an event when it is delivered
again), and an event delivered again whose state was lost is decided again, with its outputs
suppressed when the output log already holds them (``watermark``: the highest source offset already
answered on the pairs topic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infra.kafka import RawMessage
from schemas.codec import decode_as, decode_command, encode_headers, encode_key, encode_value
from schemas.commands import Command, DeactivatePair, ReweightPair
from schemas.errors import EventDecodeError
from schemas.events import Event, FeedbackReceived, SourceRef
from schemas.topics import Topics
from streams.dead_letters import dead_letter_headers
from streams.decide import (
    DecideSettings,
    Decision,
    Lookups,
    decide_command,
    decide_feedback,
    example_key_for,
    is_pair,
    pair_key_for,
    reversed_pair_key_for,
)
from streams.similarity import MinHasher, UserIndexes, nearest, pair_text
from streams.state import Sighting, UserState, decode_signature, encode_signature, seen_key, signature_key
from streams.watermarks import source_headers

log = logging.getLogger("samtuner.streams.decider")

Outgoing = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
Bind = Callable[[Any], AbstractContextManager[None]]


@dataclass
class Tables:
    """The decider's Faust tables (any MutableMapping in tests)."""

    users: MutableMapping[str, Any]
    seen: MutableMapping[str, Any]
    signatures: MutableMapping[str, Any]


@dataclass
class BatchResult:
    outgoing: list[Outgoing] = field(default_factory=list)
    suppressed: int = 0
    decided: int = 0
    skipped: int = 0
    dead_letters: int = 0
    # (source event, table, key, value) in the order they must be written after the outputs are acked
    writes: list[tuple[Any, str, str, Any]] = field(default_factory=list)


class BatchDecider:
    def __init__(
        self,
        settings: DecideSettings,
        tables: Tables,
        topics: Topics,
        hasher: MinHasher,
        indexes: UserIndexes,
        watermark: Callable[[str, int], int],
    ) -> None:
        self.settings = settings
        self.tables = tables
        self.topics = topics
        self.hasher = hasher
        self.indexes = indexes
        self.watermark = watermark

    # -- phase 1: decide -------------------------------------------------------------------------

    def decide(self, batch: list[tuple[Any, RawMessage]]) -> BatchResult:
        """Decide every (event handle, message) of the batch in order; nothing is written yet."""
        result = BatchResult()
        overlay = _Overlay(self.tables)
        for handle, msg in batch:
            try:
                self._one(handle, msg, overlay, result)
            except Exception as exc:  # a bug must not stop the worker or lose the message
                log.exception("decider failed on %s/%d@%d", msg.topic, msg.partition, msg.offset)
                self._dead_letter(msg, "internal_error", f"{type(exc).__name__}: {exc}", result)
        result.writes = overlay.writes()
        return result

    def _one(self, handle: Any, msg: RawMessage, overlay: _Overlay, result: BatchResult) -> None:
        source = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        if msg.topic == self.topics.control:
            try:
                cmd = decode_command(msg.value)
            except EventDecodeError as exc:
                self._dead_letter(msg, exc.reason, exc.detail, result)
                return
            state = overlay.state(cmd.user_id)
            if state.applied(source.topic, source.partition, source.offset):
                result.skipped += 1
                return
            seen_before = overlay.sighting(seen_key(cmd.user_id, "c", str(cmd.command_id))) is not None
            decision = decide_command(cmd, source, state, self._command_pair(cmd, state, overlay), self.settings,
                                      seen_before)
            self._apply(handle, cmd.user_id, decision, None, overlay, result, source)
            return
        try:
            fb = decode_as(msg.value, FeedbackReceived)
        except EventDecodeError as exc:
            self._dead_letter(msg, exc.reason, exc.detail, result)
            return
        state = overlay.state(fb.user_id)
        if state.applied(source.topic, source.partition, source.offset):
            result.skipped += 1  # our state holds it, so its outputs are durable
            return
        lookups, minhash = self._lookups(fb, state, overlay)
        decision = decide_feedback(fb, source, state, lookups, self.settings)
        self._apply(handle, fb.user_id, decision, minhash, overlay, result, source)

    def _command_pair(self, cmd: Command, state: UserState, overlay: _Overlay) -> Sighting | None:
        if isinstance(cmd, DeactivatePair | ReweightPair):
            pair = overlay.sighting(seen_key(cmd.user_id, "p", str(cmd.pair_id)))
            return pair if pair is not None and pair.epoch == state.epoch else None
        return None

    def _lookups(self, fb: FeedbackReceived, state: UserState, overlay: _Overlay) -> tuple[Lookups, Any]:
        user, epoch = fb.user_id, state.epoch
        feedback = overlay.sighting(seen_key(user, "f", str(fb.event_id)))
        if not is_pair(fb):
            return Lookups(example=overlay.sighting(seen_key(user, "x", example_key_for(fb))),
                           feedback=feedback), None
        key = pair_key_for(fb)
        reverse = reversed_pair_key_for(fb)
        pair = overlay.sighting(seen_key(user, "p", key)) if key else None
        reversed_pair = overlay.sighting(seen_key(user, "p", reverse)) if reverse else None
        near, minhash = None, None
        fresh = (pair is None or pair.epoch != epoch) and feedback is None
        if fresh and fb.corrected_response is not None and _comparable(fb, self.settings):
            minhash = self.hasher.minhash(pair_text(fb.prompt, fb.corrected_response, fb.original_response))
            lsh, members = self.indexes.get(user, (epoch, state.sig_count), lambda: self._signatures(user, state))
            near = nearest(lsh, members, minhash, self.settings.quality.near_duplicate_jaccard)
        return Lookups(pair=pair, reversed_pair=reversed_pair, feedback=feedback, near_duplicate=near), minhash

    def _signatures(self, user: str, state: UserState) -> Iterator[tuple[str, np.ndarray]]:
        for index in range(state.sig_base, state.sig_count):
            raw = decode_signature(self.tables.signatures.get(signature_key(user, index)))
            if raw is not None and raw[2] == state.epoch:
                yield raw[0], raw[1]

    def _apply(self, handle: Any, user: str, decision: Decision, minhash: Any, overlay: _Overlay,
               result: BatchResult, source: SourceRef) -> None:
        result.decided += 1
        if source.offset <= self.watermark(source.topic, source.partition):
            result.suppressed += len(decision.events)  # already in the output log
        else:
            for event in decision.events:
                result.outgoing.append(_out(self.topics.pairs, event, source))
        for key, sighting in decision.sightings:
            overlay.put_sighting(handle, key, sighting)
        if decision.signature_for is not None and minhash is not None:
            index = decision.state.sig_count - 1
            overlay.put_signature(handle, signature_key(user, index),
                                  encode_signature(decision.signature_for, minhash.hashvalues, decision.state.epoch))
            self.indexes.add(user, (decision.state.epoch, decision.state.sig_count), decision.signature_for, minhash)
        elif decision.state.epoch != overlay.state(user).epoch:
            self.indexes.forget(user)
        overlay.put_state(handle, user, decision.state)

    def _dead_letter(self, msg: RawMessage, reason: str, detail: str, result: BatchResult) -> None:
        result.dead_letters += 1
        headers = dead_letter_headers(msg, "decider", reason, detail)
        result.outgoing.append((self.topics.dlq, msg.key, msg.value, headers))


def _comparable(fb: FeedbackReceived, settings: DecideSettings) -> bool:
    """Near-duplicate search only for texts within the length limits (huge texts are rejected anyway)."""
    limit = settings.quality.response_chars[1]
    return len(fb.prompt) <= settings.quality.prompt_chars[1] and len(fb.original_response) <= limit and len(
        fb.corrected_response or "") <= limit


def _out(topic: str, event: Event, source: SourceRef) -> Outgoing:
    headers = encode_headers(event) + source_headers(source.topic, source.partition, source.offset)
    return topic, encode_key(event), encode_value(event), headers


class _Overlay:
    """Reads through to the tables, with this batch's not-yet-written changes on top."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._states: dict[str, tuple[Any, UserState]] = {}
        self._sightings: dict[str, tuple[Any, Sighting]] = {}
        self._signatures: dict[str, tuple[Any, dict[str, Any]]] = {}

    def state(self, user: str) -> UserState:
        if user in self._states:
            return self._states[user][1]
        return UserState.from_json(self.tables.users.get(user))

    def sighting(self, key: str) -> Sighting | None:
        if key in self._sightings:
            return self._sightings[key][1]
        return Sighting.from_json(self.tables.seen.get(key))

    def put_state(self, handle: Any, user: str, state: UserState) -> None:
        self._states[user] = (handle, state)

    def put_sighting(self, handle: Any, key: str, sighting: Sighting) -> None:
        self._sightings[key] = (handle, sighting)

    def put_signature(self, handle: Any, key: str, value: dict[str, Any]) -> None:
        self._signatures[key] = (handle, value)

    def writes(self) -> list[tuple[Any, str, str, Any]]:
        out: list[tuple[Any, str, str, Any]] = []
        out += [(h, "seen", k, s.to_json()) for k, (h, s) in self._sightings.items()]
        out += [(h, "signatures", k, v) for k, (h, v) in self._signatures.items()]
        # States last: a stored state implies its sightings and signatures are stored too.
        out += [(h, "users", u, s.to_json()) for u, (h, s) in self._states.items()]
        return out


def write_tables(tables: Tables, writes: list[tuple[Any, str, str, Any]], bind: Bind, only: set[str]) -> None:
    """Write the batch's changes to the ``only`` tables, each bound to the event that caused it (so it
    lands in that event's changelog partition)."""
    for handle, table, key, value in writes:
        if table in only:
            with bind(handle):
                getattr(tables, table)[key] = value
