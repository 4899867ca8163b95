"""The projections are rebuildable from the topics: the pipeline runs on a replay (pairs, rejections,
dead letters, an answer and its feedback, a training job, a deactivation, a reweight and an erasure);
once it stopped, `samtuner projections rebuild` gives back every table, row for row (FINAL, every
column but the declared insert times), publishes nothing and commits no offset. While `samtuner run`
holds the embedded store, the command says which process holds it and changes nothing. `--table`
rebuilds the named table and leaves the others as they are; what arrives during a rebuild is caught
up after the swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.clickhouse import ClickHouseStore
from infra.kafka import KafkaEventPublisher, publish_command
from samtuner.fixtures import feedback_line, parse_line, replay
from schemas.commands import DeactivatePair, EraseUser, ReweightPair
from schemas.config import Config
from schemas.ddl import INSERT_TIME_COLUMNS
from schemas.events import AdapterPublished, PairAccepted, UserErased
from schemas.topics import Topics
from streams.projector.consumer import projector_topics
from streams.projector.rebuild import PROJECTIONS, RebuildProgress, rebuild
from tests.integration.harness import ROOT, MakeConfig, RunningProcess, events_on, wait_caught_up, wait_for

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC) - timedelta(minutes=10)


def fixture(topic: str, answers: dict[str, str]) -> list[dict[str, Any]]:
    def line(user: str, fid: str, prompt: str, original: str, corrected: str | None, i: int, **kw: Any) -> dict:
        return feedback_line(user, fid, prompt, original, corrected, T0 + timedelta(seconds=i), **kw)

    lines = [
        line(
            "alice",
            f"a{i}",
            f"What is {i} plus 2?",
            f"{i + 2}.",
            f"{i} plus 2 is {i + 2}. Glad to help!",
            i,
            context={"answer_id": answers["alice"]} if i == 0 else None,
        )
        for i in range(4)
    ]
    lines += [
        line("alice", "a-dup", "What is 1 plus 2?", "3.", "1 plus 2 is 3. Glad to help!", 10),  # duplicate_pair
        line("alice", "a-noop", "Hi?", "Hello.", "Hello.", 11),  # chosen equals rejected
        line("bob", "b0", "What colour is snow?", "Snow is blue.", "Snow is white.", 12),
        line("bob", "b1", "What colour is grass?", "Grass is red.", "Grass is green.", 13),
        line(
            "carol",
            "c0",
            "What is the sun?",
            "A planet.",
            "The sun is a star.",
            14,
            context={"answer_id": answers["carol"]},
        ),
        line("carol", "c1", "Is water wet?", "Water is wet.", None, 15, feedback_type="thumbs_up"),
        line("dave", "d0", "Is ice cold?", "Ice is cold.", None, 16, feedback_type="thumbs_up"),
        {"topic": topic, "key": "bob", "value": "bob's bytes, not json"},
        {"topic": topic, "key": "carol", "value": "carol's bytes, not json"},
        {"topic": topic, "key": "bob", "value": {"event_type": "FeedbackReceived"}},
    ]
    return lines


def samtuner(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samtuner.cli", *args, "-c", str(cfg_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def dump(cfg: Config) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the store, FINAL, ordered by all its columns, without its declared insert times."""
    db = cfg.clickhouse.database
    store = ClickHouseStore(cfg.clickhouse_dsn, db)
    try:
        tables = {t for t, engine in store.tables(db).items() if engine != "View"} - {"schema_migrations"}
        assert tables == set(PROJECTIONS), "every table of the store must be a projection that a rebuild covers"
        assert set(INSERT_TIME_COLUMNS) <= tables
        out = {}
        for table in sorted(tables):
            columns = [
                str(c)
                for (c,) in store.query(
                    "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
                    "ORDER BY position",
                    {"db": db, "t": table},
                )
                if c not in INSERT_TIME_COLUMNS.get(table, frozenset())
            ]
            cols = ", ".join(columns)
            out[table] = store.query(f"SELECT {cols} FROM {db}.{table} FINAL ORDER BY {cols}")
        assert not [d for d in store.databases() if d.startswith(f"{db}_rebuild_")], "no rebuild database is left"
        return out
    finally:
        store.close()


