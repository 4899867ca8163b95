"""The loop on real parts: feedback through Kafka -> pairs in ClickHouse -> a DPO adapter -> the
user's next answer comes from it, with no restart. Dead letters and rejections are projected too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.kafka import KafkaEventPublisher, read_topic
from samtuner.fixtures import feedback_line, parse_line, replay
from schemas.events import AdapterPublished, TrainingRequested, TrainingSucceeded
from schemas.topics import Topics
from tests.integration.harness import MakeConfig, RunningProcess, events_on, wait_for
from trainer.manifest import read_manifest

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 25, 9, tzinfo=UTC)


def skeleton_fixture() -> list[dict]:
    lines = [
        feedback_line(
            "alice",
            f"a{i}",
            f"What is {i} plus 1?",
            f"{i} plus 1 is {i + 1}.",
            f"{i} plus 1 is {i + 1}. Hope this helps!",
            T0 + timedelta(seconds=i),
        )
        for i in range(8)
    ]
    lines.insert(
        3, feedback_line("alice", "dup", "What is 1 plus 1?", "1 plus 1 is 2.", "1 plus 1 is 2. Hope this helps!", T0)
    )
    lines.insert(5, feedback_line("alice", "noop", "What is 9 plus 1?", "9 plus 1 is 10.", " 9 plus 1 is 10. ", T0))
    lines.insert(2, {"topic": "sam.feedback.v1", "key": "alice", "value": "not json at all"})
    lines.insert(6, {"topic": "sam.feedback.v1", "key": "bob", "value": {"event_type": "FeedbackReceived"}})
    bad_type = feedback_line("bob", "b-bad", "Q?", "A.", "B.", T0)
    bad_type["value"]["confidence_score"] = "very high"
    lines.append(bad_type)
    lines.append(feedback_line("bob", "b1", "What color is snow?", "Snow is white.", "Answer: Snow is white.", T0))
    lines.append(feedback_line("carol", "c1", "Hi?", "Hello!", None, T0, feedback_type="thumbs_up"))
    return lines


def test_a_correction_becomes_a_personalized_answer(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg, cfg_path = make_config()
    topics = Topics(cfg.kafka.topic_prefix)
    node = RunningProcess(cfg, cfg_path)
    try:
        node.wait_ready()
        before = node.ask("What is 3 plus 1?", "alice")
        assert before["samtuner"]["source"] == "base"
        assert before["samtuner"]["fallback_reason"].startswith("no_adapter")

        publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
        replay([parse_line(line, "fixture") for line in skeleton_fixture()], publisher, cfg.kafka.topic_prefix)
        publisher.flush()

        published = wait_for(
            lambda: [e for e in events_on(cfg, topics.adapters) if isinstance(e, AdapterPublished)],
            240,
            "alice's adapter to be published",
        )
        assert [(e.user_id, e.version) for e in published] == [("alice", 1)]

        after = wait_for(
            lambda: (a := node.ask("What is 3 plus 1?", "alice"))["samtuner"]["adapter_version"] == 1 and a,
            30,
            "the node to serve alice's adapter",
        )
        assert after["samtuner"]["source"] == "adapter" and after["samtuner"]["fallback_reason"] is None
        bob = node.ask("What is 3 plus 1?", "bob")
        assert bob["samtuner"]["source"] == "base" and bob["samtuner"]["adapter_version"] is None
        wait_for(lambda: _stats(node)["jobs_succeeded"] == 1, 30, "the job ledger projection")
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]

    # Projections, read after the process released the embedded store.
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        pairs = store.query("SELECT user_id, count() FROM sam.preference_pairs FINAL GROUP BY user_id ORDER BY user_id")
        assert pairs == [("alice", 8), ("bob", 1)]
        rejected = store.query(
            "SELECT user_id, reason_codes FROM sam.rejected_feedback FINAL ORDER BY user_id, feedback_event_id"
        )
        assert sorted((u, tuple(r)) for u, r in rejected) == [
            ("alice", ("chosen_equals_rejected",)),
            ("alice", ("duplicate_pair",)),
        ]
        assert store.query("SELECT user_id, desirable FROM sam.labelled_examples FINAL") == [("carol", True)]
        dead = store.query("SELECT reason, stage FROM sam.dead_letters FINAL ORDER BY reason")
        assert dead == [("invalid_event", "decider"), ("invalid_event", "decider"), ("invalid_json", "decider")]
        (req,) = store.query("SELECT user_id, generation, dataset_rows FROM sam.training_requests FINAL")
        assert req == ("alice", 1, 8)
        assert store.query("SELECT status, adapter_version FROM sam.training_jobs FINAL") == [("succeeded", 1)]
        assert store.query("SELECT user_id, version FROM sam.adapters FINAL") == [("alice", 1)]
    finally:
        store.close()

    # The training request references a snapshot whose checksum holds, and the adapter's manifest too.
    requests = [e for e in events_on(cfg, topics.training) if isinstance(e, TrainingRequested)]
    assert len({r.request_id for r in requests}) == 1
    artifacts = ArtifactStore(cfg.artifact_root)
    artifacts.read_verified(requests[0].dataset.uri, requests[0].dataset.sha256)
    manifest = read_manifest(artifacts, published[0].uri, verify=True)
    sides = manifest["pair_ids"]
    assert sorted(sides["train"] + sides["validation"] + sides["heldout"]) == sorted(
        str(p) for p in requests[0].dataset.pair_ids
    )
    assert manifest["base_model"]["weights_sha256"] == published[0].base_model.weights_sha256
    assert any(isinstance(e, TrainingSucceeded) for e in events_on(cfg, topics.training))

    # Dead letters keep the original bytes and say why.
    dlq = list(read_topic(cfg.kafka.bootstrap_servers, topics.dlq))
    assert sorted(m.value for m in dlq if m.value and not m.value.startswith(b"{")) == [b"not json at all"]
    assert all(dict(m.headers).get("dlq.reason") for m in dlq)


def _stats(node: RunningProcess) -> dict:
    import httpx

    return json.loads(httpx.get(f"{node.url}/v1/stats", timeout=10).text)
