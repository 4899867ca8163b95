"""The decider's stories: a correction becomes a pair; every quality check has its reason; duplicates,
replays and re-deliveries change nothing; thresholds fire once per generation; commands act."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from infra.kafka import RawMessage
from schemas.codec import decode, encode_command, encode_value
from schemas.commands import Command, DeactivatePair, EraseUser, RequestTraining, ReweightPair
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
    TrainingThresholdReached,
    UserForgotten,
)
from schemas.ids import feedback_event_id
from schemas.topics import Topics
from streams.decider.batch import BatchDecider
from streams.decider.decisions import DecideSettings
from streams.decider.journal import DeciderMemory, StateLimits, apply_writes
from streams.decider.similarity import MinHasher, UserIndexes

TOPICS = Topics()
T0 = datetime(2026, 11, 25, tzinfo=UTC)


def fb(
    n: int,
    user: str = "alice",
    corrected: str | None = "",
    original: str | None = None,
    prompt: str | None = None,
    kind: str = "correction",
    fid: str | None = None,
    confidence: float = 0.9,
) -> FeedbackReceived:
    eid = feedback_event_id(user, fid or f"f{n}")
    original = original if original is not None else f"Answer number {n} is here."
    if corrected == "":
        corrected = f"Answer number {n} is here, with thanks {n} to you." if kind == "correction" else None
    return FeedbackReceived(
        event_id=eid,
        correlation_id=eid,
        user_id=user,
        feedback_id=fid or f"f{n}",
        occurred_at=T0,
        feedback_type=kind,
        prompt=prompt if prompt is not None else f"Question {n} about topic {n * 7}?",
        original_response=original,
        corrected_response=corrected,
        confidence_score=confidence,
    )


class Decider:
    """BatchDecider over a dict journal: what the Faust agent does, minus Faust."""

    def __init__(
        self,
        min_new_pairs: int = 3,
        quality: QualitySettings | None = None,
        min_new_examples: int = 0,
        limits: StateLimits | None = None,
    ) -> None:
        self.journal: dict[str, Any] = {}
        self.memory = DeciderMemory(self.journal, limits)
        hasher = MinHasher(64, 3)
        settings = DecideSettings(
            min_new_pairs=min_new_pairs, quality=quality or QualitySettings(), min_new_examples=min_new_examples
        )
        self.output_mark: tuple[int, int] = (-1, -1)
        self.decider = BatchDecider(
            settings,
            self.memory,
            TOPICS,
            hasher,
            UserIndexes(hasher, 0.85),
            lambda topic, partition: self.output_mark,
            self.read_range,
            lambda topic, partition: self.resume_at,
        )
        self.resume_at = 0  # where the group resumes a partition with no head: the log's start, nothing committed
        self.offset = 0
        self.log: dict[tuple[str, int, int], RawMessage] = {}  # what the "log" holds: every message fed

    def read_range(self, topic: str, partition: int, start: int, end: int) -> list[RawMessage]:
        return [m for (t, p, o), m in sorted(self.log.items()) if t == topic and p == partition and start <= o < end]

    def in_log(self, item: FeedbackReceived, offset: int) -> None:
        """A message the log holds but that is not delivered."""
        msg = RawMessage(TOPICS.feedback, 0, offset, item.user_id.encode(), encode_value(item), (), 0)
        self.log[(msg.topic, msg.partition, msg.offset)] = msg

    def feed(self, *items: FeedbackReceived | Command | bytes, at: int | None = None) -> list[Event]:
        batch = []
        for item in items:
            offset = at if at is not None else self.offset
            self.offset = max(self.offset, offset + 1)
            if isinstance(item, FeedbackReceived):
                msg = RawMessage(TOPICS.feedback, 0, offset, item.user_id.encode(), encode_value(item), (), 0)
            elif isinstance(item, Command):
                key, value, headers = encode_command(item)
                msg = RawMessage(TOPICS.control, 0, offset, key, value, tuple(headers), 0)
            else:
                msg = RawMessage(TOPICS.feedback, 0, offset, b"k", item, (), 0)
            batch.append(msg)
            self.log[(msg.topic, msg.partition, msg.offset)] = msg
        result = self.decider.decide(batch)
        for writes in result.journal.values():
            apply_writes(self.journal, writes)
        self.last = result
        return [decode(value) for topic, _, value, _ in result.outgoing if topic == TOPICS.pairs]

    def dead_letters(self) -> list[dict[str, bytes]]:
        return [dict(h) for topic, _, _, h in self.last.outgoing if topic == TOPICS.dlq]


def codes(event: Event) -> list[str]:
    assert isinstance(event, PairRejected), event
    return [r.code for r in event.reasons]


def test_a_correction_becomes_a_pair_with_chosen_as_the_correction() -> None:
    (event,) = Decider().feed(fb(1))
    assert isinstance(event, PairAccepted)
    assert event.chosen_response.endswith("thanks 1 to you.")
    assert event.rejected_response == "Answer number 1 is here."
    assert 0.5 <= event.quality_score <= 1.0


def test_the_same_correction_twice_is_one_pair_and_one_duplicate_rejection() -> None:
    d = Decider()
    first, second = d.feed(fb(1, fid="a"), fb(1, fid="b"))
    assert isinstance(first, PairAccepted)
    assert codes(second) == ["duplicate_pair"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"corrected": "  Answer number 1 is here. "}, ["chosen_equals_rejected"]),
        ({"corrected": "ANSWER NUMBER 1 IS HERE."}, ["case_only_edit"]),
        ({"corrected": " ", "prompt": " "}, ["empty_prompt", "empty_chosen"]),
        ({"corrected": None}, ["missing_correction"]),
        ({"confidence": 0.2}, ["low_confidence", "low_quality"]),
        ({"prompt": "x" * 5000}, ["prompt_too_long"]),
        ({"corrected": "y" * 9000}, ["chosen_too_long"]),
        ({"original": "z" * 9000}, ["rejected_too_long"]),
        ({"corrected": "No.", "confidence": 0.5}, ["low_quality"]),
    ],
)
def test_each_failing_check_has_its_reason(kwargs: dict[str, Any], expected: list[str]) -> None:
    (event,) = Decider().feed(fb(1, **kwargs))
    assert codes(event) == expected


def test_token_limits_use_the_configured_tokenizer() -> None:
    quality = QualitySettings(response_tokens=(1, 5))
    d = Decider(quality=quality)
    d.decider.settings = DecideSettings(min_new_pairs=3, quality=quality, count_tokens=lambda t: len(t.split()))
    (event,) = d.feed(fb(1))
    assert codes(event) == ["chosen_too_long"]  # the original answer has 5 words, the correction 10
    assert "10 tokens > 5" in event.reasons[0].detail  # type: ignore[attr-defined]


def test_a_small_edit_is_accepted_but_flagged_near_identical() -> None:
    original = "Paris is the capital and the largest city of France, on the Seine river in the north."
    (event,) = Decider().feed(fb(1, original=original, corrected=original.replace("largest", "biggest")))
    assert isinstance(event, PairAccepted)
    assert event.metadata["near_identical"] is True
    assert float(event.metadata["similarity"]) >= 0.9


def test_a_near_duplicate_of_an_earlier_pair_is_rejected() -> None:
    d = Decider()
    (first,) = d.feed(
        fb(
            1,
            prompt="What is the capital of Peru, the country?",
            original="The capital of Peru is Lima.",
            corrected="The capital of Peru is Lima. Cheers!",
        )
    )
    (second,) = d.feed(
        fb(
            2,
            prompt="What is the capital of Peru, the country ?",
            original="The capital of Peru is Lima.",
            corrected="The capital of Peru is Lima.  Cheers!",
        )
    )
    assert isinstance(first, PairAccepted)
    assert codes(second) == ["near_duplicate"]


def test_the_same_prompt_with_the_preference_reversed_is_a_contradiction() -> None:
    d = Decider()
    d.feed(fb(1, original="Short answer.", corrected="A longer, friendlier answer."))
    (event,) = d.feed(
        fb(2, prompt="Question 1 about topic 7?", original="A longer, friendlier answer.", corrected="Short answer.")
    )
    assert "contradiction" in codes(event)


def test_thumbs_without_a_correction_become_labelled_examples() -> None:
    d = Decider()
    up, down, again = d.feed(fb(1, kind="thumbs_up"), fb(2, kind="thumbs_down"), fb(1, kind="thumbs_up", fid="x"))
    assert isinstance(up, LabelledExampleAccepted) and up.desirable
    assert isinstance(down, LabelledExampleAccepted) and not down.desirable
    assert codes(again) == ["duplicate_example"]


def test_a_thumbs_only_user_reaches_a_threshold_of_labelled_examples() -> None:
    d = Decider(min_new_pairs=3, min_new_examples=4)
    events = d.feed(*[fb(n, kind="thumbs_up" if n % 2 else "thumbs_down") for n in range(9)])
    thresholds = [e for e in events if isinstance(e, TrainingThresholdReached)]
    assert [(t.generation, t.new_pairs, t.new_examples) for t in thresholds] == [(1, 0, 4), (2, 0, 4)]
    # A pair threshold counts the examples since the last generation too, and resets both.
    events = d.feed(*[fb(n) for n in range(20, 23)])
    (pairs_threshold,) = [e for e in events if isinstance(e, TrainingThresholdReached)]
    assert (pairs_threshold.generation, pairs_threshold.new_pairs, pairs_threshold.new_examples) == (3, 3, 1)


def test_labelled_examples_trigger_nothing_by_themselves_when_their_threshold_is_off() -> None:
    events = Decider(min_new_examples=0).feed(*[fb(n, kind="thumbs_up") for n in range(10)])
    assert not [e for e in events if isinstance(e, TrainingThresholdReached)]


def test_thumbs_down_with_a_correction_is_a_pair() -> None:
    (event,) = Decider().feed(fb(1, kind="thumbs_down", corrected="A much better answer, written by the user."))
    assert isinstance(event, PairAccepted) and event.feedback_type == "thumbs_down"


def test_the_threshold_fires_once_per_generation() -> None:
    d = Decider()
    events = d.feed(*[fb(n) for n in range(7)])
    thresholds = [e for e in events if isinstance(e, TrainingThresholdReached)]
    assert [(t.generation, t.through.offset, t.new_pairs) for t in thresholds] == [(1, 2, 3), (2, 5, 3)]


def test_an_event_the_state_already_holds_is_skipped() -> None:
    d = Decider()
    d.feed(*[fb(n) for n in range(3)])
    assert d.feed(fb(2), at=2) == []
    assert d.last.skipped == 1


def test_a_lost_state_is_decided_again_and_its_durable_outputs_are_not_sent_twice() -> None:
    d = Decider()
    d.feed(fb(0))
    durable = dict(d.journal)
    original = d.feed(fb(1), fb(2))
    assert [type(e) for e in original] == [PairAccepted, PairAccepted, TrainingThresholdReached]
    d.journal.clear()
    d.journal.update(durable)  # the batch's journal entry was lost in a crash ...
    d.memory.forget()  # ... and the worker restarted
    d.output_mark = (2, 1)  # ... but its outputs are in the log: up to offset 2's second output
    assert d.feed(fb(1), at=1) == [] and d.feed(fb(2), at=2) == []
    assert d.last.suppressed == 2 and d.last.skipped == 0  # offset 2: its pair and its threshold
    assert d.memory.partition(0).user("alice").generation == 1  # the state was rebuilt, generation 1 included
    (later,) = d.feed(fb(3), at=3)
    assert isinstance(later, PairAccepted)


def test_an_event_whose_outputs_landed_in_part_sends_the_rest_only() -> None:
    d = Decider()
    d.feed(fb(0), fb(1))
    durable = dict(d.journal)
    d.feed(fb(2))  # a pair and the threshold ...
    d.journal.clear()
    d.journal.update(durable)
    d.memory.forget()
    d.output_mark = (2, 0)  # ... of which only the pair landed before the crash
    (again,) = d.feed(fb(2), at=2)
    assert isinstance(again, TrainingThresholdReached) and d.last.suppressed == 1


def test_the_state_survives_a_restart_through_the_journal() -> None:
    d = Decider()
    d.feed(fb(0), fb(1))
    d.memory.forget()  # a new process: everything comes back from the journal
    assert d.feed(fb(1), at=1) == [] and d.last.skipped == 1
    (dup,) = d.feed(fb(0, fid="again"))
    assert codes(dup) == ["duplicate_pair"]


def test_the_same_event_replayed_at_a_new_offset_changes_nothing() -> None:
    d = Decider()
    d.feed(fb(0), fb(1, corrected="Answer number 1 is here."))
    assert d.feed(fb(0), fb(1, corrected="Answer number 1 is here."), at=50) == []


def test_bad_bytes_are_dead_lettered_and_the_batch_goes_on() -> None:
    d = Decider()
    events = d.feed(b"not json", fb(1))
    assert len(events) == 1 and isinstance(events[0], PairAccepted)
    (dlq,) = d.dead_letters()
    assert dlq["dlq.reason"] == b"invalid_json" and dlq["dlq.stage"] == b"decider"


def test_request_training_allocates_the_next_generation() -> None:
    d = Decider()
    d.feed(fb(0))
    (event,) = d.feed(RequestTraining(user_id="alice"))
    assert isinstance(event, TrainingThresholdReached)
    assert (event.generation, event.trigger, event.new_pairs) == (1, "manual", 1)
    assert event.through.topic == TOPICS.control


def test_pair_commands_act_on_known_pairs_only() -> None:
    d = Decider()
    (pair,) = d.feed(fb(0))
    assert isinstance(pair, PairAccepted)
    deactivated, reweighted, unknown = d.feed(
        DeactivatePair(user_id="alice", pair_id=pair.pair_id),
        ReweightPair(user_id="alice", pair_id=pair.pair_id, training_weight=2.0),
        DeactivatePair(user_id="alice", pair_id=uuid.uuid4()),
    )
    assert isinstance(deactivated, PairDeactivated) and isinstance(reweighted, PairReweighted)
    assert isinstance(unknown, CommandRejected) and "no pair" in unknown.reason


def test_after_erasure_the_same_correction_is_accepted_again_and_generations_keep_counting() -> None:
    d = Decider()
    events = d.feed(*[fb(n) for n in range(3)])
    assert any(isinstance(e, TrainingThresholdReached) for e in events)
    (erased,) = d.feed(EraseUser(user_id="alice"))
    assert isinstance(erased, UserForgotten)
    again = d.feed(*[fb(n, fid=f"again{n}") for n in range(3)])
    assert [type(e).__name__ for e in again] == ["PairAccepted"] * 3 + ["TrainingThresholdReached"]
    assert again[-1].generation == 2  # type: ignore[attr-defined]


def test_a_repeated_command_is_a_no_op() -> None:
    d = Decider()
    d.feed(fb(0))
    command = RequestTraining(user_id="alice")
    (first,) = d.feed(command)
    assert isinstance(first, TrainingThresholdReached)
    assert d.feed(command) == []
    erase = EraseUser(user_id="alice")
    assert len(d.feed(erase)) == 1 and d.feed(erase) == []


def test_replaying_events_from_before_an_erasure_does_not_bring_the_data_back() -> None:
    d = Decider()
    d.feed(fb(0), fb(1, kind="thumbs_up"), fb(2, corrected="Answer number 2 is here."))
    d.feed(EraseUser(user_id="alice"))
    assert d.feed(fb(0), fb(1, kind="thumbs_up"), fb(2, corrected="Answer number 2 is here."), at=100) == []


def test_events_that_were_not_delivered_are_read_from_the_log_first() -> None:
    # Faust can drop a fetched message around a rebalance: the decider must not decide past it (its
    # partition head and the output marks assume offset order).
    d = Decider()
    d.feed(fb(0))
    d.in_log(fb(1), 1)  # offset 1 is in the log, but it is not delivered ...
    events = d.feed(fb(2), at=2)  # ... so it is read and decided before offset 2
    assert [type(e) for e in events] == [PairAccepted, PairAccepted, TrainingThresholdReached]
    assert d.last.recovered == {(TOPICS.feedback, 0): [1]} and d.last.decided == 2
    assert d.feed(fb(1), at=1) == [] and d.last.skipped == 1  # should Faust deliver it after all


def test_the_first_events_of_a_partition_are_read_from_the_log_when_they_were_not_delivered() -> None:
    # Faust can drop the first messages it fetches too, and with nothing committed it would commit
    # past them: a partition with no head starts where the group resumes, not at the first delivery.
    d = Decider()
    d.in_log(fb(0), 0)
    d.in_log(fb(1), 1)
    events = d.feed(fb(2), at=2)
    assert [type(e) for e in events] == [PairAccepted, PairAccepted, PairAccepted, TrainingThresholdReached]
    assert d.last.recovered == {(TOPICS.feedback, 0): [0, 1]} and d.last.decided == 3


def test_a_partition_with_no_head_is_read_from_the_group_s_committed_offset_not_the_log_s_start() -> None:
    d = Decider()
    d.resume_at = 5  # the group committed 5 (the head was lost): what came before is not read again
    for n in range(7):
        d.in_log(fb(n), n)
    events = d.feed(fb(7), at=7)
    assert d.last.recovered == {(TOPICS.feedback, 0): [5, 6]} and d.last.decided == 3
    assert [type(e) for e in events] == [PairAccepted, PairAccepted, PairAccepted, TrainingThresholdReached]


def test_offsets_the_log_does_not_hold_are_stepped_over() -> None:
    d = Decider()
    d.feed(fb(0))
    (event,) = d.feed(fb(1), at=5)  # offsets 1-4 are transaction markers or gone: nothing to read
    assert isinstance(event, PairAccepted) and d.last.recovered == {}


def test_the_position_survives_a_restart_and_dead_letters_count() -> None:
    d = Decider()
    d.feed(fb(0), b"not json")  # offsets 0 and 1; the dead letter moves the position too
    d.memory.forget()
    assert d.memory.partition(0).through == {TOPICS.feedback: 1}
    (event,) = d.feed(fb(2), at=2)
    assert isinstance(event, PairAccepted)


# -- every input leaves a record -----------------------------------------------------------------


def test_an_identical_redelivery_is_a_counted_skip() -> None:
    d = Decider()
    first = fb(0)
    assert len(d.feed(first)) == 1
    assert d.feed(first) == [] and d.last.skips == {"redelivery": 1} and not d.dead_letters()
    restamped = first.model_copy(update={"occurred_at": datetime(2026, 12, 1, tzinfo=UTC)})
    assert d.feed(restamped) == [] and d.last.skips == {"redelivery": 1}  # a retry built anew: same content


def test_an_event_id_reused_for_other_content_is_dead_lettered_with_both_hashes() -> None:
    d = Decider()
    first = fb(0)
    d.feed(first)
    other = first.model_copy(update={"corrected_response": "A different correction, of another answer."})
    assert d.feed(other) == []
    (dead,) = d.dead_letters()
    assert dead["dlq.reason"] == b"conflicting_event_id"
    hashes = dead["dlq.content_sha256.first"], dead["dlq.content_sha256.this"]
    assert len(set(hashes)) == 2 and all(len(h) == 32 for h in hashes)
    assert str(first.event_id).encode() in dead["dlq.error"]


def test_commands_are_accounted_for_too() -> None:
    from schemas.commands import ActivateAdapter, CancelTraining

    d = Decider()
    d.feed(fb(0))
    command = RequestTraining(user_id="alice")
    assert len(d.feed(command)) == 1
    assert d.feed(command) == [] and d.last.skips == {"redelivery": 1}
    changed = command.model_copy(update={"issued_by": "someone else"})
    assert d.feed(changed) == [] and d.dead_letters()[0]["dlq.reason"] == b"conflicting_command_id"
    assert d.feed(ActivateAdapter(user_id="alice"), CancelTraining(user_id="alice", request_id=uuid.uuid4())) == []
    assert d.last.skips == {"other_role": 2}


def test_erasure_leaves_nothing_of_the_user_in_the_journal_but_counters_and_hashed_ids() -> None:
    d = Decider()
    pair, _, _ = d.feed(fb(0), fb(1, kind="thumbs_up"), fb(2, user="bob"))
    (forgotten,) = d.feed(EraseUser(user_id="alice"))
    assert isinstance(forgotten, UserForgotten)
    assert forgotten.decider == {
        "pair_fingerprints": 1,
        "example_fingerprints": 1,
        "feedback_ids_hashed": 2,
        "command_ids_hashed": 0,
        "minhash_signatures": 1,
    }
    text = repr(d.journal)
    assert "alice" not in text and "bob" in text  # bob keeps his state
    for secret in ("Question 0", "Answer number 0", str(fb(0).event_id)):
        assert secret not in text
    d.memory.forget()  # a restart: the state is read back from the journal
    assert d.feed(fb(0), fb(1, kind="thumbs_up")) == [] and d.last.skips == {"erased": 2}  # a replay
    (again,) = d.feed(fb(0, fid="new-id"))  # the user corrects again, with a new feedback id: heard
    assert isinstance(again, PairAccepted) and again.pair_id == pair.pair_id  # type: ignore[attr-defined]
    assert again.event_id != pair.event_id  # a new fact, with a new id
    assert d.feed(EraseUser(user_id="alice", command_id=forgotten.command_id)) == []  # a repeated erase


def test_the_content_hash_is_the_one_earlier_versions_stored_for_the_same_event() -> None:
    """Sightings keep the hash: a new form of it would make every redelivery after an upgrade a conflict."""
    import hashlib
    import json

    from streams.decider.decisions import content_hash

    item = fb(1, prompt="Où est la gare ? 東京", original="Là-bas.").model_copy(
        update={"context": {"zeta": "1", "alpha": "ü"}}
    )
    stored = json.dumps(item.model_dump(mode="json", exclude={"occurred_at"}), sort_keys=True, separators=(",", ":"))
    assert content_hash(item) == hashlib.sha256(stored.encode("utf-8")).hexdigest()[:32]
    cmd = RequestTraining(user_id="alice", issued_at=T0)
    stored = json.dumps(cmd.model_dump(mode="json", exclude={"issued_at"}), sort_keys=True, separators=(",", ":"))
    assert content_hash(cmd) == hashlib.sha256(stored.encode("utf-8")).hexdigest()[:32]
