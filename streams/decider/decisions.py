"""The decider: feedback and commands in, events out. Pure: no Kafka, no tables, no clock.

The agent reads what the decision needs from its tables (the user's state and the sightings in
``Lookups``), calls ``decide_feedback`` or ``decide_command``, and gets back the events to emit, the
user's next state and the sightings to store. Re-delivery is handled with the state and sightings:

* an event at an offset its partition's head already covers is skipped by the agent (its outputs
  are durable);
* the same feedback event at another offset (a replay, or a producer's retry) changes nothing: a
  counted skip (``redelivery``);
* an event id seen before with *other* content is not a redelivery: it is dead-lettered as
  ``conflicting_event_id`` (``conflicting_command_id`` on the control topic), with both contents'
  hashes, so that a producer reusing ids loses nothing silently;
* another feedback event with the same pair is rejected as ``duplicate_pair``.

So every input leaves a record: an output event (with its source position in the headers), a dead
letter, or a counted skip (``Decision.skip``) whose reason says why there is nothing to emit.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from schemas.commands import (
    Command,
    DeactivatePair,
    DeactivatePairs,
    EraseUser,
    RequestTraining,
    ReweightPair,
    ReweightPairs,
)
from schemas.config import QualitySettings
from schemas.events import (
    CommandRejected,
    Event,
    FeedbackReceived,
    LabelledExampleAccepted,
    PairAccepted,
    PairDeactivated,
    PairRejected,
    PairReweighted,
    PairsDeactivated,
    PairsReweighted,
    RejectionReason,
    SourceRef,
    TrainingThresholdReached,
    UserForgotten,
)
from schemas.ids import derived_event_id, example_id, pair_id_from_keys, text_key, threshold_event_id
from streams.decider.quality import assess_example, assess_pair, reason
from streams.decider.state import Sighting, UserState, seen_key

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class DecideSettings:
    min_new_pairs: int
    min_new_examples: int = 0  # labelled examples that trigger training (KTO) on their own; 0 = never
    quality: QualitySettings = field(default_factory=QualitySettings)
    preview_chars: int = 2000
    count_tokens: TokenCounter = len  # byte-level BPE never exceeds bytes; the agent passes the real one


@dataclass(frozen=True)
class Lookups:
    """What the agent read for this event. Sightings of any epoch: a sighting of an erased epoch still
    tells that this very event was processed (a replay is a no-op, erased data stays erased), but it
    is no longer a duplicate of anything."""

    pair: Sighting | None = None  # this pair, seen before
    reversed_pair: Sighting | None = None  # the same prompt with chosen and rejected swapped
    example: Sighting | None = None  # this labelled example, seen before
    feedback: Sighting | None = None  # this very feedback event, processed before
    near_duplicate: tuple[str, float] | None = None  # an earlier pair's key and estimated Jaccard
    pair_key: str | None = None  # this pair's id, when the agent computed it already
    spent: bool = False  # this event id was handled before its user was erased


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Decision:
    events: tuple[Event, ...]
    state: UserState
    sightings: tuple[tuple[str, Sighting], ...] = ()
    signature_for: str | None = None  # store this pair's MinHash signature (at index state.sig_count - 1)
    dead_letter: DeadLetter | None = None  # the input goes to the dead-letter topic, with this reason
    skip: str | None = None  # nothing to emit, and why: redelivery, erased, other_role
    forget: bool = False  # drop everything the state holds of the user (EraseUser), keep ``state``


# ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``'s encoder: the same text, without building
# an encoder per call. Never change its options: the hashes are stored (sightings' ``content``).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_FEEDBACK_STAMP, _COMMAND_STAMP = {"occurred_at"}, {"issued_at"}


def content_hash(item: FeedbackReceived | Command) -> str:
    """What makes two messages with one id the same message: everything but the time it was stamped
    (a producer that builds a retry anew stamps it again)."""
    stamp = _FEEDBACK_STAMP if isinstance(item, FeedbackReceived) else _COMMAND_STAMP
    canonical = _CANONICAL.encode(item.model_dump(mode="json", exclude=stamp))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _conflict(kind: str, ident: str, first: str, this: str) -> DeadLetter:
    return DeadLetter(
        f"conflicting_{kind}_id",
        f"{kind} id {ident} was seen before with other content (sha256/128 {first}, now {this}): "
        "a producer reused an id; this message was not applied",
        (("dlq.content_sha256.first", first), ("dlq.content_sha256.this", this)),
    )


def is_pair(fb: FeedbackReceived) -> bool:
    """Corrections become pairs; thumbs without a correction become labelled examples."""
    return fb.feedback_type == "correction" or fb.corrected_response is not None


def pair_keys_for(fb: FeedbackReceived) -> tuple[str, str] | None:
    """(this pair's id, the id of the same pair with chosen and rejected swapped), or None."""
    if fb.corrected_response is None:
        return None
    p, c, r = text_key(fb.prompt), text_key(fb.corrected_response), text_key(fb.original_response)
    return str(pair_id_from_keys(fb.user_id, p, c, r)), str(pair_id_from_keys(fb.user_id, p, r, c))


def pair_key_for(fb: FeedbackReceived) -> str | None:
    keys = pair_keys_for(fb)
    return keys[0] if keys else None


def example_key_for(fb: FeedbackReceived) -> str:
    return str(example_id(fb.user_id, fb.prompt, fb.original_response, fb.feedback_type == "thumbs_up"))


# --- feedback ---------------------------------------------------------------------------------------


def decide_feedback(
    fb: FeedbackReceived, source: SourceRef, state: UserState, lookups: Lookups, settings: DecideSettings
) -> Decision:
    content = content_hash(fb)
    if lookups.feedback is not None:
        first = lookups.feedback.content
        if first and first != content:
            return Decision((), state, dead_letter=_conflict("event", str(fb.event_id), first, content))
        return Decision((), state, skip="redelivery")  # this very event was processed before: nothing new
    if lookups.spent:
        return Decision((), state, skip="erased")  # handled before its user was erased: stays erased
    here = Sighting(source.partition, source.offset, str(fb.event_id), state.epoch, content)
    decision = (
        _decide_pair(fb, source, state, here, lookups, settings)
        if is_pair(fb)
        else _decide_example(fb, source, state, here, lookups, settings)
    )
    # Every processed event is remembered by its id and content, whatever became of it.
    event_seen = (seen_key(fb.user_id, "f", str(fb.event_id)), here)
    return Decision(decision.events, decision.state, (*decision.sightings, event_seen), decision.signature_for)


def _decide_pair(
    fb: FeedbackReceived,
    source: SourceRef,
    state: UserState,
    here: Sighting,
    lookups: Lookups,
    settings: DecideSettings,
) -> Decision:
    key = lookups.pair_key or pair_key_for(fb)
    assessment = assess_pair(fb, settings.quality, settings.count_tokens)
    reasons = list(assessment.reasons)
    pair, reversed_pair = _current(lookups.pair, state), _current(lookups.reversed_pair, state)
    if pair is not None:
        reasons.append(reason("duplicate_pair", f"the same pair came from feedback {pair.feedback_event_id}"))
    elif lookups.near_duplicate is not None and reversed_pair is None:  # a reversal is the better reason
        other, jaccard = lookups.near_duplicate
        reasons.append(reason("near_duplicate", f"estimated Jaccard {jaccard:.2f} with earlier pair {other}"))
    if reversed_pair is not None:
        reasons.append(
            reason(
                "contradiction",
                "an earlier pair of this user prefers the opposite answer "
                f"(feedback {reversed_pair.feedback_event_id})",
            )
        )
    if reasons:
        return Decision((_rejected(fb, source, reasons, assessment.quality, settings, state.epoch),), state)
    assert key is not None and assessment.quality is not None
    metadata: dict[str, Any] = {f"context.{k}": v for k, v in sorted(fb.context.items())}
    metadata.update(near_identical=assessment.near_identical, similarity=assessment.similarity or 0.0)
    accepted = _accepted(fb, source, key, assessment.quality, metadata, state.epoch)
    sightings = ((seen_key(fb.user_id, "p", key), here),)
    new_pairs = state.new_pairs + 1
    sig_count = state.sig_count + 1
    if new_pairs < settings.min_new_pairs:
        return Decision((accepted,), _with(state, new_pairs=new_pairs, sig_count=sig_count), sightings, key)
    generation = state.generation + 1
    threshold = _threshold(
        fb.user_id,
        fb.correlation_id,
        generation,
        new_pairs,
        "threshold",
        fb.occurred_at,
        source,
        new_examples=state.new_examples,
    )
    return Decision(
        (accepted, threshold),
        _with(state, generation=generation, new_pairs=0, new_examples=0, sig_count=sig_count),
        sightings,
        key,
    )


def _decide_example(
    fb: FeedbackReceived,
    source: SourceRef,
    state: UserState,
    here: Sighting,
    lookups: Lookups,
    settings: DecideSettings,
) -> Decision:
    reasons = assess_example(fb, settings.quality, settings.count_tokens)
    example = _current(lookups.example, state)
    if example is not None:
        reasons.append(
            reason("duplicate_example", f"the same labelled example came from feedback {example.feedback_event_id}")
        )
    if reasons:
        return Decision((_rejected(fb, source, reasons, None, settings, state.epoch),), state)
    key = example_key_for(fb)
    accepted = LabelledExampleAccepted(
        event_id=_event_id("example-accepted", key, state.epoch),
        occurred_at=fb.occurred_at,
        user_id=fb.user_id,
        correlation_id=fb.correlation_id,
        example_id=uuid.UUID(key),
        feedback_event_id=fb.event_id,
        prompt=fb.prompt,
        response=fb.original_response,
        desirable=fb.feedback_type == "thumbs_up",
        confidence_score=fb.confidence_score,
        created_at=fb.occurred_at,
        metadata={f"context.{k}": v for k, v in sorted(fb.context.items())},
        source=source,
    )
    sightings = ((seen_key(fb.user_id, "x", key), here),)
    new_examples = state.new_examples + 1
    if settings.min_new_examples <= 0 or new_examples < settings.min_new_examples:
        return Decision((accepted,), _with(state, new_examples=new_examples), sightings)
    # A thumbs-only user trains too (training.method auto -> kto): the snapshot holds their examples.
    generation = state.generation + 1
    threshold = _threshold(
        fb.user_id,
        fb.correlation_id,
        generation,
        state.new_pairs,
        "threshold",
        fb.occurred_at,
        source,
        new_examples=new_examples,
    )
    return Decision((accepted, threshold), _with(state, generation=generation, new_pairs=0, new_examples=0), sightings)


def _current(sighting: Sighting | None, state: UserState) -> Sighting | None:
    """The sighting if it belongs to the user's current epoch (erased data is nobody's duplicate)."""
    return sighting if sighting is not None and sighting.epoch == state.epoch else None


def _with(state: UserState, **changes: Any) -> UserState:
    return replace(state, **changes)


# --- commands ---------------------------------------------------------------------------------------


OWN_COMMANDS = (RequestTraining, DeactivatePair, ReweightPair, DeactivatePairs, ReweightPairs, EraseUser)


def decide_command(
    cmd: Command,
    source: SourceRef,
    state: UserState,
    pair: Sighting | None,
    settings: DecideSettings,
    seen_before: bool = False,
    seen_content: str = "",
    held: Mapping[str, int] | None = None,
    known_pairs: frozenset[uuid.UUID] = frozenset(),
) -> Decision:
    """Commands the decider owns: RequestTraining, DeactivatePair(s), ReweightPair(s), EraseUser.

    ``pair`` is the sighting of the command's pair (current epoch), for the pair commands; for the
    bulk ones ``known_pairs`` holds those of the listed ids that the user has in the current epoch.
    ``seen_before`` says this command id was carried out already (a repeated command is a no-op),
    ``seen_content`` the hash of that command's content (a different one is a conflict);
    ``held`` what the state holds of the user (reported when they are erased). Other commands (for
    trainers or the adapter registry) change nothing here.
    """
    cid = str(cmd.command_id)
    if not isinstance(cmd, OWN_COMMANDS):
        return Decision((), state, skip="other_role")
    content = content_hash(cmd)
    if seen_before:
        if seen_content and seen_content != content:
            return Decision((), state, dead_letter=_conflict("command", cid, seen_content, content))
        return Decision((), state, skip="redelivery")
    done = ((seen_key(cmd.user_id, "c", cid), Sighting(source.partition, source.offset, cid, 0, content)),)
    common: dict[str, Any] = {"user_id": cmd.user_id, "correlation_id": cmd.command_id, "occurred_at": cmd.issued_at}
    if isinstance(cmd, RequestTraining):
        generation = state.generation + 1
        event = _threshold(
            cmd.user_id,
            cmd.command_id,
            generation,
            state.new_pairs,
            "manual",
            cmd.issued_at,
            source,
            cmd.dpo_overrides,
            new_examples=state.new_examples,
        )
        return Decision((event,), _with(state, generation=generation, new_pairs=0, new_examples=0), done)
    if isinstance(cmd, DeactivatePairs | ReweightPairs):
        return Decision(_bulk(cmd, known_pairs, common), state, done)
    if isinstance(cmd, DeactivatePair | ReweightPair):
        if pair is None:
            rejected = CommandRejected(
                event_id=derived_event_id("command-rejected", cid),
                command_id=cmd.command_id,
                command_type=cmd.command_type,
                reason=f"no pair {cmd.pair_id} for this user",
                **common,
            )
            return Decision((rejected,), state, done)
        if isinstance(cmd, DeactivatePair):
            return Decision(
                (
                    PairDeactivated(
                        event_id=derived_event_id("pair-deactivated", cid),
                        pair_id=cmd.pair_id,
                        command_id=cmd.command_id,
                        **common,
                    ),
                ),
                state,
                done,
            )
        return Decision(
            (
                PairReweighted(
                    event_id=derived_event_id("pair-reweighted", cid),
                    pair_id=cmd.pair_id,
                    training_weight=cmd.training_weight,
                    command_id=cmd.command_id,
                    **common,
                ),
            ),
            state,
            done,
        )
    forgotten = UserForgotten(
        event_id=derived_event_id("user-forgotten", cid), command_id=cmd.command_id, decider=dict(held or {}), **common
    )
    # Everything of the user goes (``forget``), but their counters: generations keep counting (request
    # ids must never repeat) and the epoch moves on, so the same corrections can be accepted again later.
    # The ids they had are kept as one-way hashes, so a replay of the log stays erased.
    return Decision(
        (forgotten,),
        _with(state, epoch=state.epoch + 1, new_pairs=0, new_examples=0, sig_base=state.sig_count),
        done,
        forget=True,
    )


# --- events -----------------------------------------------------------------------------------------


def _event_id(kind: str, key: str, epoch: int) -> uuid.UUID:
    """Ids of decisions: the same across replays; after an erasure (epoch > 0) the same correction
    decided again is a new fact, with a new id."""
    return derived_event_id(kind, key) if epoch == 0 else derived_event_id(kind, key, f"epoch:{epoch}")


def _accepted(
    fb: FeedbackReceived, source: SourceRef, key: str, quality: float, metadata: dict[str, Any], epoch: int
) -> PairAccepted:
    assert fb.corrected_response is not None
    return PairAccepted(
        event_id=_event_id("pair-accepted", key, epoch),
        occurred_at=fb.occurred_at,
        user_id=fb.user_id,
        correlation_id=fb.correlation_id,
        pair_id=uuid.UUID(key),
        feedback_event_id=fb.event_id,
        prompt=fb.prompt,
        chosen_response=fb.corrected_response,
        rejected_response=fb.original_response,
        confidence_score=fb.confidence_score,
        quality_score=quality,
        feedback_type=fb.feedback_type,
        created_at=fb.occurred_at,
        metadata=metadata,
        source=source,
    )


def _rejected(
    fb: FeedbackReceived,
    source: SourceRef,
    reasons: list[RejectionReason],
    quality: float | None,
    settings: DecideSettings,
    epoch: int,
) -> PairRejected:
    cut = settings.preview_chars
    return PairRejected(
        event_id=_event_id("pair-rejected", str(fb.event_id), epoch),
        occurred_at=fb.occurred_at,
        user_id=fb.user_id,
        correlation_id=fb.correlation_id,
        feedback_event_id=fb.event_id,
        feedback_type=fb.feedback_type,
        reasons=tuple(reasons),
        quality_score=quality,
        prompt=fb.prompt[:cut],
        chosen_response=(fb.corrected_response or "")[:cut],
        rejected_response=fb.original_response[:cut],
        created_at=fb.occurred_at,
        source=source,
    )


def _bulk(
    cmd: DeactivatePairs | ReweightPairs, known: frozenset[uuid.UUID], common: dict[str, Any]
) -> tuple[Event, ...]:
    """One event for the known pairs (in the command's order), one CommandRejected naming the unknown ones."""
    cid = str(cmd.command_id)
    ids = tuple(dict.fromkeys(p for p in cmd.pair_ids if p in known))
    unknown = [p for p in dict.fromkeys(cmd.pair_ids) if p not in known]
    out: list[Event] = []
    if isinstance(cmd, DeactivatePairs) and ids:
        out.append(
            PairsDeactivated(
                event_id=derived_event_id("pairs-deactivated", cid),
                pair_ids=ids,
                command_id=cmd.command_id,
                filter=cmd.filter,
                **common,
            )
        )
    elif isinstance(cmd, ReweightPairs) and ids:
        out.append(
            PairsReweighted(
                event_id=derived_event_id("pairs-reweighted", cid),
                pair_ids=ids,
                training_weight=cmd.training_weight,
                command_id=cmd.command_id,
                filter=cmd.filter,
                **common,
            )
        )
    if unknown:
        shown = ", ".join(str(p) for p in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        out.append(
            CommandRejected(
                event_id=derived_event_id("command-rejected", cid),
                command_id=cmd.command_id,
                command_type=cmd.command_type,
                reason=f"{len(unknown)} of {len(cmd.pair_ids)} pairs unknown for this user: {shown}",
                **common,
            )
        )
    return tuple(out)


def _threshold(
    user_id: str,
    correlation_id: uuid.UUID,
    generation: int,
    new_pairs: int,
    trigger: Literal["threshold", "manual"],
    at: Any,
    source: SourceRef,
    dpo_overrides: dict[str, int | float] | None = None,
    new_examples: int = 0,
) -> TrainingThresholdReached:
    return TrainingThresholdReached(
        event_id=threshold_event_id(user_id, generation),
        occurred_at=at,
        user_id=user_id,
        correlation_id=correlation_id,
        generation=generation,
        new_pairs=new_pairs,
        new_examples=new_examples,
        trigger=trigger,
        triggered_at=at,
        through=source,
        dpo_overrides=dpo_overrides or {},
    )
