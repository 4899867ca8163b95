"""make bench-restore: how long a fresh decider takes to load its state after 20,000 and after
200,000 feedback events from the same 500 users (streams/decider/journal.py: state keyed by user, bounded).

For each stage a real decider (`samtuner streams --role decider`, a subprocess, on its own broker)
handles the new events until its group has committed them all, and is stopped (SIGTERM). The
changelog of its state is then left to the broker's cleaner until its size on disk stops
shrinking, and its messages are counted: `written` (offsets ever used, before compaction) and
`present` (what a restore reads). Then a fresh decider is started with one probe event waiting on
every partition, and timed:

* restore_s: from the process's start until every partition's state is loaded (the decider logs
  "partition N: decider state loaded" when its first batch there folds the table into memory),
  i.e. ready to decide: Python start-up, Faust's start, the group join, the changelog's restore;
* worker_restore_s: the same from the worker's first log line (after Python's imports);
* restore_cpu_s: the CPU time the process used until then (a busy machine stretches wall time).

Several restores per stage (BENCH_RUNS, default 3): medians. The last stdout line is one JSON
object. Environment: BENCH_USERS (500), BENCH_STAGES ("20000,200000"), BENCH_RUNS (3), BENCH_PROFILE
(a path: each stage's first restore runs under py-spy, raw collapsed stacks in PATH.<stage>; py-spy
slows it, so that run's times are not comparable), BENCH_KEEP (keep the work folder).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.broker import Broker, free_port  # noqa: E402
from infra.kafka import PRODUCER_DEFAULTS, client_config  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.events import FeedbackReceived  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from tests.integration.harness import group_lag  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(2000)]
LOADED = re.compile(r"partition (\d+): decider state loaded")


def say(msg: str) -> None:
    print(f"[bench-restore] {msg}", file=sys.stderr, flush=True)


def feedback(user: str, rng: random.Random) -> bytes:
    """A correction: mostly distinct, so that the users' rings fill with pairs and signatures."""
    prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
    original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
    corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
    eid = uuid.uuid4()
    event = FeedbackReceived(
        event_id=eid,
        correlation_id=eid,
        user_id=user,
        feedback_id=str(eid),
        prompt=prompt,
        original_response=original,
        corrected_response=corrected,
        confidence_score=0.9,
    )
    return event.model_dump_json().encode()


def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> set[int]:
    """Produce and wait for every ack; returns the partitions written to."""
    producer = Producer(client_config(bootstrap, **PRODUCER_DEFAULTS))
    partitions: set[int] = set()

    def acked(err: Any, msg: Any) -> None:
        if err is not None:
            raise RuntimeError(f"produce failed: {err}")
        partitions.add(msg.partition())

    for key, value in items:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=acked)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return partitions


def probes(bootstrap: str, topic: str, partitions: int, rng: random.Random) -> None:
    """One new event on each partition (users of the same 500), so that the decider loads them all."""
    missing, n = set(range(partitions)), 0
    while missing:
        user = f"user-{rng.randrange(500):05d}"
        missing -= produce(bootstrap, topic, [(user.encode(), feedback(user, rng))])
        n += 1
        if n > 2000:
            raise RuntimeError(f"no user maps to partitions {sorted(missing)}")


class Decider:
    """`samtuner streams --role decider` with its lines read as they come (for the timings)."""

    def __init__(self, cfg_path: Path, log_path: Path, profile: str | None = None) -> None:
        self.started = time.monotonic()
        # Under py-spy (BENCH_PROFILE) the profile is written when the decider stops.
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "200", "-o"]
        spy = [*spy, profile, "--"] if profile else []
        self.proc = subprocess.Popen(
            [
                *spy,
                sys.executable,
                "-m",
                "samtuner.cli",
                "streams",
                "--role",
                "decider",
                "-c",
                str(cfg_path),
                "--log-level",
                "INFO",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.profiled = bool(profile)
        self.first_line: float | None = None
        self.loaded: dict[int, float] = {}
        self._log = log_path.open("ab")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.monotonic()
            self._log.write(raw)
            if self.first_line is None:
                self.first_line = now
            match = LOADED.search(raw.decode(errors="replace"))
            if match:
                self.loaded.setdefault(int(match.group(1)), now)

    def wait_loaded(self, partitions: int, timeout_s: float) -> tuple[float, float, float]:
        """(seconds from the start, seconds from the first line, CPU seconds used) until loaded."""
        deadline = time.monotonic() + timeout_s
        while len(self.loaded) < partitions:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the decider did not load its {partitions} partitions ({sorted(self.loaded)})")
            time.sleep(0.01)
        cpu = cpu_seconds(self.worker_pid())
        last = max(self.loaded.values())
        return last - self.started, last - (self.first_line or self.started), cpu

    def worker_pid(self) -> int:
        """The decider's pid (under py-spy, py-spy's child)."""
        if not self.profiled:
            return self.proc.pid
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return int(children[0]) if children else self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.worker_pid(), signal.SIGTERM)  # under py-spy, it then writes the profile
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        self._log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (robust to a busy machine, unlike wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def wait_caught_up(cfg: Config, decider: Decider, timeout_s: float) -> None:
    t = Topics(cfg.kafka.topic_prefix)
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 2:
        if decider.proc.poll() is not None:
            raise RuntimeError("the decider exited")
        if time.monotonic() > deadline:
            raise RuntimeError("the decider did not catch up")
        try:
            quiet = quiet + 1 if group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control]) == 0 else 0
        except Exception:
            quiet = 0
        time.sleep(1.0)


