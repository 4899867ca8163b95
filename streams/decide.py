"""The decider: feedback in, pair events out. Pure: no Kafka, no tables, no clock.

``decide`` takes one feedback event, where it was read, what the user's state and the pair's
earlier sighting are, and returns the events to emit and the state to store. Re-delivery is
handled here, so the agent around it stays a loop of decode, call, send:

* the same position again (a crash before the commit) -> the same events again, same ids;
* the same feedback event at another position (a replay) -> nothing new;
* another feedback event with the same pair -> ``PairRejected`` with ``duplicate_pair``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from schemas.events import (
    Event,
    FeedbackReceived,
    PairAccepted,
    PairRejected,
    RejectionReason,
    SourceRef,
    TrainingThresholdReached,
)
from schemas.ids import derived_event_id, pair_id, threshold_event_id
from streams.checks import basic_checks
from streams.state import SeenPair, UserState


@dataclass(frozen=True)
class DecideSettings:
    min_new_pairs: int
    preview_chars: int = 2000


@dataclass(frozen=True)
class Decision:
    events: tuple[Event, ...]
    state: UserState
    seen: SeenPair | None = None  # write this sighting of ``pair_key`` when set
    pair_key: str | None = None


def pair_key_for(fb: FeedbackReceived) -> str | None:
    if fb.corrected_response is None:
        return None
    return str(pair_id(fb.user_id, fb.prompt, fb.corrected_response, fb.original_response))


def decide(
    fb: FeedbackReceived,
    source: SourceRef,
    state: UserState,
    seen: SeenPair | None,
    settings: DecideSettings,
) -> Decision:
    replayed = state.applied(source.partition, source.offset)
    next_state = state if replayed else state.advanced(source.partition, source.offset)

    reasons = basic_checks(fb)
    if reasons:
        return Decision((_rejected(fb, source, reasons, settings),), next_state)

    key = pair_key_for(fb)
    assert key is not None  # basic_checks guarantees a correction
    here = seen is not None and (seen.partition, seen.offset) == (source.partition, source.offset)
    if seen is not None and not here:
        if seen.feedback_event_id == str(fb.event_id):
            return Decision((), next_state)  # the same event delivered again (replay): nothing new
        duplicate = RejectionReason(
            code="duplicate_pair",
            detail=f"the same pair came from feedback {seen.feedback_event_id} "
                   f"(partition {seen.partition}, offset {seen.offset})",
        )
        return Decision((_rejected(fb, source, [duplicate], settings),), next_state)

    accepted = _accepted(fb, source, key)
    if replayed:
        # Our state already holds this event: emit exactly what we emitted the first time.
        generation = state.crossing_at(source.offset)
        extra = (_threshold(fb, source, generation, settings.min_new_pairs),) if generation else ()
        return Decision((accepted, *extra), state, SeenPair(source.partition, source.offset, str(fb.event_id)), key)

    new_pairs = state.new_pairs + 1
    if new_pairs < settings.min_new_pairs:
        return Decision((accepted,), next_state.advanced(source.partition, source.offset, new_pairs=new_pairs),
                        SeenPair(source.partition, source.offset, str(fb.event_id)), key)
    generation = state.generation + 1
    crossed = next_state.advanced(
        source.partition,
        source.offset,
        generation=generation,
        new_pairs=0,
        crossings=state.with_crossing(source.offset, generation),
    )
    return Decision(
        (accepted, _threshold(fb, source, generation, new_pairs)),
        crossed,
        SeenPair(source.partition, source.offset, str(fb.event_id)),
        key,
    )


def _accepted(fb: FeedbackReceived, source: SourceRef, key: str) -> PairAccepted:
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
        # Until the quality pipeline scores pairs, a pair is as good as SAM is sure it is feedback.
        quality_score=fb.confidence_score,
        feedback_type=fb.feedback_type,
        created_at=fb.occurred_at,
        source=source,
    )


def _rejected(
    fb: FeedbackReceived, source: SourceRef, reasons: list[RejectionReason], settings: DecideSettings
) -> PairRejected:
    cut = settings.preview_chars
    return PairRejected(
        event_id=derived_event_id("pair-rejected", str(fb.event_id)),
        occurred_at=fb.occurred_at,
        user_id=fb.user_id,
        correlation_id=fb.correlation_id,
        feedback_event_id=fb.event_id,
        feedback_type=fb.feedback_type,
        reasons=tuple(reasons),
        prompt=fb.prompt[:cut],
        chosen_response=(fb.corrected_response or "")[:cut],
        rejected_response=fb.original_response[:cut],
        created_at=fb.occurred_at,
        source=source,
    )


def _threshold(fb: FeedbackReceived, source: SourceRef, generation: int, new_pairs: int) -> TrainingThresholdReached:
    return TrainingThresholdReached(
        event_id=threshold_event_id(fb.user_id, generation),
        occurred_at=fb.occurred_at,
        user_id=fb.user_id,
        correlation_id=fb.correlation_id,
        generation=generation,
        new_pairs=new_pairs,
        trigger="threshold",
        triggered_at=fb.occurred_at,
        through=source,
    )
