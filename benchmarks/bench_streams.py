"""make bench-streams: throughput and latency of the deciders, against Faust's own ceiling (a no-op
agent) and a bare aiokafka consumer, on the same broker in the same run.

N feedback events (500 users, ~10% duplicates, ~5% malformed) are generated; then:
1. a bare aiokafka consumer reads them from a topic of their own (bare_consume_per_s, for context);
2. a no-op Faust agent decodes and counts them there (noop_faust_per_s: the framework's ceiling);
3. one decider process (`samtuner streams --role decider`) and one projector process (`--role
   projector`), as the product runs them, start idle; then the N events are produced to the feedback
   topic. events_per_s = N / (last pair visible - first event produced): the clock starts when the
   first event is handed to the producer, so it includes the time to the first visible pair
   (`preference_pairs.projected_at`, the insert's time in ClickHouse). `trigger.min_new_pairs` is
   low enough (BENCH_MIN_PAIRS, default 20; ~34 pairs per user) that training thresholds fire inside
   this phase; thresholds_in_phase counts those on the wire before its end. decided_per_s is the
   deciders' own rate: N / (their last output on the pairs topic - first event produced).
   worker_cpu_us_per_event = the decider process's CPU time / N, projector_cpu_us_per_event the
   projector's (robust to a busy machine, unlike rates);
4. with them running, M more events are offered at 1,000 events/s; latency = projected_at -
   created_at (the produce time) of each pair: p50, p99 and max. latency_ms_decide and
   latency_ms_project split it: produce to the PairAccepted on the pairs topic (the decider's
   produce time), and from there to projected_at;
5. the same as 3 and 4 with two decider processes (and one projector) on fresh topics:
   events_per_s_2_deciders (both deciders hold partitions before the events are produced) and
   latency_ms_*_2_deciders;
6. unless BENCH_RESTORE=0, `benchmarks/bench_restore.py` (its own broker): restore_s_20k, restore_s_200k.
The last stdout line is one JSON object. Environment: BENCH_N (default 20000), BENCH_M (5000),
BENCH_MIN_PAIRS (20), BENCH_BATCH_SIZE and BENCH_BATCH_TIMEOUT_S (streams.batch_size and
batch_timeout_s, default the config's), BENCH_PROFILE (a path: record the decider with py-spy, raw collapsed stacks),
BENCH_KEEP (keep the work folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stats import percentile  # noqa: E402
from infra.broker import Broker, free_port  # noqa: E402
from infra.clickhouse import ClickHouseStore  # noqa: E402
from infra.kafka import PRODUCER_DEFAULTS, aiokafka_auth, client_config, settings_of  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.events import FeedbackReceived  # noqa: E402
from schemas.topics import Topics  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(2000)]


def say(msg: str) -> None:
    print(f"[bench-streams] {msg}", file=sys.stderr, flush=True)


def feedback_values(n: int, users: int, rng: random.Random, now: bool = False) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: ~85% distinct corrections, ~10% duplicates of earlier ones, ~5% malformed."""
    out: list[tuple[bytes, bytes]] = []
    earlier: list[tuple[str, str, str, str]] = []
    for _ in range(n):
        user = f"user-{rng.randrange(users):05d}"
        roll = rng.random()
        if roll < 0.05:
            out.append((user.encode(), rng.choice([b"not json", b'{"event_type": "FeedbackReceived"}', b"\xff\xfe"])))
            continue
        if roll < 0.15 and earlier:
            user, prompt, original, corrected = rng.choice(earlier)
        else:
            prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
            original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
            corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
            earlier.append((user, prompt, original, corrected))
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
            **({"occurred_at": datetime.now(UTC)} if now else {}),
        )
        out.append((user.encode(), event.model_dump_json().encode()))
    return out


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]], rate: float | None = None) -> None:
    producer = Producer(client_config(bootstrap, **PRODUCER_DEFAULTS))
    start = time.monotonic()
    for i, (key, value) in enumerate(values):
        if rate is not None:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if b"occurred_at" in value:  # stamp the produce time for the latency measurement
                event = json.loads(value)
                event["occurred_at"] = datetime.now(UTC).isoformat()
                value = json.dumps(event).encode()
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def bare_consume(bootstrap: str, topic: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    async def run() -> float:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=f"bare-{uuid.uuid4().hex[:6]}",
            **aiokafka_auth(settings_of(bootstrap)),
        )
        await consumer.start()
        try:
            seen, start = 0, None
            while seen < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batch.values():
                    if start is None:
                        start = time.perf_counter()
                    seen += len(records)
            return n / (time.perf_counter() - (start or time.perf_counter()))
        finally:
            await consumer.stop()

    return asyncio.run(run())