def changelog_bytes(broker: Broker, topic: str) -> int:
    return sum(f.stat().st_size for d in broker.data_dir.glob(f"{topic}-*") for f in d.glob("*.log"))


def wait_compacted(broker: Broker, topic: str, timeout_s: float = 150) -> int:
    """Until the changelog's size on disk has not shrunk for 45 s (the cleaner backs off 15 s)."""
    deadline = time.monotonic() + timeout_s
    size, since = changelog_bytes(broker, topic), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 45:
        time.sleep(5)
        now = changelog_bytes(broker, topic)
        if now < size:
            size, since = now, time.monotonic()
    return size


def count_messages(bootstrap: str, topic: str) -> tuple[int, int]:
    """(offsets ever written, messages present) over the topic's partitions."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        written = sum(ends.values())
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        present, done = 0, set()
        while len(done) < len(ends):
            msgs = consumer.consume(10_000, timeout=5)
            if not msgs:
                break
            for m in msgs:
                if m.error():
                    continue
                present += 1
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
        return written, present
    finally:
        consumer.close()


def main() -> None:
    users = int(os.environ.get("BENCH_USERS", "500"))
    stages = [int(x) for x in os.environ.get("BENCH_STAGES", "20000,200000").split(",")]
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-"))
    broker = Broker(home=work / "kafka", port=free_port(), controller_port=free_port())
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    raw: dict[str, Any] = {
        "state_dir": str(work / "state"),
        "model": {"base": str(model)},
        "kafka": {"bootstrap_servers": "", "topic_prefix": "bench.", "partitions": 6},
        "trigger": {"min_new_pairs": 50},
        "streams": {"session_timeout_s": 10},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
    }
    result: dict[str, Any] = {"users": users, "runs": runs}
    try:
        broker.start()
        raw["kafka"]["bootstrap_servers"] = broker.bootstrap
        cfg = Config.model_validate(raw)
        (work / "state").mkdir()
        cfg_path = work / "samtuner.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        ensure_topics(cfg.kafka)
        topic = Topics(cfg.kafka.topic_prefix).feedback
        changelog = f"{cfg.streams.app_id}-decider-journal-changelog"
        result["state"] = cfg.streams.state.model_dump()
        done = 0
        for stage in stages:
            say(f"feeding {stage - done} events ({stage} in all) from {users} users")
            decider = Decider(cfg_path, work / "decider.log")
            try:
                for i in range(done, stage):
                    if i % 20_000 == 0 or i == done:
                        batch = []
                    user = f"user-{rng.randrange(users):05d}"
                    batch.append((user.encode(), feedback(user, rng)))
                    if len(batch) == 20_000 or i == stage - 1:
                        produce(broker.bootstrap, topic, batch)
                        batch = []
                wait_caught_up(cfg, decider, 3600)
            finally:
                decider.stop()
            done = stage
            say("  decided; waiting for the cleaner")
            size = wait_compacted(broker, changelog)
            written, present = count_messages(broker.bootstrap, changelog)
            say(f"  changelog: {present} messages present of {written} written, {size / 1e6:.1f} MB on disk")
            times, worker_times, cpus = [], [], []
            key = f"{stage // 1000}k"
            for run in range(runs):
                probes(broker.bootstrap, topic, cfg.kafka.partitions, rng)
                profile = os.environ.get("BENCH_PROFILE") if run == 0 else None
                decider = Decider(cfg_path, work / "decider.log", f"{profile}.{key}" if profile else None)
                try:
                    total, worker, cpu = decider.wait_loaded(cfg.kafka.partitions, 600)
                    wait_caught_up(cfg, decider, 600)
                finally:
                    decider.stop()
                times.append(total)
                worker_times.append(worker)
                cpus.append(cpu)
                say(
                    f"  restore {run + 1}: {total:.2f} s from the process's start, {worker:.2f} s from its first line, "
                    f"{cpu:.2f} s of CPU"
                )
            result[f"restore_s_{key}"] = round(statistics.median(times), 2)
            result[f"worker_restore_s_{key}"] = round(statistics.median(worker_times), 2)
            result[f"restore_cpu_s_{key}"] = round(statistics.median(cpus), 2)
            result[f"restore_runs_s_{key}"] = [round(t, 2) for t in times]
            result[f"changelog_written_{key}"] = written
            result[f"changelog_present_{key}"] = present
            result[f"changelog_mb_{key}"] = round(size / 1e6, 2)
        if len(stages) == 2:
            a, b = (f"{s // 1000}k" for s in stages)
            result["restore_ratio"] = round(result[f"restore_s_{b}"] / result[f"restore_s_{a}"], 2)
            result["restore_cpu_ratio"] = round(result[f"restore_cpu_s_{b}"] / result[f"restore_cpu_s_{a}"], 2)
        result["load_average_1m"] = round(os.getloadavg()[0], 1)
        print(json.dumps(result))
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        say(f"failed; logs kept in {work}")
        raise
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
