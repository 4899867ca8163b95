"""Bulk pair commands: decided per user into one event for the known pairs (and a rejection naming
the unknown ones), projected in one update; training overrides travel to the request."""

from __future__ import annotations

import uuid
from pathlib import Path

from schemas.commands import DeactivatePairs, RequestTraining, ReweightPairs
from schemas.events import CommandRejected, PairAccepted, PairsDeactivated, PairsReweighted, TrainingProgressed
from streams.projector.export import from_log
from tests.fakes import FakePublisher, FakeSink
from tests.unit.test_decide import Decider, fb
from tests.unit.test_projector import TOPICS, as_messages, projector


def pairs_of(d: Decider, n: int) -> list[PairAccepted]:
    events = d.feed(*[fb(i) for i in range(n)])
    return [e for e in events if isinstance(e, PairAccepted)]


def test_a_bulk_deactivation_names_the_known_pairs_and_rejects_the_unknown_ones() -> None:
    d = Decider(min_new_pairs=100)
    pairs = pairs_of(d, 3)
    stranger = uuid.uuid4()
    command = DeactivatePairs(
        user_id="alice", pair_ids=(pairs[0].pair_id, stranger, pairs[2].pair_id), filter='{"user":"alice"}'
    )
    done, rejected = d.feed(command)
    assert isinstance(done, PairsDeactivated)
    assert done.pair_ids == (pairs[0].pair_id, pairs[2].pair_id) and done.filter == '{"user":"alice"}'
    assert isinstance(rejected, CommandRejected) and "1 of 3 pairs unknown" in rejected.reason
    assert str(stranger) in rejected.reason
    assert d.feed(command) == []  # the same command again: a no-op


def test_another_users_pairs_are_unknown_to_a_users_bulk_command() -> None:
    d = Decider(min_new_pairs=100)
    (pair,) = pairs_of(d, 1)
    (rejected,) = d.feed(ReweightPairs(user_id="bob", pair_ids=(pair.pair_id,), training_weight=2.0))
    assert isinstance(rejected, CommandRejected) and rejected.user_id == "bob"


def test_bulk_events_change_every_listed_row_in_the_projection_and_the_log_export(tmp_path: Path) -> None:
    d = Decider(min_new_pairs=100)
    pairs = pairs_of(d, 4)
    ids = tuple(p.pair_id for p in pairs[:3])
    (deactivated,) = d.feed(DeactivatePairs(user_id="alice", pair_ids=ids[:2]))
    (reweighted,) = d.feed(ReweightPairs(user_id="alice", pair_ids=ids, training_weight=0.5))
    assert isinstance(reweighted, PairsReweighted)
    sink, publisher = FakeSink(), FakePublisher()
    messages = as_messages([*pairs, deactivated, reweighted])
    projector(tmp_path, sink, publisher).project(messages)
    rows = sink.tables["preference_pairs"]
    assert [rows[p.pair_id]["is_active"] for p in pairs] == [False, False, True, True]
    assert [rows[p.pair_id]["training_weight"] for p in pairs] == [0.5, 0.5, 0.5, 1.0]
    exported = {r["pair_id"]: r for r in from_log(messages, "alice")}
    assert set(exported) == {str(pairs[2].pair_id), str(pairs[3].pair_id)}
    assert exported[str(pairs[2].pair_id)]["training_weight"] == 0.5


def test_training_overrides_travel_from_the_command_to_the_request(tmp_path: Path) -> None:
    d = Decider(min_new_pairs=100)
    pairs_of(d, 2)
    (threshold,) = d.feed(RequestTraining(user_id="alice", dpo_overrides={"num_train_epochs": 3}))
    assert threshold.dpo_overrides == {"num_train_epochs": 3}  # type: ignore[attr-defined]
    sink, publisher = FakeSink(), FakePublisher()
    pairs = [e for e in d.feed() if isinstance(e, PairAccepted)]
    result = projector(tmp_path, sink, publisher).project(as_messages([*pairs, threshold]))
    (request,) = result.training_requests
    assert request.dpo_overrides == {"num_train_epochs": 3}


def test_a_boolean_is_not_a_training_override() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="a number is expected"):
        RequestTraining(user_id="alice", dpo_overrides={"bf16": True})


def test_every_progress_point_is_kept_for_the_curve(tmp_path: Path) -> None:
    rid = uuid.uuid4()
    points = [
        TrainingProgressed(
            event_id=uuid.uuid4(),
            user_id="alice",
            correlation_id=rid,
            request_id=rid,
            step=s,
            total_steps=3,
            loss=1.0 / s,
            metrics={"rewards/accuracies": 0.5},
        )
        for s in (1, 2, 3)
    ]
    points.append(
        TrainingProgressed(
            event_id=uuid.uuid4(),
            user_id="alice",
            correlation_id=rid,
            request_id=rid,
            step=3,
            total_steps=3,
            metrics={"eval_loss": 0.7},
        )
    )
    sink, publisher = FakeSink(), FakePublisher()
    projector(tmp_path, sink, publisher).project(as_messages(points, topic=TOPICS.training))
    stored = sorted(sink.tables["training_progress"].values(), key=lambda r: r["source_offset"])
    assert [(r["step"], r["loss"], r["eval_loss"]) for r in stored] == [
        (1, 1.0, None),
        (2, 0.5, None),
        (3, 1.0 / 3, None),
        (3, None, 0.7),
    ]
    assert stored[0]["reward_accuracy"] == 0.5
    assert sink.tables["training_jobs"][rid]["step"] == 3  # the latest state is still projected
