"""Several deciders, live: two decider processes and a projector process share a replay of 20,000
events. Mid-stream one decider is killed with SIGKILL and another starts; later a third joins and,
while the group rebalances for it, one leaves cleanly (SIGTERM). Afterwards the projection holds
exactly the expected pairs, every (user, generation) threshold and training request is on the wire
once, and the wire shows the fence: every output names the worker and the group generation it was
produced under, that worker held its source partition in that generation, and no output of an
earlier generation follows one of a later generation for the same source partition (a worker that
lost a partition published nothing more for it)."""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.kafka import KafkaEventPublisher, RawMessage, read_topic
from infra.topics import ensure_topics
from schemas.config import Config
from schemas.topics import Topics
from streams.decider.fence import GENERATION, WORKER, source_partition
from tests.integration.harness import (
    ROOT,
    MakeConfig,
    decisions_on_wire,
    group_lag,
    projected_pairs,
    training_requests_on_wire,
    wait_for,
)
from tests.integration.test_crash_recovery import EVENTS, THRESHOLD, WHOLE_HISTORY_STATE, generate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
PACE_PER_S = 800  # the replay is published while the deciders come and go
OWNS = re.compile(r"fence: worker (\S+) generation (\d+) owns partitions \[([\d, ]*)\]")
REBALANCE = "fence: worker {worker}: a rebalance started"


class Role:
    """``samtuner streams --role ROLE`` as a subprocess, its log kept."""

    def __init__(self, cfg_path: Path, role: str, name: str) -> None:
        self.name = name
        self.log_path = cfg_path.parent / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "samtuner.cli", "streams", "--role", role, "-c", str(cfg_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def worker(self) -> str | None:
        """The decider's worker id (host-pid), once it has been given partitions."""
        found = OWNS.search(self.log())
        return found.group(1) if found else None

    def tenures(self) -> list[tuple[str, int, frozenset[int]]]:
        return [
            (m.group(1), int(m.group(2)), frozenset(int(p) for p in m.group(3).split(",") if p.strip()))
            for m in OWNS.finditer(self.log())
        ]

    def owns_something(self) -> bool:
        tenures = self.tenures()
        return bool(tenures) and bool(tenures[-1][2])

    def sigterm(self, timeout_s: float = 90) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()


def lag(cfg: Config) -> int:
    t = Topics(cfg.kafka.topic_prefix)
    try:
        return group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control]) + group_lag(
            cfg, f"{cfg.streams.app_id}-projector", [t.pairs, t.training, t.adapters, t.dlq, t.inference, t.feedback]
        )
    except Exception:  # the group coordinator may still be loading
        return -1


def headers(msg: RawMessage) -> dict[str, str]:
    return {k: v.decode() for k, v in msg.headers}


