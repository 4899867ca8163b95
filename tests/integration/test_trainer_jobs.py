"""The job state machine on the real broker: a repeated request, cancel, failure -> retry -> give up,
and kill -> resume -> exactly one adapter. Trainers run in this process (with a scripted job runner
or the real training subprocess) or as ``samtuner trainer`` processes that the tests kill."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from infra.artifacts import ArtifactStore
from infra.kafka import KafkaEventPublisher, publish_command
from infra.topics import ensure_topics
from schemas.commands import CancelTraining
from schemas.config import Config
from schemas.events import (
    AdapterPublished,
    Event,
    TrainingCancelled,
    TrainingFailed,
    TrainingProgressed,
    TrainingQueued,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from schemas.topics import Topics
from tests.integration.harness import RunningProcess, events_on, wait_for
from tests.trainer_fakes import FakeJobRunner, fail, succeed
from trainer.consumer import run_trainer
from trainer.local import local_request, pair_rows
from trainer.manifest import read_manifest
from trainer.runner import JobRunner

pytestmark = pytest.mark.integration

SIGN_OFF = "Hope this helps!"


def request(cfg: Config, user: str = "alice", generation: int = 1, n: int = 16) -> TrainingRequested:
    rows = pair_rows(
        user,
        [
            (
                f"What is {i} plus {generation}?",
                f"{i} plus {generation} is {i + generation}. {SIGN_OFF}",
                f"{i} plus {generation} is {i + generation}.",
            )
            for i in range(n)
        ],
    )
    return local_request(ArtifactStore(cfg.artifact_root), user, generation, rows, trigger="threshold")


def publish(cfg: Config, *events: Event) -> None:
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    for event in events:
        publisher.publish(Topics(cfg.kafka.topic_prefix).training, event)
    publisher.flush()


def cancel(cfg: Config, req: TrainingRequested) -> None:
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    publish_command(
        publisher,
        Topics(cfg.kafka.topic_prefix).control,
        CancelTraining(user_id=req.user_id, request_id=req.request_id, issued_by="test"),
    )
    publisher.flush()


def job_events(cfg: Config, req: TrainingRequested) -> list[Event]:
    return [
        e
        for e in events_on(cfg, Topics(cfg.kafka.topic_prefix).training)
        if getattr(e, "request_id", None) == req.request_id
    ]


def adapters(cfg: Config, req: TrainingRequested) -> list[AdapterPublished]:
    return [
        e
        for e in events_on(cfg, Topics(cfg.kafka.topic_prefix).adapters)
        if isinstance(e, AdapterPublished) and e.request_id == req.request_id
    ]


def ended(
    cfg: Config, req: TrainingRequested, kind: type[Event] = TrainingSucceeded, timeout_s: float = 120
) -> list[Event]:
    return wait_for(
        lambda: evs if (evs := job_events(cfg, req)) and any(isinstance(e, kind) for e in evs) else None,
        timeout_s,
        f"{kind.__name__} for {req.user_id}",
    )


@contextmanager
def trainer(cfg: Config, runner: JobRunner | None = None, worker_id: str = "w1") -> Iterator[None]:
    """A trainer worker in this process (its Kafka loop in a thread) until the block ends."""
    ensure_topics(cfg.kafka)
    stop = threading.Event()
    thread = threading.Thread(
        target=run_trainer, args=(cfg, stop), kwargs={"runner": runner, "worker_id": worker_id}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the trainer did not stop"


def configured(make_config: Any, dpo: dict[str, Any] | None = None, **sections: dict[str, Any]) -> tuple[Config, Path]:
    """make_config with some training.dpo keys changed (make_config replaces a section's keys whole)."""
    if dpo:
        base, _ = make_config()
        sections["training"] = {**sections.get("training", {}), "dpo": {**base.training.dpo, **dpo}}
    cfg, path = make_config(**sections)
    return cfg, Path(path)


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, TrainingProgressed)]


