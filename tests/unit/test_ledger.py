"""The job ledger: one job per request id; outcomes are final."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.events import DatasetRef, TrainingFailed, TrainingRequested, TrainingStarted, TrainingSucceeded
from trainer import ledger as L


def request(rid: uuid.UUID) -> TrainingRequested:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    return TrainingRequested(event_id=rid, correlation_id=rid, user_id="alice", request_id=rid, generation=1,
                             trigger="threshold", triggered_at=now,
                             dataset=DatasetRef(uri="datasets/x.parquet", sha256="0" * 64, rows=0, pair_ids=()))


def test_a_repeated_request_is_a_no_op() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    assert L.apply(ledger, request(rid)) is ledger


def test_a_succeeded_job_does_not_run_again() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    assert L.should_run(ledger, str(rid))
    ledger = L.apply(ledger, TrainingSucceeded(event_id=uuid.uuid4(), correlation_id=rid, user_id="alice",
                                               request_id=rid, adapter_version=1, adapter_uri="a", duration_s=1))
    assert not L.should_run(ledger, str(rid))
    assert ledger[str(rid)].adapter_version == 1


def test_an_interrupted_job_runs_again_with_the_next_attempt() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    ledger = L.apply(ledger, TrainingStarted(event_id=uuid.uuid4(), correlation_id=rid, user_id="alice",
                                             request_id=rid, attempt=1))
    assert L.should_run(ledger, str(rid)) and ledger[str(rid)].attempt == 1


def test_a_final_failure_is_final() -> None:
    rid = uuid.uuid4()
    ledger = L.apply({}, request(rid))
    ledger = L.apply(ledger, TrainingFailed(event_id=uuid.uuid4(), correlation_id=rid, user_id="alice",
                                            request_id=rid, cause="boom", error_type="X"))
    assert not L.should_run(ledger, str(rid))
    assert ledger[str(rid)].cause == "boom"
