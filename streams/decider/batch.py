"""One batch of the decider: decide every event in order against the partitions' state, and hand
back what to send and the state writes to make.

The order of effects is what makes emission exactly-once on the wire: the agent sends the outputs
and waits for the broker's acks, and only then writes the batch's state (per partition: the users'
values, then the partition's head, in its changelog partition, which keeps order; see
``streams/decider/journal.py``). So a state that holds an event implies its outputs are durable, and such an
event is skipped when it is delivered again: by position when the head holds its offset, or as a
redelivery when only its user's value was written (the value holds the user's state and the
sighting of the event together, so it is never half applied). An event delivered again whose state
was lost is decided again with the outputs the output log already holds suppressed
(``output_mark``: the last output on the pairs topic, as source offset and index among that event's
outputs). Deciding again gives the same outputs because the state, bounded rings included, is a
function of the events it holds: what a ring drops is dropped at the same event in both runs, and a
user's cached LSH index is rebuilt when their ring drops signatures.

Both rules assume that a partition's events are handled in offset order with none left out, and
Faust does not guarantee that: around a rebalance its fetcher can drop a fetched message (and
seeking back is no cure, as a seek races with the records its fetcher is still handing out). So the
head records, per source topic, the offset of the last event handled, and when an event arrives
past the next one, the decider reads the missing offsets straight from the log (``read_range``) and
decides them first. Offsets the log does not hold (transaction markers, retention) are stepped over.
``DecidedBatch.recovered`` names them, so that the caller can tell Faust they are done. A partition
with no head yet starts where its group resumes (``resume_offset``: the committed offset, or the
log's start): Faust can drop the first messages it fetches too, and commits past them when nothing
was committed before.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.kafka import RawMessage
from infra.logcontext import correlation, mark
from schemas.codec import decode_as, decode_command, encode_headers, encode_key, encode_value
from schemas.commands import Command, DeactivatePair, DeactivatePairs, EraseUser, ReweightPair, ReweightPairs
from schemas.dead_letters import dead_letter_headers
from schemas.errors import EventDecodeError
from schemas.events import Event, FeedbackReceived, SourceRef
from schemas.topics import Topics
from streams.decider.decisions import (
    DecideSettings,
    Decision,
    Lookups,
    decide_command,
    decide_feedback,
    example_key_for,
    is_pair,
    pair_keys_for,
)
from streams.decider.journal import DeciderMemory, PartitionState, Write
from streams.decider.output_marks import source_headers
from streams.decider.similarity import MinHasher, UserIndexes, nearest, pair_text
from streams.decider.state import UserState, seen_key

log = logging.getLogger("samtuner.streams.decider.batch")

Outgoing = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class DecidedBatch:
    outgoing: list[Outgoing] = field(default_factory=list)
    suppressed: int = 0
    decided: int = 0
    skipped: int = 0
    dead_letters: int = 0
    # Why inputs left no output: 'position' (handled before, at this offset), 'redelivery' (the same
    # event again), 'erased' (an event of an erased user replayed), 'other_role' (a command for others)
    skips: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    # (topic, partition) -> offsets Faust never delivered, read from the log and handled here
    recovered: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    # partition -> the state writes (key, value or None for a tombstone), in order, made after the
    # outputs are acked
    journal: dict[int, list[Write]] = field(default_factory=dict)


class BatchDecider:
    def __init__(
        self,
        settings: DecideSettings,
        memory: DeciderMemory,
        topics: Topics,
        hasher: MinHasher,
        indexes: UserIndexes,
        output_mark: Callable[[str, int], tuple[int, int]],
        read_range: Callable[[str, int, int, int], list[RawMessage]],
        resume_offset: Callable[[str, int], int],
    ) -> None:
        self.settings = settings
        self.memory = memory
        self.topics = topics
        self.hasher = hasher
        self.indexes = indexes
        self.output_mark = output_mark
        self.read_range = read_range
        self.resume_offset = resume_offset

    def decide(self, batch: list[RawMessage]) -> DecidedBatch:
        """Decide every message of the batch in order. The in-memory state moves on; the caller
        writes ``result.journal`` once the outputs are durable, or calls ``memory.forget()``."""
        result = DecidedBatch()
        for delivered in batch:
            for msg in self._in_order(delivered, result):
                with correlation(None):  # _one marks the event's correlation id once it is decoded
                    try:
                        self._one(msg, result)
                    except Exception as exc:  # a bug must not stop the worker or lose the message
                        log.exception("decider failed on %s/%d@%d", msg.topic, msg.partition, msg.offset)
                        self._dead_letter(msg, "internal_error", f"{type(exc).__name__}: {exc}", result)
        for state in self.memory.touched():
            result.journal[state.partition] = self.memory.drain_writes(state)
        return result

    def _in_order(self, msg: RawMessage, result: DecidedBatch) -> list[RawMessage]:
        """The events to handle for ``msg``, in offset order: none when it was handled before, else
        the events of its partition that were never delivered, then ``msg``."""
        part = self.memory.partition(msg.partition)
        last = part.through.get(msg.topic)
        if last is None:  # nothing handled here yet: the first event is where the group resumes
            last = min(self.resume_offset(msg.topic, msg.partition), msg.offset) - 1
        todo = [msg]
        if msg.offset <= last:
            result.skipped += 1  # handled before: its outputs are durable
            result.skips["position"] += 1
            return []
        if msg.offset > last + 1:
            missing = self.read_range(msg.topic, msg.partition, last + 1, msg.offset)
            if missing:
                log.warning(
                    "%s[%d]: %d events before offset %d were not delivered; read them from the log",
                    msg.topic,
                    msg.partition,
                    len(missing),
                    msg.offset,
                )
                result.recovered.setdefault((msg.topic, msg.partition), []).extend(m.offset for m in missing)
                todo = [*missing, msg]
        part.put_through(msg.topic, msg.offset)
        return todo

    def _one(self, msg: RawMessage, result: DecidedBatch) -> None:
        source = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        part = self.memory.partition(msg.partition)
        if msg.topic == self.topics.control:
            try:
                cmd = decode_command(msg.value)
            except EventDecodeError as exc:
                self._dead_letter(msg, exc.reason, exc.detail, result)
                return
            mark(cmd.command_id)
            state = part.user(cmd.user_id)
            cid = str(cmd.command_id)
            seen = part.sighting(seen_key(cmd.user_id, "c", cid))
            decision = decide_command(
                cmd,
                source,
                state,
                self._command_pair(cmd, state, part),
                self.settings,
                seen_before=seen is not None or part.is_spent(cmd.user_id, "c", cid),
                seen_content=seen.content if seen else "",
                held=part.holdings(cmd.user_id) if isinstance(cmd, EraseUser) else None,
                known_pairs=self._known_pairs(cmd, state, part),
            )
            self._apply(msg, part, cmd.user_id, state, decision, None, result, source)
            return
        try:
            fb = decode_as(msg.value, FeedbackReceived)
        except EventDecodeError as exc:
            self._dead_letter(msg, exc.reason, exc.detail, result)
            return
        mark(fb.correlation_id)
        state = part.user(fb.user_id)
        lookups, minhash = self._lookups(fb, state, part)
        decision = decide_feedback(fb, source, state, lookups, self.settings)
        self._apply(msg, part, fb.user_id, state, decision, minhash, result, source)

    def _command_pair(self, cmd: Command, state: UserState, part: PartitionState) -> Any:
        if isinstance(cmd, DeactivatePair | ReweightPair):
            pair = part.sighting(seen_key(cmd.user_id, "p", str(cmd.pair_id)))
            return pair if pair is not None and pair.epoch == state.epoch else None
        return None

    def _known_pairs(self, cmd: Command, state: UserState, part: PartitionState) -> frozenset[uuid.UUID]:
        if not isinstance(cmd, DeactivatePairs | ReweightPairs):
            return frozenset()
        known = set()
        for pid in cmd.pair_ids:
            pair = part.sighting(seen_key(cmd.user_id, "p", str(pid)))
            if pair is not None and pair.epoch == state.epoch:
                known.add(pid)
        return frozenset(known)

    def _lookups(self, fb: FeedbackReceived, state: UserState, part: PartitionState) -> tuple[Lookups, Any]:
        user, epoch = fb.user_id, state.epoch
        feedback = part.sighting(seen_key(user, "f", str(fb.event_id)))
        if feedback is not None:
            return Lookups(feedback=feedback), None  # a replay (or a conflict): nothing else matters
        if part.is_spent(user, "f", str(fb.event_id)):
            return Lookups(spent=True), None
        if not is_pair(fb):
            return Lookups(example=part.sighting(seen_key(user, "x", example_key_for(fb)))), None
        keys = pair_keys_for(fb)
        key, reverse = keys if keys else (None, None)
        pair = part.sighting(seen_key(user, "p", key)) if key else None
        reversed_pair = part.sighting(seen_key(user, "p", reverse)) if reverse else None
        near, minhash = None, None
        fresh = pair is None or pair.epoch != epoch
        if fresh and fb.corrected_response is not None and _comparable(fb, self.settings):
            minhash = self.hasher.minhash(pair_text(fb.prompt, fb.corrected_response, fb.original_response))
            lsh, members = self.indexes.get(user, (epoch, state.sig_count), lambda: part.user_signatures(user, state))
            near = nearest(lsh, members, minhash, self.settings.quality.near_duplicate_jaccard)
        return Lookups(pair=pair, reversed_pair=reversed_pair, near_duplicate=near, pair_key=key), minhash

    def _apply(
        self,
        msg: RawMessage,
        part: PartitionState,
        user: str,
        before: UserState,
        decision: Decision,
        minhash: Any,
        result: DecidedBatch,
        source: SourceRef,
    ) -> None:
        if decision.dead_letter is not None:
            dl = decision.dead_letter
            self._dead_letter(msg, dl.reason, dl.detail, result, dl.headers)
        elif decision.skip is not None:
            result.skipped += 1
            result.skips[decision.skip] += 1
        result.decided += 1
        durable = self.output_mark(source.topic, source.partition)
        for index, event in enumerate(decision.events):
            if (source.offset, index) <= durable:
                result.suppressed += 1  # already in the output log
            else:
                result.outgoing.append(_out(self.topics.pairs, event, source, index))
        for key, sighting in decision.sightings:
            part.put_sighting(key, sighting)
        after = decision.state
        if decision.forget:
            part.forget_user(user, after)
            self.indexes.forget(user)
            return
        if decision.signature_for is not None and minhash is not None:
            left = part.put_signature(
                user, after.sig_count - 1, decision.signature_for, minhash.hashvalues, after.epoch, after
            )
            # The cached index follows the ring: the signatures it dropped leave the index too.
            self.indexes.add(user, (after.epoch, after.sig_count), decision.signature_for, minhash, removed=left)
        elif after.epoch != before.epoch:
            self.indexes.forget(user)
        if after != before:
            part.put_user(user, after)

    def _dead_letter(
        self, msg: RawMessage, reason: str, detail: str, result: DecidedBatch, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        result.dead_letters += 1
        result.dead_letter_reasons[reason] += 1
        headers = dead_letter_headers(msg, "decider", reason, detail) + [(k, v.encode()) for k, v in extra]
        result.outgoing.append((self.topics.dlq, msg.key, msg.value, headers))


def _comparable(fb: FeedbackReceived, settings: DecideSettings) -> bool:
    """Near-duplicate search only for texts within the length limits (huge texts are rejected anyway)."""
    limit = settings.quality.response_chars[1]
    return (
        len(fb.prompt) <= settings.quality.prompt_chars[1]
        and len(fb.original_response) <= limit
        and len(fb.corrected_response or "") <= limit
    )


def _out(topic: str, event: Event, source: SourceRef, index: int) -> Outgoing:
    headers = encode_headers(event) + source_headers(source.topic, source.partition, source.offset, index)
    return topic, encode_key(event), encode_value(event), headers
