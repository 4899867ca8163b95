"""The job ledger's events as training_jobs rows, and an adapter's lineage as an adapters row."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from schemas.events import DatasetRef, TrainingRequested
from streams.projector.rows import ADAPTER_COLUMNS, JOB_COLUMNS, adapter_row, job_row
from trainer import outcomes

REQ = TrainingRequested(
    event_id=uuid.uuid4(),
    correlation_id=uuid.uuid4(),
    user_id="alice",
    request_id=uuid.uuid4(),
    generation=2,
    trigger="manual",
    triggered_at=datetime(2026, 11, 25, tzinfo=UTC),
    dataset=DatasetRef(uri="datasets/x.parquet", sha256="0" * 64, rows=0, pair_ids=()),
)


def row(event) -> dict:  # type: ignore[no-untyped-def]
    out = job_row(event, version=7)
    assert out is not None
    return dict(zip(JOB_COLUMNS, out, strict=True))


def test_every_ledger_status_has_a_row() -> None:
    assert row(outcomes.queued(REQ, 1, "w1", 2))["status"] == "queued"
    started = row(outcomes.started(REQ, 2, "w1", 40, {}))
    assert (started["status"], started["attempt"], started["step"], started["worker"]) == ("running", 2, 40, "w1")
    assert row(outcomes.failed(REQ, 1, "oom", "OutOfMemoryError", retry_in_s=1.0))["status"] == "retrying"
    cancelled = row(outcomes.cancelled(REQ, "cancelled by ops", None))
    assert (cancelled["status"], cancelled["cause"]) == ("cancelled", "cancelled by ops")
    rejected = row(outcomes.rejected(REQ, "worse", {"heldout_pref_accuracy": 0.5}, {"heldout_pref_accuracy": 1.0}))
    assert rejected["status"] == "rejected" and json.loads(rejected["metrics"]) == {
        "heldout_pref_accuracy": 0.5,
        "baseline/heldout_pref_accuracy": 1.0,
    }
    progress = row(outcomes.progressed(REQ, 2, {"step": 5, "total": 10, "epoch": 0.5, "loss": 0.3, "eta_s": 4.0}))
    assert (progress["step"], progress["epoch"], progress["eta_s"], progress["attempt"]) == (5, 0.5, 4.0, 2)


def test_an_adapter_row_carries_its_lineage() -> None:
    pair = uuid.uuid4()
    manifest = {
        "files": {"adapter_model.safetensors": "a" * 64, "adapter_config.json": "b" * 64},
        "base_model": {"name_or_path": "m", "weights_sha256": "c" * 64},
        "config_sha256": "d" * 64,
        "pair_ids": {"train": [str(pair)], "heldout": []},
        "parent_version": 1,
        "baseline": {"metrics": {"heldout_pref_accuracy": 0.9}},
        "libraries": {"trl": "1.16.0"},
    }
    r = dict(zip(ADAPTER_COLUMNS, adapter_row(outcomes.adapter_published(REQ, manifest, "adapters/k/2")), strict=True))
    assert r["train_pair_ids"] == [pair] and r["parent_version"] == 1 and r["config_sha256"] == "d" * 64
    assert json.loads(r["baseline_metrics"]) == {"heldout_pref_accuracy": 0.9}
    assert json.loads(r["libraries"]) == {"trl": "1.16.0"}
