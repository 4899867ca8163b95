"""The job ledger: one job per request id; outcomes are final."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.events import DatasetRef, TrainingFailed, TrainingRequested, TrainingStarted, TrainingSucceeded
from trainer import ledger as L


def request(rid: uuid.UUID) -> TrainingRequested:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    return TrainingRequested(
        event_id=rid,
        correlation_id=rid,
        user_id="alice",
        request_id=rid,
        generation=1,
        trigger="threshold",
        triggered_at=now,
        dataset=DatasetRef(uri="datasets/x.parquet", sha256="0" * 64, rows=0, pair_ids=()),
    )


def test_a_repeated_request_is_a_no_op() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    assert L.apply(ledger, request(rid)) is ledger


def test_a_succeeded_job_does_not_run_again() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    assert L.should_run(ledger, str(rid))
    ledger = L.apply(
        ledger,
        TrainingSucceeded(
            event_id=uuid.uuid4(),
            correlation_id=rid,
            user_id="alice",
            request_id=rid,
            adapter_version=1,
            adapter_uri="a",
            duration_s=1,
        ),
    )
    assert not L.should_run(ledger, str(rid))
    assert ledger[str(rid)].adapter_version == 1


def test_an_interrupted_job_runs_again_with_the_next_attempt() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    ledger = L.apply(
        ledger, TrainingStarted(event_id=uuid.uuid4(), correlation_id=rid, user_id="alice", request_id=rid, attempt=1)
    )
    assert L.should_run(ledger, str(rid)) and ledger[str(rid)].attempt == 1


def test_a_final_failure_is_final() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    ledger = L.apply(
        ledger,
        TrainingFailed(
            event_id=uuid.uuid4(), correlation_id=rid, user_id="alice", request_id=rid, cause="boom", error_type="X"
        ),
    )
    assert not L.should_run(ledger, str(rid))
    assert ledger[str(rid)].cause == "boom"


def test_every_outcome_is_final_and_a_retry_is_not() -> None:
    from trainer import outcomes

    rid = uuid.uuid4()
    req = request(rid)
    ledger = L.apply({}, req)
    ledger = L.apply(ledger, outcomes.queued(req, 1, "w1", 0))
    assert ledger[str(rid)].status == "queued" and ledger[str(rid)].worker == "w1"
    ledger = L.apply(ledger, outcomes.started(req, 1, "w1", 0, {}))
    ledger = L.apply(ledger, outcomes.failed(req, 1, "oom", "OutOfMemoryError", retry_in_s=5.0))
    assert ledger[str(rid)].status == "retrying" and L.should_run(ledger, str(rid))
    for end, status in (
        (outcomes.cancelled(req, "by ops", None), "cancelled"),
        (outcomes.rejected(req, "worse", {"heldout_pref_accuracy": 0.5}, {}), "rejected"),
    ):
        done = L.apply(ledger, end)
        assert done[str(rid)].status == status and not L.should_run(done, str(rid))
        assert L.apply(done, outcomes.started(req, 3, "w2", 0, {})) is done


def test_folding_the_same_events_twice_changes_nothing() -> None:
    from trainer import outcomes

    rid = uuid.uuid4()
    req = request(rid)
    events = [
        req,
        outcomes.started(req, 1, "w", 0, {}),
        outcomes.failed(req, 1, "oom", "OutOfMemoryError", 1.0),
        outcomes.started(req, 2, "w", 0, {"per_device_train_batch_size": 4}),
    ]
    once: L.Ledger = {}
    for e in events:
        once = L.apply(once, e)
    twice = once
    for e in events:
        twice = L.apply(twice, e)
    job = twice[str(rid)]
    assert twice == once and (job.attempt, job.failures, job.interrupted) == (2, 1, 1)
    assert job.overrides == {"per_device_train_batch_size": 4}


def test_the_current_adapter_is_the_newest_published_one() -> None:
    ledger: L.Ledger = {}
    for generation, version in ((1, 1), (2, None), (3, 3)):
        rid = uuid.uuid4()
        req = request(rid).model_copy(update={"generation": generation})
        ledger = L.apply(ledger, req)
        if version is not None:
            done = TrainingSucceeded(
                event_id=uuid.uuid4(),
                correlation_id=rid,
                user_id="alice",
                request_id=rid,
                adapter_version=version,
                adapter_uri=f"v{version}",
                duration_s=1,
            )
            ledger = L.apply(ledger, done)
    current = L.current_adapter(ledger, "alice")
    assert current is not None and (current.adapter_version, current.adapter_uri) == (3, "v3")
    assert L.current_adapter(ledger, "bob") is None