def test_two_deciders_lose_and_gain_workers_mid_stream_and_emit_everything_once(make_config: MakeConfig) -> None:
    cfg, cfg_path = make_config(
        trigger={"min_new_pairs": THRESHOLD},
        kafka={"partitions": PARTITIONS},
        streams={"session_timeout_s": 6, "batch_size": 500, "state": WHOLE_HISTORY_STATE},
        console={"enabled": False},
    )  # its fixed port: tests run side by side
    topics = Topics(cfg.kafka.topic_prefix)
    messages, expected, per_user = generate(random.Random(20261202))
    ensure_topics(cfg.kafka)
    started = time.monotonic()

    projector = Role(cfg_path, "projector", "projector")
    a, b = Role(cfg_path, "decider", "decider-a"), Role(cfg_path, "decider", "decider-b")
    roles = [projector, a, b]
    try:
        wait_for(lambda: a.owns_something() and b.owns_something(), 180, "both deciders to own partitions")

        published = [0]

        def replay() -> None:
            publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
            for n, (key, value) in enumerate(messages):
                publisher.publish_raw(topics.feedback, key, value)
                published[0] = n + 1
                if n % 100 == 99:
                    publisher.flush(60)
                    time.sleep(100 / PACE_PER_S)
            publisher.flush(120)

        feeder = threading.Thread(target=replay, name="replay", daemon=True)
        feeder.start()

        # Mid-stream: a decider dies without a word, another takes its place.
        wait_for(lambda: published[0] >= EVENTS // 5 and lag(cfg) > 0, 120, "a fifth of the replay")
        a.kill()
        killed_at = published[0]
        c = Role(cfg_path, "decider", "decider-c")
        roles.append(c)
        wait_for(lambda: c.owns_something(), 180, "the replacement decider to own partitions")

        # A third decider joins; while the group rebalances for it, one leaves cleanly.
        worker_b = b.worker()
        assert worker_b is not None
        rebalances_before = b.log().count(REBALANCE.format(worker=worker_b))
        d = Role(cfg_path, "decider", "decider-d")
        roles.append(d)
        wait_for(
            lambda: b.log().count(REBALANCE.format(worker=worker_b)) > rebalances_before,
            180,
            "the group to rebalance for the third decider",
        )
        left_at = published[0]
        assert b.sigterm() == 0, b.log()[-3000:]

        feeder.join(timeout=300)
        assert not feeder.is_alive()
        quiet = [0]

        def caught_up() -> bool:
            for role in (projector, c, d):
                assert role.alive(), f"{role.name} exited with {role.proc.returncode}:\n{role.log()[-3000:]}"
            quiet[0] = quiet[0] + 1 if lag(cfg) == 0 else 0
            return quiet[0] >= 2

        wait_for(caught_up, 600, "the deciders and the projector to catch up", every_s=0.5)
    finally:
        codes = {role.name: role.sigterm() for role in roles if role.alive()}
    assert all(code == 0 for code in codes.values()), codes
    wall_s = time.monotonic() - started

    # The projection: exactly the expected pairs.
    count, projected, requests = projected_pairs(cfg)
    assert count == len(expected)
    assert projected == expected, f"missing {len(expected - projected)}, unexpected {len(projected - expected)}"

    # The wire: each pair, threshold and training request once.
    outputs = list(read_topic(cfg.kafka.bootstrap_servers, topics.pairs))
    pairs, thresholds = decisions_on_wire(outputs)
    accepted = collections.Counter(str(event.pair_id) for event in pairs)
    expected_generations = {(u, g) for u, n in per_user.items() for g in range(1, n // THRESHOLD + 1)}
    assert set(accepted) == expected and max(accepted.values()) == 1, "a pair is missing or was emitted twice"
    assert set(thresholds) == expected_generations
    assert max(thresholds.values()) == 1, [k for k, v in thresholds.items() if v > 1]
    assert sorted(requests) == sorted(expected_generations)
    training = training_requests_on_wire(cfg, topics.training)
    assert len(training) == len(expected_generations) and max(training.values()) == 1

    # The fence, on the wire: who produced each output, under which tenure.
    tenures: dict[tuple[str, int], frozenset[int]] = {}
    for role in roles[1:]:
        for worker, generation, partitions in role.tenures():
            tenures[(worker, generation)] = partitions
    # The deciders' outputs: decisions (src.* headers) and their dead letters (the projector writes both
    # topics too: an erasure report, its own dead letters).
    stamped = [m for m in outputs if "src.topic" in headers(m)]
    dead_letters = read_topic(cfg.kafka.bootstrap_servers, topics.dlq)
    stamped += [m for m in dead_letters if headers(m).get("dlq.stage") == "decider"]
    last: dict[tuple[str, int, int], tuple[int, int, str]] = {}  # (topic, partition, source) -> last stamp
    workers: set[str] = set()
    for msg in sorted(stamped, key=lambda m: (m.topic, m.partition, m.offset)):
        h = headers(msg)
        assert WORKER in h and GENERATION in h, f"{msg.topic}[{msg.partition}]@{msg.offset} names no worker"
        worker, generation = h[WORKER], int(h[GENERATION])
        source = source_partition(msg.headers)
        assert source is not None
        held = tenures.get((worker, generation), frozenset())
        assert source in held, (
            f"{msg.topic}[{msg.partition}]@{msg.offset}: {worker} published for source "
            f"partition {source} under generation {generation}, holding {sorted(held)}"
        )
        key = (msg.topic, msg.partition, source)
        before = last.get(key)
        assert before is None or before[0] <= generation, (
            f"{msg.topic}[{msg.partition}]@{msg.offset}: {worker} published for source partition {source} "
            f"under generation {generation} after {before[2]} did under generation {before[0]} (@{before[1]})"
        )
        last[key] = (generation, msg.offset, worker)
        workers.add(worker)
    assert len(workers) >= 3, f"the outputs came from {sorted(workers)} only: the deciders did not share the work"
    fenced = sum(len(re.findall(r"fence: worker \S+ lost partitions", role.log())) for role in roles[1:])
    print(
        f"\nseveral deciders: {EVENTS} events, decider killed at {killed_at} published, one left at {left_at}; "
        f"{len(expected)} pairs, {len(expected_generations)} thresholds once each; outputs from "
        f"{len(workers)} workers over {len({g for _, g in tenures})} generations; {fenced} fenced batches; "
        f"{wall_s:.0f}s"
    )
