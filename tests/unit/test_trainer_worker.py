"""The trainer worker's job lifecycle, with a scripted job runner and an in-memory publisher."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from infra.artifacts import ArtifactStore
from schemas.codec import decode
from schemas.commands import CancelTraining
from schemas.config import Config
from schemas.events import (
    AdapterPublished,
    Event,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRejected,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from tests.fakes import FakePublisher
from tests.trainer_fakes import FakeJobRunner, block_until_stopped, fail, succeed
from trainer.local import local_request, pair_rows
from trainer.manifest import read_manifest
from trainer.worker import TrainerWorker


def config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "trainer": {"retry_backoff_s": 0.0},
        "evaluation": {"min_heldout_pairs": 1},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return Config.model_validate(raw)


def request(cfg: Config, user: str = "alice", generation: int = 1, n: int = 8) -> TrainingRequested:
    rows = pair_rows(user, [(f"Q{i} {generation}?", f"A{i}. Hope this helps!", f"A{i}.") for i in range(n)])
    return local_request(ArtifactStore(cfg.artifact_root), user, generation, rows)


def events(publisher: FakePublisher) -> list[Event]:
    return [decode(value) for _, _, value, _ in publisher.sent]


def kinds(publisher: FakePublisher) -> list[str]:
    return [type(e).__name__ for e in events(publisher) if not isinstance(e, TrainingProgressed)]


def test_a_request_trains_and_publishes_one_adapter_with_its_lineage(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, publisher, runner)
    req = request(cfg)

    assert worker.run_one(req)

    assert kinds(publisher) == ["TrainingQueued", "TrainingStarted", "AdapterPublished", "TrainingSucceeded"]
    (published,) = [e for e in events(publisher) if isinstance(e, AdapterPublished)]
    manifest = read_manifest(ArtifactStore(cfg.artifact_root), published.uri)  # checksums verified
    assert manifest["request_id"] == str(req.request_id)
    pairs = manifest["pair_ids"]
    every = pairs["train"] + pairs["validation"] + pairs["heldout"]
    assert sorted(every) == sorted(str(p) for p in req.dataset.pair_ids)
    assert [str(p) for p in published.heldout_pair_ids] == pairs["heldout"] and pairs["heldout"]
    assert manifest["baseline"]["name"] == "the base model"
    assert set(manifest["libraries"]) >= {"torch", "transformers", "trl", "peft"}
    assert published.files == manifest["files"] and published.config_sha256 == manifest["config_sha256"]
    assert worker.ledger[str(req.request_id)].status == "succeeded"


def test_a_repeated_request_is_a_no_op(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, publisher, runner)
    req = request(cfg)
    assert worker.run_one(req)
    assert not worker.offer(req)  # after it finished
    assert len(runner.specs) == 1

    second, v2 = TrainerWorker(cfg, FakePublisher(), runner), request(cfg, generation=2)
    assert second.offer(v2, ("t", 0, 5))
    assert not second.offer(v2, ("t", 0, 9))  # while it is queued
    assert second.queued() == [str(v2.request_id)]


def test_the_gate_rejects_an_adapter_worse_than_the_users_current_one(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher = FakePublisher()
    worker = TrainerWorker(cfg, publisher, FakeJobRunner(succeed(accuracy=1.0), succeed(accuracy=0.5, baseline=1.0)))
    assert worker.run_one(request(cfg, generation=1))
    v2 = request(cfg, generation=2)

    assert worker.run_one(v2)

    (rejection,) = [e for e in events(publisher) if isinstance(e, TrainingRejected)]
    assert "not better than adapter v1" in rejection.reason
    assert rejection.metrics["heldout_policy_accuracy"] == 0.5
    assert rejection.baseline_metrics["heldout_policy_accuracy"] == 1.0
    assert [e.version for e in events(publisher) if isinstance(e, AdapterPublished)] == [1]
    store = ArtifactStore(cfg.artifact_root)
    assert not store.resolve(store.adapter_uri("alice", 2)).exists()
    assert worker.runner.specs[1].baseline is not None and worker.runner.specs[1].baseline.version == 1  # type: ignore[attr-defined]
    assert worker.ledger[str(v2.request_id)].status == "rejected"


def test_the_gate_rejects_an_adapter_that_changes_control_answers(tmp_path: Path) -> None:
    cfg = config(tmp_path, evaluation={"control_min_share": 1.0})
    publisher = FakePublisher()
    worker = TrainerWorker(cfg, publisher, FakeJobRunner(succeed(control_kept=False)))
    worker.run_one(request(cfg))
    (rejection,) = [e for e in events(publisher) if isinstance(e, TrainingRejected)]
    assert "control answers broken" in rejection.reason and "7 plus 5 is 75." in rejection.reason


def test_out_of_memory_is_retried_with_a_smaller_batch(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(fail(), succeed())
    worker = TrainerWorker(cfg, publisher, runner)

    assert worker.run_one(request(cfg))

    assert kinds(publisher) == [
        "TrainingQueued",
        "TrainingStarted",
        "TrainingFailed",
        "TrainingStarted",
        "AdapterPublished",
        "TrainingSucceeded",
    ]
    retry = next(e for e in events(publisher) if isinstance(e, TrainingFailed))
    assert retry.will_retry and retry.retry_in_s == 0.0 and "retrying with batch 4 x 2" in retry.cause
    assert runner.overrides() == [{}, {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}]
    second_start = [e for e in events(publisher) if isinstance(e, TrainingStarted)][1]
    assert second_start.attempt == 2 and second_start.overrides == runner.overrides()[1]


def test_out_of_memory_every_time_gives_up_with_the_cause(tmp_path: Path) -> None:
    cfg = config(tmp_path, trainer={"max_attempts": 3})
    publisher, runner = FakePublisher(), FakeJobRunner(fail(cause="CUDA out of memory. Tried to allocate 2 GiB"))
    worker = TrainerWorker(cfg, publisher, runner)
    req = request(cfg)

    worker.run_one(req)

    failures = [e for e in events(publisher) if isinstance(e, TrainingFailed)]
    assert [(f.attempt, f.will_retry) for f in failures] == [(1, True), (2, True), (3, False)]
    assert "gave up after 3 attempt(s)" in failures[-1].cause and "Tried to allocate 2 GiB" in failures[-1].cause
    assert [o.get("per_device_train_batch_size") for o in runner.overrides()] == [None, 4, 2]
    assert worker.ledger[str(req.request_id)].status == "failed"


def test_a_failure_that_cannot_pass_is_not_retried(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(fail("DatasetError", "the dataset snapshot holds no pairs"))
    TrainerWorker(cfg, publisher, runner).run_one(request(cfg))
    (failed,) = [e for e in events(publisher) if isinstance(e, TrainingFailed)]
    assert not failed.will_retry and failed.cause == "the dataset snapshot holds no pairs"
    assert len(runner.specs) == 1


def test_a_queued_job_is_cancelled_without_running(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, publisher, runner)
    first, second = request(cfg, "alice"), request(cfg, "bob")
    assert worker.offer(first, ("t", 0, 1)) and worker.offer(second, ("t", 1, 1))
    assert [e.position for e in events(publisher) if isinstance(e, TrainingQueued)] == [0, 1]

    worker.cancel(CancelTraining(user_id="bob", request_id=second.request_id, issued_by="ops"))

    (cancelled,) = [e for e in events(publisher) if isinstance(e, TrainingCancelled)]
    assert cancelled.request_id == second.request_id and "ops" in cancelled.reason
    assert worker.queued() == [str(first.request_id)]
    assert worker.finished.get_nowait() == ("t", 1, 1)  # its offset can be committed
    assert runner.specs == []


def test_a_running_job_is_cancelled(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    started = threading.Event()
    publisher, runner = FakePublisher(), FakeJobRunner(block_until_stopped(started))
    worker = TrainerWorker(cfg, publisher, runner)
    req = request(cfg)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_jobs, args=(stop,))
    thread.start()
    try:
        worker.offer(req, ("t", 0, 3))
        assert started.wait(10)
        worker.cancel(CancelTraining(user_id="alice", request_id=req.request_id))
        assert worker.finished.get(timeout=10) == ("t", 0, 3)
    finally:
        stop.set()
        thread.join(10)
    assert kinds(publisher)[-1] == "TrainingCancelled"
    assert worker.ledger[str(req.request_id)].status == "cancelled"


def test_a_cancel_that_arrives_before_its_request_stops_it_from_starting(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, publisher, runner)
    req = request(cfg)
    worker.cancel(CancelTraining(user_id="alice", request_id=req.request_id))
    assert not worker.offer(req, ("t", 0, 0))
    assert kinds(publisher) == ["TrainingCancelled"] and runner.specs == []


def test_a_job_whose_partition_moves_stops_without_an_outcome(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    started = threading.Event()
    publisher = FakePublisher()
    worker = TrainerWorker(cfg, publisher, FakeJobRunner(block_until_stopped(started)))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_jobs, args=(stop,))
    thread.start()
    try:
        worker.offer(request(cfg), ("t", 2, 7))
        assert started.wait(10)
        worker.release({("t", 2)})  # returns once the job has stopped
    finally:
        stop.set()
        thread.join(10)
    assert kinds(publisher) == ["TrainingQueued", "TrainingStarted"]  # the next owner resumes it
    assert worker.finished.empty()


def test_a_job_resumed_after_its_adapter_was_published_publishes_the_same_adapter(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = FakePublisher()
    req = request(cfg)
    TrainerWorker(cfg, first, FakeJobRunner(succeed())).run_one(req)
    published = [e for e in events(first) if isinstance(e, AdapterPublished)]

    # A new worker whose ledger lost the outcome (killed between the rename and the events).
    again, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, again, runner)
    worker.fold([e for e in events(first) if isinstance(e, TrainingRequested | TrainingStarted)])
    assert worker.run_one(req)

    assert runner.specs == []  # not trained again
    republished = [e for e in events(again) if isinstance(e, AdapterPublished)]
    assert [(e.event_id, e.files) for e in republished] == [(p.event_id, p.files) for p in published]
    assert any(isinstance(e, TrainingSucceeded) for e in events(again))


def test_a_job_that_keeps_killing_its_worker_is_failed(tmp_path: Path) -> None:
    cfg = config(tmp_path, trainer={"max_interrupted_attempts": 2})
    req = request(cfg)
    worker = TrainerWorker(cfg, FakePublisher(), FakeJobRunner(succeed()))
    from trainer import outcomes

    worker.fold([req, outcomes.started(req, 1, "w1", 0, {}), outcomes.started(req, 2, "w2", 0, {})])
    worker.run_one(req)
    job = worker.ledger[str(req.request_id)]
    assert job.status == "failed" and "stopped 2 times" in job.cause


@pytest.mark.parametrize("incremental", [False, True])
def test_incremental_training_starts_from_the_current_adapter(tmp_path: Path, incremental: bool) -> None:
    cfg = config(tmp_path, training={"incremental": incremental})
    runner = FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, FakePublisher(), runner)
    worker.run_one(request(cfg, generation=1))
    worker.run_one(request(cfg, generation=2))
    first, second = runner.specs
    assert first.parent is None and first.baseline is None
    assert second.baseline is not None and second.baseline.version == 1
    assert (second.parent is not None) is incremental


def test_a_corrupt_adapter_already_in_place_fails_the_job_with_the_cause(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    req = request(cfg)
    TrainerWorker(cfg, FakePublisher(), FakeJobRunner(succeed())).run_one(req)
    store = ArtifactStore(cfg.artifact_root)
    (store.resolve(store.adapter_uri("alice", 1)) / "adapter_model.safetensors").write_bytes(b"tampered")

    publisher = FakePublisher()
    worker = TrainerWorker(cfg, publisher, FakeJobRunner(succeed()))
    worker.fold([req])
    worker.run_one(req)
    (failed,) = [e for e in events(publisher) if isinstance(e, TrainingFailed)]
    assert "unusable" in failed.cause and "sha256" in failed.cause


def test_erasing_a_user_cancels_their_jobs_and_removes_their_job_files(tmp_path: Path) -> None:
    from datetime import timedelta

    from schemas.commands import EraseUser

    cfg = config(tmp_path)
    publisher, runner = FakePublisher(), FakeJobRunner(succeed())
    worker = TrainerWorker(cfg, publisher, runner)
    done, queued, other = request(cfg, "alice", 1), request(cfg, "alice", 2), request(cfg, "bob", 1)
    assert worker.run_one(done)
    job_dir = worker.jobs_dir / str(done.request_id)
    (job_dir).mkdir(parents=True, exist_ok=True)
    (job_dir / "spec.json").write_text('{"user_id": "alice"}')
    assert worker.offer(queued, ("t", 0, 5)) and worker.offer(other, ("t", 1, 5))
    erase = EraseUser(user_id="alice", issued_at=queued.triggered_at + timedelta(seconds=1))

    worker.erase(erase)

    (cancelled,) = [e for e in events(publisher) if isinstance(e, TrainingCancelled)]
    assert cancelled.request_id == queued.request_id and cancelled.reason == "the user was erased"
    assert worker.queued() == [str(other.request_id)]
    assert not job_dir.exists()
    # Read again at the next start, an old erasure leaves the user's later jobs alone.
    later = request(cfg, "alice", 3)
    assert worker.offer(later, ("t", 0, 6))
    worker.erase(
        EraseUser(user_id="alice", command_id=erase.command_id, issued_at=later.triggered_at - timedelta(days=1))
    )
    assert str(later.request_id) in worker.queued()