NOOP_APP = textwrap.dedent("""
    import json, os, time, faust
    bootstrap, topic, n, out = os.environ["NOOP_BOOTSTRAP"], os.environ["NOOP_TOPIC"], int(os.environ["NOOP_N"]), \
        os.environ["NOOP_OUT"]
    app = faust.App(f"noop-{time.time_ns()}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                    consumer_auto_offset_reset="earliest")
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "t0": None}

    @app.agent(source, concurrency=1)
    async def count(stream):
        async for batch in stream.take(1000, within=0.5):
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            for value in batch:
                try:
                    json.loads(value)
                except ValueError:
                    pass
            state["n"] += len(batch)
            if state["n"] >= n:
                with open(out, "w") as fh:
                    fh.write(str(state["n"] / (time.perf_counter() - state["t0"])))
                state["n"] = -10**12

    if __name__ == "__main__":
        app.main()
""")


def noop_faust(bootstrap: str, topic: str, n: int, work: Path) -> float:
    script = work / "noop_app.py"
    script.write_text(NOOP_APP)
    result = work / "noop.rate"
    env = {**os.environ, "NOOP_BOOTSTRAP": bootstrap, "NOOP_TOPIC": topic, "NOOP_N": str(n), "NOOP_OUT": str(result)}
    proc = subprocess.Popen(
        [sys.executable, str(script), "worker", "-l", "warn"],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "noop.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 300
        while not result.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the no-op Faust app failed; see {work / 'noop.log'}")
            time.sleep(0.2)
        time.sleep(0.1)
        return float(result.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its waited-for children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _worker_pid(proc: subprocess.Popen[bytes], profiled: bool) -> int:
    if not profiled:
        return proc.pid
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if children else proc.pid


def lag(cfg: Config) -> int:
    from tests.integration.harness import group_lag

    t = Topics(cfg.kafka.topic_prefix)
    return group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control]) + group_lag(
        cfg, f"{cfg.streams.app_id}-projector", [t.pairs, t.training, t.adapters, t.dlq, t.inference, t.feedback]
    )


