"""make bench-streams: throughput and latency of one stream worker (deciders + projector), against
Faust's own ceiling (a no-op agent) and a bare aiokafka consumer, on the same broker in the same run.

N feedback events (mixed users, ~10% duplicates, ~5% malformed) are generated; then:
1. a bare aiokafka consumer reads them from a topic of their own (bare_consume_per_s, for context);
2. a no-op Faust agent decodes and counts them there (noop_faust_per_s: the framework's ceiling);
3. `samtuner streams` starts idle, then the N events are produced to its feedback topic;
   events_per_s = N / (last pair visible - first pair visible), from `preference_pairs.projected_at`
   (the insert's time in ClickHouse); worker_cpu_us_per_event = the worker's CPU time / N (robust to
   a busy machine, unlike rates);
4. with the worker running, M more events are offered at 1,000 events/s; latency = projected_at -
   created_at (the produce time) of each pair: p50 and p99.
The last stdout line is one JSON object. Environment: BENCH_N (default 20000), BENCH_M (5000).
"""

from __future__ import annotations

import asyncio
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

import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
        event = FeedbackReceived(event_id=eid, correlation_id=eid, user_id=user, feedback_id=str(eid), prompt=prompt,
                                 original_response=original, corrected_response=corrected, confidence_score=0.9,
                                 **({"occurred_at": datetime.now(UTC)} if now else {}))
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
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                                    **aiokafka_auth(settings_of(bootstrap)))
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


NOOP_APP = textwrap.dedent('''
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
''')


def noop_faust(bootstrap: str, topic: str, n: int, work: Path) -> float:
    script = work / "noop_app.py"
    script.write_text(NOOP_APP)
    result = work / "noop.rate"
    env = {**os.environ, "NOOP_BOOTSTRAP": bootstrap, "NOOP_TOPIC": topic, "NOOP_N": str(n), "NOOP_OUT": str(result)}
    proc = subprocess.Popen([sys.executable, str(script), "worker", "-l", "warn"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=(work / "noop.log").open("wb"))
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


def _worker_pid(proc: subprocess.Popen[bytes], profiled: str | None) -> int:
    if not profiled:
        return proc.pid
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return int(children[0]) if children else proc.pid


def lag(cfg: Config) -> int:
    from tests.integration.harness import group_lag

    t = Topics(cfg.kafka.topic_prefix)
    return (group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control])
            + group_lag(cfg, f"{cfg.streams.app_id}-projector",
                        [t.pairs, t.training, t.adapters, t.dlq, t.inference, t.feedback]))


def wait_caught_up(cfg: Config, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the stream worker exited")
        try:
            quiet = quiet + 1 if lag(cfg) == 0 else 0
        except Exception:
            quiet = 0
        if quiet >= 2:
            return
        time.sleep(0.5)
    raise RuntimeError("the stream worker did not catch up")


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
    raw = {"state_dir": str(work / "state"), "model": {"base": str(model)},
           "kafka": {"bootstrap_servers": "", "topic_prefix": "bench.", "partitions": 6},
           "trigger": {"min_new_pairs": 50}, "streams": {"session_timeout_s": 10},
           "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0}}
    try:
        broker.start()
        raw["kafka"]["bootstrap_servers"] = broker.bootstrap  # type: ignore[index]
        cfg = Config.model_validate(raw)
        (work / "samtuner.yaml").write_text(yaml.safe_dump(raw))
        ensure_topics(cfg.kafka)
        topic = Topics(cfg.kafka.topic_prefix).feedback
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
        say(f"  {noop:,.0f} events/s; samtuner streams (started idle, then fed)")
        log = (work / "streams.log").open("wb")
        command = [sys.executable, "-m", "samtuner.cli", "streams", "-c", str(work / "samtuner.yaml"),
                   "--log-level", "INFO"]
        profile = os.environ.get("BENCH_PROFILE")  # a path: record the worker with py-spy (collapsed stacks)
        if profile:
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "-r", "200",
                       "-o", profile, "--subprocesses", "--", *command]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(3)
            wait_caught_up(cfg, proc, 300)  # the groups are formed, nothing to do yet
            cpu0 = cpu_seconds(_worker_pid(proc, profile))
            produce(broker.bootstrap, topic, values)
            wait_caught_up(cfg, proc, 900)
            worker_cpu = cpu_seconds(_worker_pid(proc, profile)) - cpu0
            say(f"offering {m} events at 1,000/s")
            marker = datetime.now(UTC)
            produce(broker.bootstrap, topic, feedback_values(m, users=500, rng=rng, now=True), rate=1000)
            wait_caught_up(cfg, proc, 300)
        finally:
            os.kill(_worker_pid(proc, profile), signal.SIGTERM)  # under py-spy, it then writes the profile
            proc.wait(timeout=120)
        store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
        try:
            first, last, pairs = store.query(
                "SELECT min(projected_at), max(projected_at), count() FROM sam.preference_pairs "
                "WHERE created_at < {m:DateTime64(3)}", {"m": marker})[0]
            p50, p99, offered = store.query(
                "SELECT quantile(0.5)(dateDiff('millisecond', created_at, projected_at)), "
                "quantile(0.99)(dateDiff('millisecond', created_at, projected_at)), count() "
                "FROM sam.preference_pairs WHERE created_at >= {m:DateTime64(3)}", {"m": marker})[0]
        finally:
            store.close()
        span = (last - first).total_seconds()
        rate = n / span if span > 0 else float("nan")
        result = {
            "events": n,
            "pairs_visible": int(pairs),
            "events_per_s": round(rate, 1),
            "latency_ms_p50": round(float(p50), 1),
            "latency_ms_p99": round(float(p99), 1),
            "latency_pairs": int(offered),
            "worker_cpu_us_per_event": round(worker_cpu / n * 1e6, 1),
            "noop_faust_per_s": round(noop, 1),
            "ratio": round(rate / noop, 3),
            "bare_consume_per_s": round(bare, 1),
        }
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
