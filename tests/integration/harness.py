"""Helpers for integration tests: a `samtuner run` process, waiting, reading topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import KafkaException

from infra.kafka import new_consumer, read_topic, watermarks
from schemas.codec import decode
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.events import Event
from tests.waiting import wait_for

# The make_config fixture (tests/conftest.py): make_config(trigger={...}, ...) -> (Config, its YAML path).
MakeConfig = Callable[..., tuple[Config, Path]]

ROOT = Path(__file__).resolve().parents[2]


def events_on(cfg: Config, topic: str) -> list[Event]:
    out = []
    for msg in read_topic(cfg.kafka.bootstrap_servers, topic):
        try:
            out.append(decode(msg.value))
        except EventDecodeError:
            continue
    return out


class RunningProcess:
    """``samtuner <command> -c cfg`` as a subprocess, with its log kept for failures."""

    def __init__(self, cfg: Config, cfg_path: Path, command: str = "run", log_name: str = "run.log") -> None:
        self.cfg = cfg
        self.log_path = cfg_path.parent / log_name
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "samtuner.cli", command, "-c", str(cfg_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = f"http://{cfg.inference.host}:{cfg.inference.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 180) -> None:
        def probe() -> bool:
            if not self.alive():
                raise AssertionError(f"process exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                return bool(httpx.get(f"{self.url}/healthz", timeout=2).json().get("registry_ready"))
            except httpx.HTTPError:
                return False

        wait_for(probe, timeout_s, "the node to be ready")

    def ask(self, prompt: str, user: str | None) -> dict[str, Any]:
        r = httpx.post(
            f"{self.url}/v1/chat/completions",
            timeout=60,
            json={"messages": [{"role": "user", "content": prompt}], "user": user},
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def stop(self, timeout_s: float = 60) -> int:
        if self.alive():
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


def group_lag(cfg: Config, group: str, topics: list[str]) -> int:
    """Messages in ``topics`` that consumer group ``group`` has not committed yet (all partitions)."""
    from confluent_kafka import TopicPartition

    consumer = new_consumer(cfg.kafka, group)
    try:
        partitions = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p) for p in meta.partitions]
        committed = consumer.committed(partitions, timeout=10)
        lag = 0
        for tp in committed:
            low, high = watermarks(consumer, tp.topic, tp.partition, 10)  # retries while a leader moves
            position = tp.offset if tp.offset >= 0 else low
            lag += max(0, high - position)
        return lag
    finally:
        consumer.close()


def wait_caught_up(cfg: Config, timeout_s: float = 120, proc: RunningProcess | None = None) -> None:
    """Until the deciders and the projector have committed everything there is (twice in a row)."""
    from schemas.topics import Topics

    t = Topics(cfg.kafka.topic_prefix)
    deciders = (cfg.streams.app_id, [t.feedback, t.control])
    projector = (f"{cfg.streams.app_id}-projector", [t.pairs, t.training, t.adapters, t.dlq, t.inference, t.feedback])
    quiet = [0]

    def probe() -> bool:
        if proc is not None and not proc.alive():
            raise AssertionError(f"the worker exited with {proc.proc.returncode}:\n{proc.log()[-4000:]}")
        try:
            lag = group_lag(cfg, *deciders) + group_lag(cfg, *projector)
        except KafkaException:  # e.g. the group coordinator is still loading
            lag = -1
        quiet[0] = quiet[0] + 1 if lag == 0 else 0
        return quiet[0] >= 2

    wait_for(probe, timeout_s, "the stream worker to catch up", every_s=0.5)


def projected_pairs(cfg: Config) -> tuple[int, set[str], list[tuple[Any, ...]]]:
    """From the store, ``FINAL``: the pair count, the pair ids, and (user, generation) of each training request."""
    from infra.clickhouse import ClickHouseStore

    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        (count,) = store.query("SELECT count() FROM sam.preference_pairs FINAL")[0]
        pair_ids = {str(r[0]) for r in store.query("SELECT pair_id FROM sam.preference_pairs FINAL")}
        requests = store.query("SELECT user_id, generation FROM sam.training_requests FINAL")
    finally:
        store.close()
    return int(count), pair_ids, [tuple(r) for r in requests]


def decisions_on_wire(messages: list[Any]) -> tuple[list[Any], Counter[tuple[str, int]]]:
    """The ``PairAccepted`` events among ``messages`` (raw, from the pairs topic), and how many times
    each (user, generation) threshold was emitted."""
    from schemas.events import PairAccepted, TrainingThresholdReached

    accepted: list[Any] = []
    thresholds: Counter[tuple[str, int]] = Counter()
    for msg in messages:
        try:
            event = decode(msg.value)
        except EventDecodeError:
            continue
        if isinstance(event, PairAccepted):
            accepted.append(event)
        elif isinstance(event, TrainingThresholdReached):
            thresholds[(event.user_id, event.generation)] += 1
    return accepted, thresholds


def training_requests_on_wire(cfg: Config, topic: str) -> Counter[Any]:
    """How many times each training request id was emitted on ``topic``."""
    from schemas.events import TrainingRequested

    out: Counter[Any] = Counter()
    for msg in read_topic(cfg.kafka.bootstrap_servers, topic):
        event = decode(msg.value)
        if isinstance(event, TrainingRequested):
            out[event.request_id] += 1
    return out