def members_with_partitions(cfg: Config) -> int:
    """How many members of the deciders' group hold at least one partition."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(cfg.kafka.bootstrap_servers))
    group = admin.describe_consumer_groups([cfg.streams.app_id])[cfg.streams.app_id].result(timeout=10)
    return sum(1 for member in group.members if member.assignment and member.assignment.topic_partitions)


class Workers:
    """The deciders and the projector of one phase, each `samtuner streams --role ...` in its own process."""

    def __init__(self, cfg: Config, configs: list[Path], work: Path, profile: str | None) -> None:
        self.cfg = cfg
        self.procs: list[tuple[str, subprocess.Popen[bytes], bool]] = []
        for i, path in enumerate(configs):
            role = "projector" if i == 0 else "decider"
            command = [
                sys.executable,
                "-m",
                "samtuner.cli",
                "streams",
                "--role",
                role,
                "-c",
                str(path),
                "--log-level",
                "INFO",
            ]
            profiled = bool(profile) and i == 1
            if profiled:  # the first decider under py-spy; it writes the profile when it stops
                command = [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "-r",
                    "200",
                    "-o",
                    str(profile),
                    "--subprocesses",
                    "--",
                    *command,
                ]
            log = (work / f"{path.stem}.log").open("wb")
            self.procs.append(
                (role, subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), profiled)
            )

    def pids(self, role: str) -> list[int]:
        return [_worker_pid(proc, profiled) for r, proc, profiled in self.procs if r == role]

    def cpu(self, role: str) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids(role))

    def check(self) -> None:
        for role, proc, _ in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a {role} process exited ({proc.returncode})")

    def wait_caught_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while time.monotonic() < deadline:
            self.check()
            try:
                quiet = quiet + 1 if lag(self.cfg) == 0 else 0
            except Exception:
                quiet = 0
            if quiet >= 2:
                return
            time.sleep(0.5)
        raise RuntimeError("the stream workers did not catch up")

    def wait_assigned(self, deciders: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            try:
                if members_with_partitions(self.cfg) >= deciders:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{deciders} deciders did not all get partitions")

    def stop(self) -> None:
        for _, proc, profiled in self.procs:
            with contextlib.suppress(ProcessLookupError):  # under py-spy, it then writes the profile
                os.kill(_worker_pid(proc, profiled), signal.SIGTERM)
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def phase_configs(raw: dict[str, Any], work: Path, name: str, deciders: int) -> tuple[Config, list[Path]]:
    """One projector's and ``deciders`` deciders' configs: one group and topics per phase, a state folder
    per process (the projector's holds the embedded ClickHouse)."""
    paths = []
    for i in range(deciders + 1):
        state = work / name / f"state-{i}"
        state.mkdir(parents=True, exist_ok=True)
        mine = {
            **raw,
            "state_dir": str(state),
            "kafka": {**raw["kafka"], "topic_prefix": f"{name}."},
            "streams": {**raw["streams"], "app_id": f"{name}-streams"},
        }
        path = work / f"{name}-{'projector' if i == 0 else f'decider{i}'}.yaml"
        path.write_text(yaml.safe_dump(mine))
        paths.append(path)
    return Config.model_validate(yaml.safe_load(paths[0].read_text())), paths


def decider_outputs(cfg: Config) -> list[tuple[float, bytes, bytes]]:
    """(append time in s, event type, value) of every message on the pairs topic: what the deciders emitted."""
    from confluent_kafka import Consumer, TopicPartition

    topic = Topics(cfg.kafka.topic_prefix).pairs
    consumer = Consumer(
        client_config(
            cfg.kafka.bootstrap_servers, **{"group.id": f"count-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out = []
        while ends:
            for msg in consumer.consume(1000, timeout=5):
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None and offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                kind = dict(msg.headers() or []).get("event_type")
                out.append((msg.timestamp()[1] / 1000, kind if isinstance(kind, bytes) else b"", msg.value() or b""))
        return out
    finally:
        consumer.close()


def _ms_percentiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``values`` (ms)."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1),
    }


def latency_stages(
    emitted: list[tuple[float, bytes, bytes]], projected: dict[str, float], since: datetime
) -> dict[str, dict[str, float]]:
    """Where a pair's latency goes: ``decide`` = its PairAccepted's time on the pairs topic (the decider's
    produce time) - its feedback's produce time (``created_at``); ``project`` = ``projected_at`` - that
    time on the pairs topic. Over the pairs produced from ``since`` on (the latency phase)."""
    decide: list[float] = []
    project: list[float] = []
    for at, kind, value in emitted:
        if kind != b"PairAccepted":
            continue
        event = json.loads(value)
        created = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00")).timestamp()
        if created < since.timestamp():
            continue
        decide.append((at - created) * 1000)
        if event["pair_id"] in projected:
            project.append((projected[event["pair_id"]] - at) * 1000)
    return {"decide": _ms_percentiles(decide), "project": _ms_percentiles(project)}


def throughput(
    raw: dict[str, Any],
    work: Path,
    name: str,
    deciders: int,
    values: list[tuple[bytes, bytes]],
    m: int,
    rng: random.Random,
    profile: str | None = None,
) -> dict[str, Any]:
    """Feed ``values`` to idle workers (and then, if ``m``, offer ``m`` more at 1,000/s): the phase's figures."""
    cfg, paths = phase_configs(raw, work, name, deciders)
    ensure_topics(cfg.kafka)
    topic = Topics(cfg.kafka.topic_prefix).feedback
    workers = Workers(cfg, paths, work, profile)
    out: dict[str, Any] = {}
    marker = None
    projected: dict[str, float] = {}  # pair id -> projected_at (s), of the latency phase
    try:
        workers.wait_assigned(deciders, 300)
        workers.wait_caught_up(300)  # the groups are formed, nothing to do yet
        cpu0 = {role: workers.cpu(role) for role in ("decider", "projector")}
        started = datetime.now(UTC)
        produce(cfg.kafka.bootstrap_servers, topic, values)
        workers.wait_caught_up(900)
        out.update({f"{role}_cpu_s": workers.cpu(role) - cpu0[role] for role in cpu0})
        if m:
            say(f"offering {m} events at 1,000/s")
            marker = datetime.now(UTC)
            produce(cfg.kafka.bootstrap_servers, topic, feedback_values(m, users=500, rng=rng, now=True), rate=1000)
            workers.wait_caught_up(300)
    finally:
        workers.stop()
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        first, last, pairs = store.query(
            "SELECT min(projected_at), max(projected_at), count() FROM sam.preference_pairs "
            "WHERE created_at < {m:DateTime64(3)}",
            {"m": marker or datetime.now(UTC)},
        )[0]
        if marker is not None:
            p50, p99, top, offered = store.query(
                "SELECT quantile(0.5)(dateDiff('millisecond', created_at, projected_at)), "
                "quantile(0.99)(dateDiff('millisecond', created_at, projected_at)), "
                "max(dateDiff('millisecond', created_at, projected_at)), count() "
                "FROM sam.preference_pairs WHERE created_at >= {m:DateTime64(3)}",
                {"m": marker},
            )[0]
            out.update(p50=float(p50), p99=float(p99), max=float(top), latency_pairs=int(offered))
            rows = store.query(
                "SELECT toString(pair_id), projected_at FROM sam.preference_pairs "
                "WHERE created_at >= {m:DateTime64(3)}",
                {"m": marker},
            )
            projected = {pid: (at.replace(tzinfo=UTC) if at.tzinfo is None else at).timestamp() for pid, at in rows}
    finally:
        store.close()
    end = last.replace(tzinfo=UTC) if last.tzinfo is None else last
    span = (end - started).total_seconds()
    # The deciders' own rate: to their last output of this phase (on the wire, before the projector).
    outputs = decider_outputs(cfg)
    if marker is not None:
        out["stages"] = latency_stages(outputs, projected, marker)
    emitted = [(at, kind) for at, kind, _ in outputs if at <= (marker or datetime.now(UTC)).timestamp()]
    decided = max(at for at, _ in emitted) - started.timestamp()
    out.update(
        pairs=int(pairs),
        rate=len(values) / span if span > 0 else float("nan"),
        decided_rate=len(values) / decided if decided > 0 else float("nan"),
        first_pair_s=((first.replace(tzinfo=UTC) if first.tzinfo is None else first) - started).total_seconds(),
        thresholds=sum(1 for at, kind in emitted if kind == b"TrainingThresholdReached" and at <= end.timestamp()),
    )
    return out


def _streams_overrides() -> dict[str, Any]:
    """BENCH_BATCH_SIZE / BENCH_BATCH_TIMEOUT_S: try other streams.batch_size / batch_timeout_s."""
    out: dict[str, Any] = {}
    if os.environ.get("BENCH_BATCH_SIZE"):
        out["batch_size"] = int(os.environ["BENCH_BATCH_SIZE"])
    if os.environ.get("BENCH_BATCH_TIMEOUT_S"):
        out["batch_timeout_s"] = float(os.environ["BENCH_BATCH_TIMEOUT_S"])
    return out


def restore_figures() -> dict[str, Any]:
    """``make bench-restore``'s figures (its own broker and decider), its progress on stderr."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_restore.py")],
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {k: v for k, v in figures.items() if k.startswith(("restore_", "changelog_"))}


def main() -> None:
    n = int(os.environ.get("BENCH_N", "20000"))
    m = int(os.environ.get("BENCH_M", "5000"))
    rng = random.Random(42)
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    broker = Broker(home=work / "kafka", port=free_port(), controller_port=free_port())
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    raw: dict[str, Any] = {
        "model": {"base": str(model)},
        "kafka": {"bootstrap_servers": "", "topic_prefix": "bench.", "partitions": 6},
        "trigger": {"min_new_pairs": int(os.environ.get("BENCH_MIN_PAIRS", "20"))},
        "streams": {"session_timeout_s": 10, **_streams_overrides()},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
        "console": {"enabled": False},
    }
    try:
        broker.start()
        raw["kafka"]["bootstrap_servers"] = broker.bootstrap
        cfg = Config.model_validate({**raw, "state_dir": str(work / "state")})
        ensure_topics(cfg.kafka)
        noop_topic = f"{cfg.kafka.topic_prefix}noop.feedback"
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(client_config(broker.bootstrap))
        admin.create_topics([NewTopic(noop_topic, cfg.kafka.partitions, 1)])[noop_topic].result()
        values = feedback_values(n, users=500, rng=rng)
        say(f"producing {n} events for the baselines")
        produce(broker.bootstrap, noop_topic, values)
        say("bare aiokafka consumer")
        bare = bare_consume(broker.bootstrap, noop_topic, n)
        say(f"  {bare:,.0f} msg/s; no-op Faust agent")
        noop = noop_faust(broker.bootstrap, noop_topic, n, work)
        say(f"  {noop:,.0f} events/s; one decider and one projector (started idle, then fed)")
        one = throughput(raw, work, "one", 1, values, m, rng, os.environ.get("BENCH_PROFILE"))
        say(f"  {one['rate']:,.0f} events/s; two deciders and one projector")
        two = throughput(raw, work, "two", 2, values, m, rng)
        say(f"  {two['rate']:,.0f} events/s")
        result = {
            "events": n,
            "pairs_visible": one["pairs"],
            "thresholds_in_phase": one["thresholds"],
            "events_per_s": round(one["rate"], 1),
            "first_pair_s": round(one["first_pair_s"], 2),
            "latency_ms_p50": round(one["p50"], 1),
            "latency_ms_p99": round(one["p99"], 1),
            "latency_ms_max": round(one["max"], 1),
            "latency_pairs": one["latency_pairs"],
            "latency_ms_decide": one["stages"]["decide"],
            "latency_ms_project": one["stages"]["project"],
            "latency_ms_p50_2_deciders": round(two["p50"], 1),
            "latency_ms_p99_2_deciders": round(two["p99"], 1),
            "latency_ms_max_2_deciders": round(two["max"], 1),
            "latency_ms_decide_2_deciders": two["stages"]["decide"],
            "latency_ms_project_2_deciders": two["stages"]["project"],
            "worker_cpu_us_per_event": round(one["decider_cpu_s"] / n * 1e6, 1),
            "projector_cpu_us_per_event": round(one["projector_cpu_s"] / n * 1e6, 1),
            "noop_faust_per_s": round(noop, 1),
            "ratio": round(one["rate"] / noop, 3),
            "decided_per_s": round(one["decided_rate"], 1),
            "events_per_s_2_deciders": round(two["rate"], 1),
            "decided_per_s_2_deciders": round(two["decided_rate"], 1),
            "pairs_visible_2_deciders": two["pairs"],
            "thresholds_in_phase_2_deciders": two["thresholds"],
            "ratio_2_deciders": round(two["rate"] / noop, 3),
            "bare_consume_per_s": round(bare, 1),
            "batch_size": cfg.streams.batch_size,
            "batch_timeout_s": cfg.streams.batch_timeout_s,
        }
        if os.environ.get("BENCH_RESTORE", "1") != "0":
            say("the decider's restore after 20,000 and 200,000 events (benchmarks/bench_restore.py)")
            result.update(restore_figures())
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