def end_offsets(cfg: Config) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of every topic of this test (its prefix and its apps)."""
    consumer = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": "test-rebuild-watch"})
    try:
        names = [
            t
            for t in consumer.list_topics(timeout=10).topics
            if t.startswith(cfg.kafka.topic_prefix) or t.startswith(cfg.streams.app_id)
        ]
        out = {}
        for name in names:
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions:
                out[(name, p)] = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
        return out
    finally:
        consumer.close()


def committed(cfg: Config) -> list[tuple[str, int, int]]:
    """The live projector's committed offsets."""
    group = f"{cfg.streams.app_id}-projector"
    consumer = Consumer(
        {"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": group, "enable.auto.commit": False}
    )
    try:
        parts = [
            TopicPartition(t, p)
            for t in projector_topics(Topics(cfg.kafka.topic_prefix))
            for p in consumer.list_topics(t, timeout=10).topics[t].partitions
        ]
        return sorted((tp.topic, tp.partition, tp.offset) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_every_table_rebuilt_from_the_topics_equals_the_live_one(make_config: MakeConfig) -> None:
    cfg, cfg_path = make_config(trigger={"min_new_pairs": 4})
    topics = Topics(cfg.kafka.topic_prefix)
    node = RunningProcess(cfg, cfg_path)
    try:
        node.wait_ready()
        answers = {user: node.ask("What is the sun?", user)["id"] for user in ("alice", "carol")}
        publisher = KafkaEventPublisher(cfg.kafka)
        replay(
            [parse_line(line, "fixture") for line in fixture("sam.feedback.v1", answers)],
            publisher,
            cfg.kafka.topic_prefix,
        )
        publisher.flush()
        wait_for(
            lambda: [e for e in events_on(cfg, topics.adapters) if isinstance(e, AdapterPublished)],
            240,
            "alice's adapter (a training request, a job, its progress and an adapter)",
        )
        bob = wait_for(
            lambda: (
                p
                if len(
                    p := [e for e in events_on(cfg, topics.pairs) if isinstance(e, PairAccepted) and e.user_id == "bob"]
                )
                == 2
                else None
            ),
            60,
            "bob's pairs",
        )
        for command in (
            DeactivatePair(user_id="bob", pair_id=bob[0].pair_id),
            ReweightPair(user_id="bob", pair_id=bob[1].pair_id, training_weight=0.5),
            EraseUser(user_id="carol"),
        ):
            publish_command(publisher, topics.control, command)
        publisher.flush()
        wait_for(
            lambda: any(isinstance(e, UserErased) and e.user_id == "carol" for e in events_on(cfg, topics.pairs)),
            60,
            "carol's erasure",
        )
        wait_caught_up(cfg, proc=node)

        # The embedded store is open in the node: the rebuild says so, and touches nothing.
        held = samtuner(cfg_path, "projections", "rebuild")
        assert held.returncode == 1, held.stderr
        assert f"open in process {node.proc.pid}" in held.stderr and "nothing was changed" in held.stderr
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]

    before = dump(cfg)
    assert all(before.values()), f"every table must hold rows, else the comparison proves little: {before}"
    pairs = {r[0]: r for r in before["preference_pairs"]}
    assert len(pairs) == 6 and not any("carol" in r for r in pairs.values())  # alice 4, bob 2; carol's erased
    offsets, commits = end_offsets(cfg), committed(cfg)

    rebuilt = samtuner(cfg_path, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout.strip().splitlines()[-1])
    assert report["tables"] == list(PROJECTIONS) and report["swap"] == "exchange"
    assert report["rows"]["preference_pairs"] >= 7  # carol's pair was written, then erased
    assert f"{topics.pairs} {report['messages'][topics.pairs]}/{report['messages'][topics.pairs]}" in rebuilt.stderr
    after = dump(cfg)
    for table in PROJECTIONS:
        assert after[table] == before[table], f"{table} differs after the rebuild"
    assert end_offsets(cfg) == offsets, "a rebuild publishes nothing"
    assert committed(cfg) == commits, "a rebuild commits no offset of the live projector"

    # One table: rebuilt; the others are left as they are (a row added by hand stays).
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        db = cfg.clickhouse.database
        store.command(f"ALTER TABLE {db}.preference_pairs DELETE WHERE user_id = 'bob' SETTINGS mutations_sync = 1")
        store.command(
            f"INSERT INTO {db}.answer_feedback SELECT * REPLACE ('by hand' AS feedback_type) "
            f"FROM {db}.answer_feedback LIMIT 1"
        )
    finally:
        store.close()
    one = samtuner(cfg_path, "projections", "rebuild", "--table", "preference_pairs")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout.strip().splitlines()[-1])["tables"] == ["preference_pairs"]
    again = dump(cfg)
    assert again["preference_pairs"] == before["preference_pairs"]
    assert any("by hand" in row for row in again["answer_feedback"])
    assert {k: v for k, v in again.items() if k != "answer_feedback"} == {
        k: v for k, v in before.items() if k != "answer_feedback"
    }

    unknown = samtuner(cfg_path, "projections", "rebuild", "--table", "pairs")
    assert unknown.returncode == 2
    assert "unknown table 'pairs'" in unknown.stderr and "preference_pairs" in unknown.stderr

    # What arrives on a topic during a rebuild comes in after the swap, by the catch-up.
    late = KafkaEventPublisher(cfg.kafka)

    def publish_during(progress: RebuildProgress) -> None:
        if progress.phase == "replay" and not late_sent:
            late.publish_raw(
                topics.dlq,
                b"bob",
                b"late bytes",
                [
                    ("dlq.stage", b"decider"),
                    ("dlq.reason", b"invalid_json"),
                    ("dlq.failed_at", b"2026-12-02T00:00:00+00:00"),
                ],
            )
            late.flush()
            late_sent.append(True)

    late_sent: list[bool] = []
    report_late = rebuild(cfg, ["dead_letters"], on_progress=publish_during, every_s=0)
    assert late_sent and report_late.caught_up == 1
    dead = dump(cfg)["dead_letters"]
    assert len(dead) == len(before["dead_letters"]) + 1 and any("late bytes" in row for row in dead)
