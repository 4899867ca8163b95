"""make soak: a long run of `samtuner run` at a steady offered load, watching for leaks and growing lag.

A broker of its own and `samtuner run` (decider child process + projector + trainer + inference node,
the tiny test model) are started; then for SOAK_MINUTES (default 30) a producer offers
SOAK_RATE (default 1,000) feedback events/s, mixed as `bench_streams.py` mixes them (~85% distinct
corrections, ~10% redeliveries, ~5% malformed) over SOAK_USERS (2,000) users, plus a few hot users
(SOAK_HOT_SHARE of the traffic) who cross `trigger.min_new_pairs` during the run (training requests;
the trainer runs them, capped at a few steps each), and real `/v1/chat/completions` calls at
SOAK_CHAT_PER_S (2/s; each one an AnswerServed on the inference topic).

Every minute it samples the decider process (the child of `samtuner run`) and the parent: RSS, open
FDs (/proc/<pid>/fd), threads; the consumer lag of each group, from the broker (committed offsets vs
log ends); and prints one progress line (stderr). The latency of a pair is projected_at - created_at
(the produce time), as in `bench_streams.py`, read through the node's analytics API (the store is
open in `samtuner run`): p99 per minute of production.

The last stdout line is one JSON object: the series, RSS and FD drift after warm-up (the first
SOAK_WARMUP_MINUTES, default 5, excluded) as ± percent of the first sample after it, lag max, p99
per minute, and the goals: RSS and FDs flat within ±10% after warm-up (every later sample within
10% of the first one after it), and lag bounded (the decider's and the projector's lag stay under
30 s of offered load after warm-up, and they drain within 5 minutes at the end).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.broker import Broker, free_port  # noqa: E402
from infra.kafka import PRODUCER_DEFAULTS, client_config  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.events import FeedbackReceived  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from tests.integration.harness import group_lag  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(2000)]
FLAT_PCT = 10.0


def say(msg: str) -> None:
    print(f"[soak] {msg}", file=sys.stderr, flush=True)


class Feedback:
    """Endless feedback as bench_streams.py mixes it, stamped with the produce time (for latency)."""

    def __init__(self, users: int, hot_users: int, hot_share: float, rng: random.Random) -> None:
        self.users, self.hot_users, self.hot_share, self.rng = users, hot_users, hot_share, rng
        self.earlier: list[tuple[str, str, str, str]] = []

    def next(self) -> tuple[bytes, bytes]:
        rng = self.rng
        if self.hot_users and rng.random() < self.hot_share:
            user = f"hot-{rng.randrange(self.hot_users):02d}"
        else:
            user = f"user-{rng.randrange(self.users):05d}"
        roll = rng.random()
        if roll < 0.05:
            return user.encode(), rng.choice([b"not json", b'{"event_type": "FeedbackReceived"}', b"\xff\xfe"])
        if roll < 0.15 and self.earlier:
            user, prompt, original, corrected = rng.choice(self.earlier)
        else:
            prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
            original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
            corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
            if len(self.earlier) < 20_000:  # redeliveries pick from a bounded set: the driver must not grow
                self.earlier.append((user, prompt, original, corrected))
            else:
                self.earlier[rng.randrange(len(self.earlier))] = (user, prompt, original, corrected)
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
            occurred_at=datetime.now(UTC),
        )
        return user.encode(), event.model_dump_json().encode()


def offer(bootstrap: str, topic: str, feedback: Feedback, rate: float, until: float, counter: list[int]) -> None:
    producer = Producer(client_config(bootstrap, **PRODUCER_DEFAULTS))
    start, i = time.monotonic(), 0
    while True:
        due = start + i / rate
        if due >= until:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        key, value = feedback.next()
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        i += 1
        counter[0] = i
    producer.flush(60)


def chat(url: str, per_s: float, stop: threading.Event, results: dict[str, int], why: list[str]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.wait(1.0 / per_s):
            try:
                r = client.post(
                    f"{url}/v1/chat/completions",
                    json={
                        "messages": [{"role": "user", "content": "What is 3 plus 1?"}],
                        "user": f"user-{random.randrange(1000):05d}",
                    },
                )
                results["ok" if r.status_code == 200 else "failed"] += 1
                if r.status_code != 200 and len(why) < 10:
                    why.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                results["failed"] += 1
                if len(why) < 10:
                    why.append(repr(exc))


def decider_process(parent: psutil.Process) -> psutil.Process | None:
    for child in parent.children():
        try:
            if "samtuner.decider_process" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def fd_kinds(pid: int) -> dict[str, int]:
    """Open FDs by what they point at: socket, pipe, anon_inode, /proc/self/task (a thread's own
    stat files: chDB opens them per thread), /proc, or file: what grows, when FDs grow."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/proc/"):
            kind = "proc_task" if "/task/" in target else "proc"
        else:
            kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def usage(proc: psutil.Process | None) -> dict[str, Any]:
    if proc is None:
        return {"pid": None, "rss_mib": None, "fds": None, "threads": None}
    try:
        return {
            "pid": proc.pid,
            "rss_mib": round(proc.memory_info().rss / 2**20, 1),
            "fds": len(os.listdir(f"/proc/{proc.pid}/fd")),
            "fd_kinds": fd_kinds(proc.pid),
            "threads": proc.num_threads(),
        }
    except (psutil.NoSuchProcess, FileNotFoundError):
        return {"pid": proc.pid, "rss_mib": None, "fds": None, "threads": None}


