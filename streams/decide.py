"""The decider: feedback and commands in, events out. Pure: no Kafka, no tables, no clock.

The agent reads what the decision needs from its tables (the user's state and the sightings in
``Lookups``), calls ``decide_feedback`` or ``decide_command``, and gets back the events to emit, the
user's next state and the sightings to store. Re-delivery is handled with the state and sightings:

* an event whose offset the state already holds is skipped by the agent (its outputs are durable);
* the same feedback event at another offset (a replay) changes nothing;
* another feedback event with the same pair is rejected as ``duplicate_pair``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
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
    UserErased,
)
from schemas.ids import derived_event_id, example_id, pair_id_from_keys, text_key, threshold_event_id
from streams.quality import assess_example, assess_pair, reason
from streams.state import Sighting, UserState, seen_key

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class DecideSettings:
    min_new_pairs: int
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


@dataclass(frozen=True)
class Decision:
    events: tuple[Event, ...]
    state: UserState
    sightings: tuple[tuple[str, Sighting], ...] = ()
    signature_for: str | None = None  # store this pair's MinHash signature (at index state.sig_count - 1)


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
    if lookups.feedback is not None:
        return Decision((), state)  # this very event was processed before (a replay): nothing new
    here = Sighting(source.partition, source.offset, str(fb.event_id), state.epoch)
    decision = (_decide_pair(fb, source, state, here, lookups, settings) if is_pair(fb)
                else _decide_example(fb, source, state, here, lookups, settings))
    # Every processed event is remembered by its id, whatever became of it.
    event_seen = (seen_key(fb.user_id, "f", str(fb.event_id)), here)
    return Decision(decision.events, decision.state, (*decision.sightings, event_seen), decision.signature_for)


def _decide_pair(fb: FeedbackReceived, source: SourceRef, state: UserState, here: Sighting, lookups: Lookups,
                 settings: DecideSettings) -> Decision:
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
        reasons.append(reason("contradiction", "an earlier pair of this user prefers the opposite answer "
                                               f"(feedback {reversed_pair.feedback_event_id})"))
    if reasons:
        return Decision((_rejected(fb, source, reasons, assessment.quality, settings),), state)
    assert key is not None and assessment.quality is not None
    metadata: dict[str, Any] = {f"context.{k}": v for k, v in sorted(fb.context.items())}
    metadata.update(near_identical=assessment.near_identical, similarity=assessment.similarity or 0.0)
    accepted = _accepted(fb, source, key, assessment.quality, metadata)
    sightings = ((seen_key(fb.user_id, "p", key), here),)
    new_pairs = state.new_pairs + 1
    sig_count = state.sig_count + 1
    if new_pairs < settings.min_new_pairs:
        return Decision((accepted,), _with(state, new_pairs=new_pairs, sig_count=sig_count), sightings, key)
    generation = state.generation + 1
    threshold = _threshold(fb.user_id, fb.correlation_id, generation, new_pairs, "threshold", fb.occurred_at, source)
    return Decision((accepted, threshold), _with(state, generation=generation, new_pairs=0, sig_count=sig_count),
                    sightings, key)


def _decide_example(fb: FeedbackReceived, source: SourceRef, state: UserState, here: Sighting, lookups: Lookups,
                    settings: DecideSettings) -> Decision:
    reasons = assess_example(fb, settings.quality, settings.count_tokens)
    example = _current(lookups.example, state)
    if example is not None:
        reasons.append(reason("duplicate_example",
                              f"the same labelled example came from feedback {example.feedback_event_id}"))
    if reasons:
        return Decision((_rejected(fb, source, reasons, None, settings),), state)
    key = example_key_for(fb)
    accepted = LabelledExampleAccepted(
        event_id=derived_event_id("example-accepted", key),
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
    return Decision((accepted,), state, ((seen_key(fb.user_id, "x", key), here),))


def _current(sighting: Sighting | None, state: UserState) -> Sighting | None:
    """The sighting if it belongs to the user's current epoch (erased data is nobody's duplicate)."""
    return sighting if sighting is not None and sighting.epoch == state.epoch else None


def _with(state: UserState, **changes: Any) -> UserState:
    return replace(state, **changes)


# --- commands ---------------------------------------------------------------------------------------


OWN_COMMANDS = (RequestTraining, DeactivatePair, ReweightPair, DeactivatePairs, ReweightPairs, EraseUser)


def decide_command(
    cmd: Command, source: SourceRef, state: UserState, pair: Sighting | None, settings: DecideSettings,
    seen_before: bool = False, known_pairs: frozenset[uuid.UUID] = frozenset(),
) -> Decision:
    """Commands the decider owns: RequestTraining, DeactivatePair(s), ReweightPair(s), EraseUser.

    ``pair`` is the sighting of the command's pair (current epoch), for the pair commands; for the
    bulk ones ``known_pairs`` holds those of the listed ids that the user has in the current epoch.
    ``seen_before`` says this command id was carried out already (a repeated command is a no-op).
    Other commands (for trainers or the adapter registry) change nothing here.
    """
    cid = str(cmd.command_id)
    if seen_before or not isinstance(cmd, OWN_COMMANDS):
        return Decision((), state)
    done = ((seen_key(cmd.user_id, "c", cid), Sighting(source.partition, source.offset, cid, 0)),)
    common: dict[str, Any] = {"user_id": cmd.user_id, "correlation_id": cmd.command_id, "occurred_at": cmd.issued_at}
    if isinstance(cmd, RequestTraining):
        generation = state.generation + 1
        event = _threshold(cmd.user_id, cmd.command_id, generation, state.new_pairs, "manual", cmd.issued_at, source,
                           cmd.dpo_overrides)
        return Decision((event,), _with(state, generation=generation, new_pairs=0), done)
    if isinstance(cmd, DeactivatePairs | ReweightPairs):
        return Decision(_bulk(cmd, known_pairs, common), state, done)
    if isinstance(cmd, DeactivatePair | ReweightPair):
        if pair is None:
            rejected = CommandRejected(event_id=derived_event_id("command-rejected", cid), command_id=cmd.command_id,
                                       command_type=cmd.command_type, reason=f"no pair {cmd.pair_id} for this user",
                                       **common)
            return Decision((rejected,), state, done)
        if isinstance(cmd, DeactivatePair):
            return Decision((PairDeactivated(event_id=derived_event_id("pair-deactivated", cid), pair_id=cmd.pair_id,
                                             command_id=cmd.command_id, **common),), state, done)
        return Decision((PairReweighted(event_id=derived_event_id("pair-reweighted", cid), pair_id=cmd.pair_id,
                                        training_weight=cmd.training_weight, command_id=cmd.command_id, **common),),
                        state, done)
    erased = UserErased(event_id=derived_event_id("user-erased", cid), command_id=cmd.command_id, **common)
    # Generations keep counting (request ids must never repeat); sightings and signatures of the old
    # epoch stop counting, so the same corrections can be accepted again later. Command sightings
    # ignore epochs (epoch 0 always), so a repeated erase stays a no-op.
    return Decision((erased,), _with(state, epoch=state.epoch + 1, new_pairs=0, sig_base=state.sig_count), done)


# --- events -----------------------------------------------------------------------------------------


def _accepted(fb: FeedbackReceived, source: SourceRef, key: str, quality: float,
              metadata: dict[str, Any]) -> PairAccepted:
    assert fb.corrected_response is not None
    return PairAccepted(
        event_id=derived_event_id("pair-accepted", key),
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


def _rejected(fb: FeedbackReceived, source: SourceRef, reasons: list[RejectionReason], quality: float | None,
              settings: DecideSettings) -> PairRejected:
    cut = settings.preview_chars
    return PairRejected(
        event_id=derived_event_id("pair-rejected", str(fb.event_id)),
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


def _bulk(cmd: DeactivatePairs | ReweightPairs, known: frozenset[uuid.UUID],
          common: dict[str, Any]) -> tuple[Event, ...]:
    """One event for the known pairs (in the command's order), one CommandRejected naming the unknown ones."""
    cid = str(cmd.command_id)
    ids = tuple(dict.fromkeys(p for p in cmd.pair_ids if p in known))
    unknown = [p for p in dict.fromkeys(cmd.pair_ids) if p not in known]
    out: list[Event] = []
    if isinstance(cmd, DeactivatePairs) and ids:
        out.append(PairsDeactivated(event_id=derived_event_id("pairs-deactivated", cid), pair_ids=ids,
                                    command_id=cmd.command_id, filter=cmd.filter, **common))
    elif isinstance(cmd, ReweightPairs) and ids:
        out.append(PairsReweighted(event_id=derived_event_id("pairs-reweighted", cid), pair_ids=ids,
                                   training_weight=cmd.training_weight, command_id=cmd.command_id, filter=cmd.filter,
                                   **common))
    if unknown:
        shown = ", ".join(str(p) for p in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        out.append(CommandRejected(event_id=derived_event_id("command-rejected", cid), command_id=cmd.command_id,
                                   command_type=cmd.command_type,
                                   reason=f"{len(unknown)} of {len(cmd.pair_ids)} pairs unknown for this user: {shown}",
                                   **common))
    return tuple(out)


def _threshold(user_id: str, correlation_id: uuid.UUID, generation: int, new_pairs: int,
               trigger: Literal["threshold", "manual"],
               at: Any, source: SourceRef, dpo_overrides: dict[str, int | float] | None = None,
               ) -> TrainingThresholdReached:
    return TrainingThresholdReached(
        event_id=threshold_event_id(user_id, generation),
        occurred_at=at,
        user_id=user_id,
        correlation_id=correlation_id,
        generation=generation,
        new_pairs=new_pairs,
        trigger=trigger,
        triggered_at=at,
        through=source,
        dpo_overrides=dpo_overrides or {},
    )