def test_a_repeated_request_runs_one_job(make_config: Any) -> None:
    cfg, _ = make_config()
    runner = FakeJobRunner(succeed())
    req = request(cfg)
    with trainer(cfg, runner):
        publish(cfg, req, req)
        events = ended(cfg, req)
        time.sleep(1.0)  # the repeated request is handled by now
    assert len(runner.specs) == 1
    assert kinds(job_events(cfg, req)) == [
        "TrainingRequested",
        "TrainingRequested",
        "TrainingQueued",
        "TrainingStarted",
        "TrainingSucceeded",
    ]
    assert [e.version for e in adapters(cfg, req)] == [1]
    assert any(isinstance(e, TrainingProgressed) for e in events)


def test_failures_that_can_pass_are_retried_then_given_up_with_the_cause(make_config: Any) -> None:
    cfg, _ = make_config(trainer={"max_attempts": 3, "retry_backoff_s": 0.2})
    runner = FakeJobRunner(fail(cause="CUDA out of memory. Tried to allocate 3.00 GiB"))
    req = request(cfg)
    with trainer(cfg, runner):
        publish(cfg, req)
        events = ended(cfg, req, TrainingFailed, 60)
        wait_for(
            lambda: (
                (evs := job_events(cfg, req)) and isinstance(evs[-1], TrainingFailed) and not evs[-1].will_retry and evs
            ),
            60,
            "the final failure",
        )
        events = job_events(cfg, req)
    failures = [e for e in events if isinstance(e, TrainingFailed)]
    assert [(f.attempt, f.will_retry) for f in failures] == [(1, True), (2, True), (3, False)]
    assert "retrying with batch 4 x 2" in failures[0].cause and failures[0].retry_in_s == 0.2
    assert failures[-1].cause.startswith("gave up after 3 attempt(s)") and "3.00 GiB" in failures[-1].cause
    assert [e.attempt for e in events if isinstance(e, TrainingStarted)] == [1, 2, 3]
    assert [o.get("per_device_train_batch_size") for o in runner.overrides()] == [None, 4, 2]
    assert adapters(cfg, req) == []


def test_an_injected_out_of_memory_is_retried_by_the_real_job(make_config: Any) -> None:
    cfg, _ = make_config(
        trainer={"retry_backoff_s": 0.1, "fault_injection": {"fail_attempts": 1, "failure": "OutOfMemoryError"}}
    )
    req = request(cfg)
    with trainer(cfg):
        publish(cfg, req)
        events = ended(cfg, req, TrainingSucceeded, 240)
    (retry,) = [e for e in events if isinstance(e, TrainingFailed)]
    assert retry.will_retry and retry.error_type == "OutOfMemoryError" and "injected" in retry.cause
    second = [e for e in events if isinstance(e, TrainingStarted)][-1]
    assert second.attempt == 2 and second.overrides == {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
    }
    (published,) = adapters(cfg, req)
    manifest = read_manifest(ArtifactStore(cfg.artifact_root), published.uri)
    assert manifest["overrides"] == second.overrides and manifest["attempt"] == 2
    assert manifest["resolved_training"]["per_device_train_batch_size"] == 2


def test_cancel_stops_a_running_job_within_seconds_and_a_queued_one_before_it_starts(make_config: Any) -> None:
    cfg, _ = configured(make_config, dpo={"num_train_epochs": 50}, trainer={"fault_injection": {"step_delay_s": 0.5}})
    running, waiting = request(cfg, "alice"), request(cfg, "bob")
    with trainer(cfg):
        publish(cfg, running, waiting)
        wait_for(
            lambda: any(isinstance(e, TrainingProgressed) for e in job_events(cfg, running)),
            120,
            "alice's job to make progress",
        )
        assert any(isinstance(e, TrainingQueued) for e in job_events(cfg, waiting))
        cancel(cfg, waiting)
        ended(cfg, waiting, TrainingCancelled, 30)
        asked = time.monotonic()
        cancel(cfg, running)
        ended(cfg, running, TrainingCancelled, 30)
        took = time.monotonic() - asked
        time.sleep(1.0)
        assert not training_processes(cfg), "the training process outlived its cancel"
    assert took < 15, f"cancelling took {took:.1f}s"
    assert kinds(job_events(cfg, waiting)) == ["TrainingRequested", "TrainingQueued", "TrainingCancelled"]
    assert "TrainingStarted" in kinds(job_events(cfg, running))
    assert adapters(cfg, running) == [] and adapters(cfg, waiting) == []


