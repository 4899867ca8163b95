"""The trainer's job queue: each step atomic, nothing published under its lock (it has no publisher),
and a cancel meets its request in exactly one place however the two threads interleave."""

from __future__ import annotations

import threading
from pathlib import Path

from schemas.commands import CancelTraining
from tests.unit.test_trainer_worker import config, request
from trainer.job_queue import JobQueue, QueuedJob, RunningJob


def test_a_cancel_before_its_request_is_handed_to_the_add_that_follows(tmp_path: Path) -> None:
    jobs, req = JobQueue(), request(config(tmp_path))
    cancel = CancelTraining(user_id="alice", request_id=req.request_id, issued_by="ops")
    assert jobs.cancel(cancel) is None  # not seen yet: remembered
    assert jobs.add(QueuedJob(req, ("t", 0, 1))) == cancel  # the add meets it instead of queueing
    assert jobs.ids() == [] and not jobs.holds(str(req.request_id))


def test_a_cancel_withdraws_a_queued_job_and_asks_a_running_one_to_stop(tmp_path: Path) -> None:
    cfg, jobs = config(tmp_path), JobQueue()
    first, second = request(cfg, generation=1), request(cfg, generation=2)
    assert jobs.add(QueuedJob(first, None)) is None and jobs.add(QueuedJob(second, None)) is None
    assert jobs.ahead() == 2
    running = jobs.start_now()
    assert running.item.request_id == str(first.request_id) and jobs.ahead() == 2
    withdrawn = jobs.cancel(CancelTraining(user_id="alice", request_id=second.request_id, issued_by="ops"))
    assert isinstance(withdrawn, QueuedJob) and jobs.ids() == []
    stopped = jobs.cancel(CancelTraining(user_id="alice", request_id=first.request_id, issued_by="ops"))
    assert stopped is running and running.should_stop() == "cancelled by ops"
    assert not running.ask_to_stop("later")  # the first reason wins
    jobs.finished(running)
    assert running.done.is_set() and jobs.ahead() == 0


def test_release_and_close_abort_the_running_job_for_its_next_owner(tmp_path: Path) -> None:
    cfg, jobs = config(tmp_path), JobQueue()
    a, b = request(cfg, generation=1), request(cfg, generation=2)
    jobs.add(QueuedJob(a, ("t", 0, 1)))
    jobs.add(QueuedJob(b, ("t", 1, 1)))
    running = jobs.start_now()
    assert jobs.release({("t", 1)}, "moved") is None and jobs.ids() == []  # b's partition moved: dropped
    assert jobs.release({("t", 0)}, "moved") is running and running.aborted
    jobs.close("stopping")
    assert jobs.next(threading.Event(), lambda: True) is None


def test_next_waits_until_a_job_is_there_and_the_worker_is_ready(tmp_path: Path) -> None:
    jobs, req, ready = JobQueue(), request(config(tmp_path)), threading.Event()
    got: list[RunningJob | None] = []
    thread = threading.Thread(target=lambda: got.append(jobs.next(threading.Event(), ready.is_set)))
    thread.start()
    jobs.add(QueuedJob(req, None))
    thread.join(0.5)
    assert thread.is_alive()  # a job, but not ready
    ready.set()
    thread.join(5)
    assert not thread.is_alive() and got[0] is not None and got[0].item.request == req
