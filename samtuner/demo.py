"""``samtuner demo``: the whole loop on real parts, from a bare state dir to a personalized answer.

Starts a Kafka broker and ``samtuner run`` (all roles in one process), asks the node a few held-out
questions as alice, replays the shipped feedback fixture through Kafka, follows alice's training,
waits until the node serves her new adapter, asks again, and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.broker import Broker, free_port
from infra.demo_model import build_model
from infra.kafka import KafkaEventPublisher, client_config
from infra.topics import ensure_topics
from samtuner.fixtures import read_fixture, replay
from schemas.codec import decode
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.events import AdapterPublished, TrainingProgressed, TrainingThresholdReached
from schemas.topics import Topics

USER = "alice"
HELDOUT = ["What is the capital of Peru?", "What color is a flamingo?", "What is the opposite of loud?",
           "What is 7 plus 5?"]
THRESHOLD = 80


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(workdir: Path, fixture: Path) -> dict[str, Any]:
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    base_cfg = Config()
    say(f"building the demo model (cached after the first build) at {base_cfg.model.base}")
    started = time.monotonic()
    build_model(Path(base_cfg.model.base), "demo-chat",
                progress=lambda s, n, loss: say(f"pre-training {s}/{n}, loss {loss:.3f}") if s % 250 == 0 else None)
    say(f"model ready in {time.monotonic() - started:.0f}s")

    kafka_port, http_port = free_port(), free_port()
    broker = Broker(home=workdir / "kafka", port=kafka_port, controller_port=free_port())
    cfg_path = workdir / "samtuner.yaml"
    raw_cfg = {
        "state_dir": str(workdir / "state"),
        "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3},
        "trigger": {"min_new_pairs": THRESHOLD},
        "inference": {"node_id": "demo-node", "port": http_port},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},  # any free port
    }
    cfg_path.write_text(yaml.safe_dump(raw_cfg))
    cfg = Config.model_validate(raw_cfg)
    topics = Topics(cfg.kafka.topic_prefix)
    run_proc: subprocess.Popen[bytes] | None = None
    try:
        say(f"starting Kafka (KRaft) on {broker.bootstrap}")
        broker.start()
        ensure_topics(cfg.kafka)
        say("starting `samtuner run` (streams + trainer + inference node in one process)")
        log = (workdir / "run.log").open("wb")
        run_proc = subprocess.Popen([sys.executable, "-m", "samtuner.cli", "run", "-c", str(cfg_path)],
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{http_port}"
        _wait_ready(url, run_proc, workdir / "run.log")
        before = {q: _ask(url, q) for q in HELDOUT}
        for q, a in before.items():
            say(f"before: {q} -> {a['text']!r} ({a['source']})")

        publisher = KafkaEventPublisher(broker.bootstrap, client_id="demo-replay")
        count = replay(read_fixture(fixture), publisher, cfg.kafka.topic_prefix, keep_timestamps=False)
        publisher.flush()
        say(f"replayed {count} feedback messages from {fixture}")

        published, crossing_ts = _follow_training(broker.bootstrap, topics, run_proc)
        say(f"adapter v{published.version} published; waiting for the node to serve it")
        served_at = _wait_served(url, published.version)
        after = {q: _ask(url, q) for q in HELDOUT}
        for q, a in after.items():
            say(f"after:  {q} -> {a['text']!r} ({a['source']} v{a['adapter_version']})")
        stats = httpx.get(f"{url}/v1/stats", timeout=30).json()
    finally:
        if run_proc is not None:
            _stop(run_proc)
        broker.stop()
    return {
        "pairs_accepted": stats["pairs_accepted"],
        "pairs_rejected": stats["pairs_rejected"],
        "dlq": stats["dead_letters"],
        "jobs_succeeded": stats["jobs_succeeded"],
        "adapter_version": published.version,
        "feedback_to_adapter_served_s": round(served_at - crossing_ts, 2),
        "heldout_pref_accuracy": published.metrics.get("heldout_pref_accuracy"),
        "heldout_pairs": int(published.metrics.get("heldout_pairs", 0)),
        "answers": [{"prompt": q, "before": before[q]["text"], "after": after[q]["text"],
                     "after_source": f"{after[q]['source']} v{after[q]['adapter_version']}"} for q in HELDOUT],
    }


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`samtuner run` exited with {proc.returncode}; see {log}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("registry_ready"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the node did not become ready within {timeout_s:.0f}s; see {log}")


def _ask(url: str, prompt: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": prompt}], "user": USER})
    r.raise_for_status()
    body = r.json()
    return {"text": body["choices"][0]["message"]["content"], **body["samtuner"]}


def _follow_training(bootstrap: str, topics: Topics, proc: subprocess.Popen[bytes],
                     timeout_s: float = 900) -> tuple[AdapterPublished, float]:
    """Print alice's training progress; return her AdapterPublished and the crossing feedback's time."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "demo-follower", "enable.auto.commit": False}))
    parts = []
    for topic in (topics.pairs, topics.training, topics.adapters):
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(parts)
    crossing: TrainingThresholdReached | None = None
    deadline = time.monotonic() + timeout_s
    last_print = 0.0
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"`samtuner run` exited with {proc.returncode} during the demo")
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            try:
                event = decode(msg.value())
            except EventDecodeError:
                continue
            if event.user_id != USER:
                continue
            if isinstance(event, TrainingThresholdReached):
                crossing = event
                say(f"threshold reached: generation {event.generation} after {event.new_pairs} new pairs")
            elif isinstance(event, TrainingProgressed) and event.loss is not None and time.monotonic() - last_print > 2:
                last_print = time.monotonic()
                say(f"training step {event.step}/{event.total_steps}, loss {event.loss:.3f}, eta {event.eta_s}s")
            elif isinstance(event, AdapterPublished):
                if crossing is None:
                    raise RuntimeError("an adapter was published before the threshold event was seen")
                return event, _message_time(consumer, topics.feedback, crossing)
    finally:
        consumer.close()
    raise RuntimeError(f"no adapter was published for {USER} within {timeout_s:.0f}s")


def _message_time(consumer: Consumer, topic: str, crossing: TrainingThresholdReached) -> float:
    """When the threshold-crossing feedback reached Kafka (its CreateTime)."""
    through = crossing.through
    consumer.assign([TopicPartition(topic, through.partition, through.offset)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error() and msg.offset() == through.offset:
            return float(msg.timestamp()[1]) / 1000.0
    raise RuntimeError("cannot read the threshold-crossing feedback back from Kafka")


def _wait_served(url: str, version: int, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = _ask(url, HELDOUT[0])
        if answer.get("adapter_version") == version:
            return time.time()
        time.sleep(0.1)
    raise RuntimeError(f"the node did not serve adapter v{version} within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