def training_processes(cfg: Config) -> list[int]:
    """Pids of training subprocesses of this test's trainer (their spec lives under its state dir)."""
    marker = str(cfg.state_path / "trainer" / "jobs").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"trainer.job" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids


def test_a_killed_trainer_is_resumed_from_its_checkpoint_and_publishes_exactly_one_adapter(make_config: Any) -> None:
    cfg, cfg_path = configured(
        make_config,
        dpo={"num_train_epochs": 6},
        training={"checkpoint_steps": 2},
        trainer={"fault_injection": {"step_delay_s": 0.3}, "session_timeout_ms": 6000},
        evaluation={"early_stopping_patience": 0},
    )
    ensure_topics(cfg.kafka)
    req = request(cfg)
    first = RunningProcess(cfg, cfg_path, command="trainer", log_name="trainer-1.log")
    second = None
    try:
        publish(cfg, req)
        wait_for(
            lambda: any(
                isinstance(e, TrainingProgressed) and e.loss is not None and e.step >= 5 for e in job_events(cfg, req)
            ),
            180,
            "the job to pass a checkpoint",
        )
        assert training_processes(cfg), "no training process is running"
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        wait_for(lambda: not training_processes(cfg), 15, "the orphaned training process to exit")
        checkpoints = sorted(p.name for p in (cfg.artifact_root / "checkpoints" / str(req.request_id)).iterdir())
        assert any(name.startswith("checkpoint-") for name in checkpoints), checkpoints

        second = RunningProcess(cfg, cfg_path, command="trainer", log_name="trainer-2.log")
        events = ended(cfg, req, TrainingSucceeded, 240)
    finally:
        first.kill() if first.alive() else first.stop()
        if second is not None:
            assert second.stop() == 0, second.log()[-3000:]
    starts = [e for e in events if isinstance(e, TrainingStarted)]
    assert [s.attempt for s in starts] == [1, 2]
    assert starts[0].resumed_from_step == 0 and starts[1].resumed_from_step >= 2
    assert starts[0].worker != starts[1].worker
    resumed = [e for e in events if isinstance(e, TrainingProgressed) and e.attempt == 2 and e.loss is not None]
    assert resumed and min(e.step for e in resumed) > starts[1].resumed_from_step
    assert len([e for e in events if isinstance(e, TrainingSucceeded)]) == 1
    published = adapters(cfg, req)
    assert len({e.event_id for e in published}) == 1 and [e.version for e in published] == [1]
    read_manifest(ArtifactStore(cfg.artifact_root), published[0].uri)  # checksums hold
    assert not (cfg.artifact_root / "checkpoints" / str(req.request_id)).exists()


def test_two_workers_share_the_jobs_as_one_group(make_config: Any) -> None:
    cfg, _ = make_config()
    one, two = FakeJobRunner(succeed()), FakeJobRunner(succeed())
    requests = [request(cfg, user) for user in ("alice", "bob", "carol", "dave", "erin", "frank")]
    with trainer(cfg, one, "w1"), trainer(cfg, two, "w2"):
        time.sleep(3)  # both have joined
        publish(cfg, *requests)
        for req in requests:
            ended(cfg, req, TrainingSucceeded, 60)
    ran = sorted(s.request_id for s in one.specs + two.specs)
    assert ran == sorted(str(r.request_id) for r in requests)  # every job once, none twice
    assert one.specs and two.specs, "one worker did all the work"
