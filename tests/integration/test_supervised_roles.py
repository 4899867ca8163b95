"""No role kills another: under `samtuner run` the decider is a supervised child process. Killed
with -9, it comes back on its own (a new pid) and the pipeline resumes, while the inference node in
the parent keeps answering every request; a kill -9 of the parent takes the child with it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from infra.kafka import KafkaEventPublisher
from samtuner.fixtures import feedback_line, parse_line, replay
from schemas.config import Config
from tests.integration.harness import MakeConfig, RunningProcess, wait_for

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 25, 9, tzinfo=UTC)


def decider_pids(node: RunningProcess) -> list[int]:
    """The parent's children that are decider processes (alive, not zombies)."""
    out = []
    for child in psutil.Process(node.proc.pid).children():
        try:
            if "samtuner.decider_process" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def corrections(cfg: Config, user: str, first: int, n: int) -> None:
    lines = [
        feedback_line(
            user,
            f"{user}-{i}",
            f"What is {i} times 7?",
            f"{i} times 7 is {i * 7}.",
            f"{i} times 7 is {i * 7}. Anything else?",
            T0 + timedelta(seconds=i),
        )
        for i in range(first, first + n)
    ]
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    replay([parse_line(line, "fixture") for line in lines], publisher, cfg.kafka.topic_prefix)
    publisher.flush()


def stats(node: RunningProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/v1/stats", timeout=10).json()
    return body


class Chatter:
    """Asks the node every ~100 ms in a thread; keeps every failure."""

    def __init__(self, node: RunningProcess) -> None:
        self.node = node
        self.answered = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.node.ask("What is 3 plus 1?", "carol")
                self.answered += 1
            except Exception as exc:  # any failure is what the test is about
                self.failures.append(repr(exc))


def test_the_node_keeps_answering_while_the_decider_is_killed_and_comes_back(make_config: MakeConfig) -> None:
    cfg, cfg_path = make_config(trigger={"min_new_pairs": 1000}, streams={"session_timeout_s": 6.0})
    node = RunningProcess(cfg, cfg_path)
    chatter = Chatter(node)
    try:
        node.wait_ready()
        [first] = wait_for(lambda: decider_pids(node), 60, "the decider process")
        corrections(cfg, "alice", 0, 4)
        wait_for(lambda: stats(node)["pairs_accepted"] == 4, 120, "the first pairs")

        chatter.thread.start()
        wait_for(lambda: chatter.answered >= 3, 60, "the first answers")
        psutil.Process(first).kill()
        [second] = wait_for(lambda: [p for p in decider_pids(node) if p != first], 60, "a new decider process")
        assert stats(node)["restarts_decider"] == 1
        answered_at_restart = chatter.answered

        corrections(cfg, "alice", 4, 3)  # the pipeline resumes: new feedback becomes pairs
        wait_for(lambda: stats(node)["pairs_accepted"] == 7, 180, "pairs from feedback sent after the restart")
        wait_for(lambda: chatter.answered >= answered_at_restart + 3, 60, "answers after the restart")
        chatter.stop.set()
        chatter.thread.join(60)
        assert chatter.failures == [], chatter.failures[:5]
        assert psutil.pid_exists(second) and decider_pids(node) == [second]
        assert node.alive()
        assert f"the decider role ended: pid {first} killed by SIGKILL" in node.log()

        node.kill()  # -9: the child must not outlive it
        wait_for(lambda: not _running(second), 30, "the decider to die with its parent")
    finally:
        chatter.stop.set()
        if node.alive():
            node.stop()


def test_sigterm_stops_the_parent_and_its_decider_cleanly(make_config: MakeConfig) -> None:
    cfg, cfg_path = make_config(trigger={"min_new_pairs": 1000})
    node = RunningProcess(cfg, cfg_path)
    try:
        node.wait_ready()
        [decider] = wait_for(lambda: decider_pids(node), 60, "the decider process")
        started = time.monotonic()
        code = node.stop()
    finally:
        if node.alive():
            node.kill()
    assert code == 0, node.log()[-3000:]
    assert not _running(decider), f"the decider outlived its parent ({time.monotonic() - started:.0f}s)"
    assert "the decider role ended" not in node.log()  # asked to stop: not counted as a failure


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_decider_that_cannot_start_says_why_and_the_supervisor_repeats_it(tmp_path: Path) -> None:
    from infra.broker import free_port
    from samtuner.supervisor import DeciderProcess

    # Nothing listens there: the child's own start (ensure_topics) fails and reports it on the pipe.
    cfg = Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
            "metrics": {"decider_port": 0},
        }
    )
    decider = DeciderProcess(cfg, "warn")
    decider.start()
    try:
        how = wait_for(decider.ended, 60, "the decider to give up on Kafka")
    finally:
        decider.stop(10)
    assert how.startswith(f"pid {decider.pid} exited with code 1: ")
    assert cfg.kafka.bootstrap_servers in how
