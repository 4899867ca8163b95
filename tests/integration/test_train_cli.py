"""``samtuner train`` as a person uses it: it asks for training, shows progress, and ends with an adapter
or a clear reason; ``samtuner jobs`` and ``samtuner curve`` read the ledger back.

The first test drives the job outcomes with a fake job runner (the gate's rejection needs a worse
adapter on cue), so a stand-in plays decider + projector: it answers each command with the
``TrainingRequested`` they would publish. The last test runs the real decider, projector, trainer and
node (``samtuner run``) end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.artifacts import ArtifactStore
from infra.kafka import KafkaEventPublisher
from infra.topics import ensure_topics
from schemas.codec import decode_command
from schemas.commands import RequestTraining
from schemas.config import Config
from schemas.topics import Topics
from tests.integration.harness import ROOT
from tests.integration.test_trainer_jobs import trainer
from tests.trainer_fakes import FakeJobRunner, succeed
from trainer.local import local_request, pair_rows
from trainer.manifest import read_manifest

pytestmark = pytest.mark.integration


@contextmanager
def stand_in_decider(cfg: Config) -> Iterator[list[RequestTraining]]:
    """Answers every RequestTraining with the TrainingRequested the decider and projector would publish."""
    topics = Topics(cfg.kafka.topic_prefix)
    stop, seen = threading.Event(), []

    def run() -> None:
        consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "stand-in"})
        meta = consumer.list_topics(topics.control, timeout=10).topics[topics.control]
        consumer.assign([TopicPartition(topics.control, p, OFFSET_BEGINNING) for p in meta.partitions])
        publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
        while not stop.is_set():
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            command = decode_command(msg.value())
            if isinstance(command, RequestTraining):
                seen.append(command)
                rows = pair_rows(
                    command.user_id,
                    [
                        (f"What is {i} plus 2?", f"{i} plus 2 is {i + 2}. Hope this helps!", f"{i} plus 2 is {i + 2}.")
                        for i in range(12)
                    ],
                )
                request = local_request(ArtifactStore(cfg.artifact_root), command.user_id, len(seen), rows)
                publisher.publish(topics.training, request)
                publisher.flush()
        consumer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)


def samtuner(cfg_path: Path, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samtuner.cli", *args, "-c", str(cfg_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_train_follows_the_users_job_to_its_adapter_or_the_reason_why_not(make_config: Any, tmp_path: Path) -> None:
    cfg, cfg_path = make_config(evaluation={"enabled": True, "min_heldout_pairs": 1})
    ensure_topics(cfg.kafka)
    runner = FakeJobRunner(succeed(accuracy=1.0), succeed(accuracy=0.25, baseline=1.0))
    curve = tmp_path / "curve.png"
    with stand_in_decider(cfg) as commands, trainer(cfg, runner):
        ok = samtuner(cfg_path, "train", "--user", "alice", "--curve", str(curve))
        worse = samtuner(cfg_path, "train", "--user", "alice")
        listed = samtuner(cfg_path, "jobs", "--user", "alice")
        as_json = samtuner(cfg_path, "jobs", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "adapter v1 published" in ok.stderr and "held-out preference accuracy 1.00" in ok.stderr
    outcome = json.loads(ok.stdout.strip().splitlines()[-1])
    assert outcome["event_type"] == "TrainingSucceeded" and outcome["adapter_version"] == 1
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c.issued_by for c in commands] == ["cli", "cli"]

    assert worse.returncode == 1
    assert "the evaluation gate rejected it" in worse.stderr and "not better than adapter v1" in worse.stderr
    assert json.loads(worse.stdout.strip().splitlines()[-1])["event_type"] == "TrainingRejected"

    assert listed.returncode == 0, listed.stderr
    assert "succeeded" in listed.stdout and "rejected" in listed.stdout
    jobs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(j["user_id"], j["generation"], j["status"]) for j in jobs] == [
        ("alice", 1, "succeeded"),
        ("alice", 2, "rejected"),
    ]
    png = tmp_path / "again.png"
    drawn = samtuner(cfg_path, "curve", outcome["request_id"][:8], "-o", str(png))
    assert drawn.returncode == 0, drawn.stderr and png.read_bytes()[:4] == b"\x89PNG"


def test_train_says_why_when_no_request_comes(make_config: Any) -> None:
    cfg, cfg_path = make_config()
    ensure_topics(cfg.kafka)
    result = samtuner(cfg_path, "train", "--user", "alice", "--wait", "3")
    assert result.returncode == 1
    assert "no training request for 'alice' appeared within 3s: is the decider running" in result.stderr


def test_train_from_a_pairs_file_runs_locally_without_kafka(make_config: Any, tmp_path: Path) -> None:
    cfg, cfg_path = make_config(kafka={"bootstrap_servers": "127.0.0.1:1"})  # nothing listens there
    pairs = tmp_path / "pairs.jsonl"
    lines = [
        {
            "prompt": f"What is {i} plus 3?",
            "rejected_response": f"{i} plus 3 is {i + 3}.",
            "chosen_response": f"{i} plus 3 is {i + 3}. Hope this helps!",
        }
        for i in range(10)
    ]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = samtuner(cfg_path, "train", "--user", "alice", "--pairs", str(pairs))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adapter v1 published" in result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = read_manifest(ArtifactStore(cfg.artifact_root), outcome["adapter_uri"])
    sides = [manifest["pair_ids"][side] for side in ("train", "validation", "heldout")]
    assert sum(map(len, sides)) == 10 and all(sides)  # 10 pairs: one of each side at least

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "Q?", "chosen_response": ""}\n')
    bad = samtuner(cfg_path, "train", "--user", "alice", "--pairs", str(broken))
    assert bad.returncode == 2 and "broken.jsonl:1: missing or empty chosen_response, rejected_response" in bad.stderr


def test_manual_training_goes_through_the_real_decider_projector_and_trainer(make_config: Any) -> None:
    """Below the threshold, `samtuner train` asks the decider for a generation: a snapshot of the user's
    pairs is cut, trained on, published, and the node serves it."""
    from datetime import UTC, datetime, timedelta

    from samtuner.fixtures import feedback_line, parse_line, replay
    from tests.integration.harness import RunningProcess, wait_for

    cfg, cfg_path = make_config(trigger={"min_new_pairs": 50})
    node = RunningProcess(cfg, cfg_path)
    try:
        node.wait_ready()
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        lines = [
            feedback_line(
                "bob",
                f"b{i}",
                f"What is {i} plus 2?",
                f"{i} plus 2 is {i + 2}.",
                f"{i} plus 2 is {i + 2}. Hope this helps!",
                t0 + timedelta(seconds=i),
            )
            for i in range(10)
        ]
        publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
        replay([parse_line(line, "fixture") for line in lines], publisher, cfg.kafka.topic_prefix)
        publisher.flush()
        result = samtuner(cfg_path, "train", "--user", "bob", timeout_s=300)
        assert result.returncode == 0, result.stderr[-3000:]
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        assert outcome["event_type"] == "TrainingSucceeded" and outcome["adapter_version"] == 1
        served = wait_for(
            lambda: (a := node.ask("What is 3 plus 2?", "bob"))["samtuner"]["adapter_version"] == 1 and a,
            60,
            "the node to serve bob's adapter",
        )
        assert served["samtuner"]["source"] == "adapter"
    finally:
        assert node.stop() == 0, node.log()[-3000:]