def lags(cfg: Config) -> dict[str, int | None]:
    t = Topics(cfg.kafka.topic_prefix)
    groups = {
        "decider": (cfg.streams.app_id, [t.feedback, t.control]),
        "projector": (
            f"{cfg.streams.app_id}-projector",
            [t.pairs, t.training, t.adapters, t.dlq, t.inference, t.feedback],
        ),
        "trainer": (cfg.trainer.group_id, [t.training]),
    }
    out: dict[str, int | None] = {}
    for role, (group, topics) in groups.items():
        try:
            out[role] = group_lag(cfg, group, topics)
        except Exception:  # the coordinator may be busy: a missing sample, not a failed soak
            out[role] = None
    return out


def sql(url: str, query: str) -> list[list[Any]]:
    r = httpx.post(f"{url}/api/v1/sql", json={"sql": query, "max_rows": 10_000}, timeout=120)
    r.raise_for_status()
    rows: list[list[Any]] = r.json()["rows"]
    return rows


def p99_per_minute(url: str, since: datetime) -> dict[str, dict[str, float]]:
    rows = sql(
        url,
        "SELECT toStartOfMinute(created_at) AS m, count(), "
        "quantile(0.5)(dateDiff('millisecond', created_at, projected_at)), "
        "quantile(0.99)(dateDiff('millisecond', created_at, projected_at)) "
        f"FROM sam.preference_pairs WHERE created_at >= toDateTime64('{since:%Y-%m-%d %H:%M:%S}', 3) "
        "GROUP BY m ORDER BY m",
    )
    return {
        str(m): {"pairs": int(n), "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
        for m, n, p50, p99 in rows
    }


def drift(series: list[float | None]) -> dict[str, float | None]:
    """± percent of the first value: the last one, and the largest deviation."""
    values = [v for v in series if v is not None]
    if len(values) < 2 or not values[0]:
        return {"last_pct": None, "max_abs_pct": None}
    base = values[0]
    return {
        "last_pct": round((values[-1] - base) / base * 100, 1),
        "max_abs_pct": round(max(abs(v - base) for v in values) / base * 100, 1),
    }


def main() -> None:
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    warmup = float(os.environ.get("SOAK_WARMUP_MINUTES", "5"))
    rate = float(os.environ.get("SOAK_RATE", "1000"))
    users = int(os.environ.get("SOAK_USERS", "2000"))
    hot_share = float(os.environ.get("SOAK_HOT_SHARE", "0.04"))
    chat_per_s = float(os.environ.get("SOAK_CHAT_PER_S", "2"))
    min_new_pairs = int(os.environ.get("SOAK_MIN_NEW_PAIRS", "1500"))
    sample_s = float(os.environ.get("SOAK_SAMPLE_S", "60"))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = Broker(home=work / "kafka", port=free_port(), controller_port=free_port())
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    port = free_port()
    raw: dict[str, Any] = {
        "state_dir": str(work / "state"),
        "kafka": {"bootstrap_servers": "", "topic_prefix": "soak.", "partitions": 6},
        "model": {"base": str(model), "max_new_tokens": 8},
        "trigger": {"min_new_pairs": min_new_pairs},
        # A job is capped at a few steps: the trainer runs every request without owning the machine.
        "training": {
            "dpo": {
                "num_train_epochs": 1,
                "max_steps": 4,
                "per_device_train_batch_size": 4,
                "learning_rate": 1e-3,
                "max_length": 64,
                "bf16": False,
                "gradient_checkpointing": False,
                "logging_steps": 1,
                "loss_type": ["sigmoid"],
                "gradient_accumulation_steps": 1,
            }
        },
        "evaluation": {"enabled": False, "controls": []},
        "streams": {"session_timeout_s": 10},
        "inference": {"port": port, "torch_threads": 1},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
    }
    run: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        raw["kafka"]["bootstrap_servers"] = broker.bootstrap
        cfg = Config.model_validate(raw)
        (work / "samtuner.yaml").write_text(yaml.safe_dump(raw))
        url = f"http://127.0.0.1:{port}"
        log = (work / "run.log").open("wb")
        run = subprocess.Popen(
            [sys.executable, "-m", "samtuner.cli", "run", "-c", str(work / "samtuner.yaml")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        parent = psutil.Process(run.pid)
        deadline = time.monotonic() + 300
        while True:
            if run.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"samtuner run did not get ready; see {work / 'run.log'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).json().get("registry_ready") and decider_process(parent):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        time.sleep(5)  # the groups form
        say(
            f"offering {rate:.0f} events/s for {minutes:g} min ({users} users, {hot_share:.0%} from hot users, "
            f"min_new_pairs {min_new_pairs}, {chat_per_s:g} chats/s); work dir {work}"
        )
        started_wall = datetime.now(UTC).replace(microsecond=0)
        start = time.monotonic()
        until = start + minutes * 60
        produced = [0]
        producer = threading.Thread(
            target=offer,
            args=(
                broker.bootstrap,
                Topics(cfg.kafka.topic_prefix).feedback,
                Feedback(users, 3, hot_share, random.Random(7)),
                rate,
                until,
                produced,
            ),
            daemon=True,
        )
        chats = {"ok": 0, "failed": 0}
        chat_stop = threading.Event()
        chat_failures: list[str] = []
        chatter = threading.Thread(target=chat, args=(url, chat_per_s, chat_stop, chats, chat_failures), daemon=True)
        producer.start()
        chatter.start()
        samples: list[dict[str, Any]] = []
        next_at = start + sample_s
        while True:
            time.sleep(max(0.0, next_at - time.monotonic()))
            if run.poll() is not None:
                raise RuntimeError(f"samtuner run exited with {run.returncode}; see {work / 'run.log'}")
            at = time.monotonic() - start
            decider = decider_process(parent)
            try:
                restarts = httpx.get(f"{url}/v1/stats", timeout=30).json().get("restarts_decider")
            except httpx.HTTPError:
                restarts = None
            sample = {
                "minute": round(at / 60, 2),
                "produced": produced[0],
                "decider": usage(decider),
                "run": usage(parent),
                "lag": lags(cfg),
                "chats_ok": chats["ok"],
                "chats_failed": chats["failed"],
                "decider_restarts": restarts,
            }
            if sample["lag"]["decider"] is not None:  # the control topic holds next to nothing
                sample["decider_consumed"] = produced[0] - sample["lag"]["decider"]
            samples.append(sample)
            d, r = sample["decider"], sample["run"]
            say(
                f"min {sample['minute']:5.1f}: produced {produced[0]:,}; decider pid {d['pid']} rss {d['rss_mib']} MiB "
                f"fds {d['fds']} threads {d['threads']}; run rss {r['rss_mib']} MiB fds {r['fds']} {r.get('fd_kinds')} "
                f"threads {r['threads']}; lag {sample['lag']}; chats {chats['ok']} ok {chats['failed']} failed; "
                f"decider restarts {restarts}"
            )
            next_at += sample_s
            if next_at > until + 1:
                break
        producer.join()
        chat_stop.set()
        chatter.join(90)
        say("offer over; waiting for the decider and the projector to drain")
        drained_in = None
        drain_start = time.monotonic()
        while time.monotonic() - drain_start < 300:
            now = lags(cfg)
            if now["decider"] == 0 and now["projector"] == 0:
                drained_in = round(time.monotonic() - drain_start, 1)
                break
            time.sleep(2)
        latency = p99_per_minute(url, started_wall)
        totals = httpx.get(f"{url}/v1/stats", timeout=60).json()
        after = [s for s in samples if s["minute"] > warmup]
        pipeline_lag = [max(s["lag"]["decider"] or 0, s["lag"]["projector"] or 0) for s in after]
        lag_max = {role: max((s["lag"][role] or 0) for s in samples) for role in ("decider", "projector", "trainer")}
        rss, fds = (drift([s["decider"][k] for s in after]) for k in ("rss_mib", "fds"))
        run_rss, run_fds = (drift([s["run"][k] for s in after]) for k in ("rss_mib", "fds"))
        flat = lambda d: d["max_abs_pct"] is not None and d["max_abs_pct"] <= FLAT_PCT  # noqa: E731
        lag_bounded = bool(after) and max(pipeline_lag) <= rate * 30 and drained_in is not None
        result = {
            "minutes": minutes,
            "warmup_minutes": warmup,
            "rate_offered": rate,
            "produced": produced[0],
            "achieved_rate": round(produced[0] / (minutes * 60), 1),
            "samples": samples,
            "decider_rss_drift_pct": rss,
            "decider_fd_drift_pct": fds,
            "run_rss_drift_pct": run_rss,
            "run_fd_drift_pct": run_fds,
            "lag_max": lag_max,
            "lag_max_after_warmup": max(pipeline_lag) if pipeline_lag else None,
            "drained_in_s": drained_in,
            "latency_per_minute": latency,
            "latency_ms_p99_max": max((v["p99_ms"] for v in latency.values()), default=None),
            "chats": chats,
            "chat_failures": chat_failures,
            "totals": {
                k: totals.get(k)
                for k in (
                    "pairs_accepted",
                    "pairs_rejected",
                    "dead_letters",
                    "training_requests",
                    "jobs_succeeded",
                    "jobs_failed",
                    "answers_logged",
                    "restarts_decider",
                )
            },
            "goals": {"decider_rss_flat": flat(rss), "decider_fds_flat": flat(fds), "lag_bounded": lag_bounded},
        }
        result["goals_held"] = all(result["goals"].values())  # type: ignore[union-attr]
        print(json.dumps(result))
        if not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        say(f"failed; logs kept in {work}")
        raise
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=120)
            except subprocess.TimeoutExpired:
                run.kill()
        broker.stop()


if __name__ == "__main__":
    main()
