"""The decider's stories: a correction becomes a pair, duplicates and re-deliveries change nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import FeedbackReceived, PairAccepted, PairRejected, SourceRef, TrainingThresholdReached
from schemas.ids import feedback_event_id
from streams.decide import DecideSettings, decide
from streams.state import SeenPair, UserState

SETTINGS = DecideSettings(min_new_pairs=3)
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def fb(n: int, user: str = "alice", corrected: str | None = None, original: str | None = None,
       prompt: str | None = None, kind: str = "correction", fid: str | None = None) -> FeedbackReceived:
    eid = feedback_event_id(user, fid or f"f{n}")
    return FeedbackReceived(
        event_id=eid, correlation_id=eid, user_id=user, feedback_id=fid or f"f{n}", occurred_at=T0,
        feedback_type=kind, prompt=prompt or f"question {n}?", original_response=original or f"answer {n}.",
        corrected_response=corrected if corrected is not None or kind != "correction" else f"answer {n}. Thanks!",
    )


def at(offset: int, partition: int = 0) -> SourceRef:
    return SourceRef(topic="sam.feedback.v1", partition=partition, offset=offset)


class Run:
    """Feeds events through decide() the way the agent does, keeping state and sightings."""

    def __init__(self) -> None:
        self.state = UserState()
        self.seen: dict[str, SeenPair] = {}

    def feed(self, event: FeedbackReceived, source: SourceRef) -> list:
        from streams.decide import pair_key_for

        key = pair_key_for(event)
        decision = decide(event, source, self.state, self.seen.get(key) if key else None, SETTINGS)
        if decision.seen is not None and decision.pair_key:
            self.seen[decision.pair_key] = decision.seen
        self.state = decision.state
        return list(decision.events)


def test_a_correction_becomes_a_pair_with_chosen_as_the_correction() -> None:
    (event,) = Run().feed(fb(1), at(0))
    assert isinstance(event, PairAccepted)
    assert event.chosen_response == "answer 1. Thanks!"
    assert event.rejected_response == "answer 1."
    assert event.source == at(0)


def test_the_same_correction_twice_is_one_pair_and_one_duplicate_rejection() -> None:
    run = Run()
    first = run.feed(fb(1, fid="a"), at(0))
    second = run.feed(fb(1, fid="b"), at(1))
    assert isinstance(first[0], PairAccepted)
    assert isinstance(second[0], PairRejected)
    assert [r.code for r in second[0].reasons] == ["duplicate_pair"]


def test_a_whitespace_only_edit_is_rejected() -> None:
    (event,) = Run().feed(fb(1, corrected="  answer 1. "), at(0))
    assert isinstance(event, PairRejected)
    assert [r.code for r in event.reasons] == ["chosen_equals_rejected"]


def test_empty_texts_are_rejected_with_every_reason() -> None:
    (event,) = Run().feed(fb(1, corrected=" ", prompt=" "), at(0))
    assert isinstance(event, PairRejected)
    assert {r.code for r in event.reasons} == {"empty_prompt", "empty_chosen"}


def test_thumbs_without_a_correction_are_not_pairs() -> None:
    (event,) = Run().feed(fb(1, kind="thumbs_up"), at(0))
    assert isinstance(event, PairRejected)
    assert [r.code for r in event.reasons] == ["unpaired_feedback"]


def test_the_threshold_fires_once_per_generation() -> None:
    run = Run()
    emitted = [e for n in range(7) for e in run.feed(fb(n), at(n))]
    thresholds = [e for e in emitted if isinstance(e, TrainingThresholdReached)]
    assert [t.generation for t in thresholds] == [1, 2]
    assert [t.through.offset for t in thresholds] == [2, 5]
    assert run.state.new_pairs == 1


def test_redelivery_after_a_crash_re_emits_the_same_events_and_counts_nothing() -> None:
    run = Run()
    for n in range(3):
        original = run.feed(fb(n), at(n))
    state_after = run.state
    again = run.feed(fb(2), at(2))  # offset 2 again: our state already holds it
    assert [e.event_id for e in again] == [e.event_id for e in original]
    assert any(isinstance(e, TrainingThresholdReached) for e in again)
    assert run.state == state_after


def test_a_lost_state_write_is_redone_without_a_duplicate_rejection() -> None:
    run = Run()
    run.feed(fb(0), at(0))
    before = run.state
    run.feed(fb(1), at(1))
    run.state = before  # the state write for offset 1 was lost, the sighting was not
    (event,) = run.feed(fb(1), at(1))
    assert isinstance(event, PairAccepted)
    assert run.state.new_pairs == 2


def test_the_same_event_replayed_at_a_new_offset_changes_nothing() -> None:
    run = Run()
    run.feed(fb(0), at(0))
    assert run.feed(fb(0), at(10)) == []
    assert run.state.new_pairs == 1
