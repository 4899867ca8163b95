"""Replaying the quality fixture through the real broker produces exactly the projections it declares
(every reason code, every feedback kind, every dead-letter reason, every data-management command);
replaying it again changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.clickhouse import ClickHouseStore
from infra.kafka import KafkaEventPublisher, read_topic
from samtuner.fixtures import FixtureLine, read_fixture, replay
from schemas.codec import decode
from schemas.config import Config
from schemas.events import CommandRejected, TrainingThresholdReached
from schemas.topics import Topics
from tests.conftest import REPLAYS, ROOT
from tests.integration.harness import RunningProcess, wait_caught_up

pytestmark = pytest.mark.integration
EXPECTED = json.loads((REPLAYS / "quality.expected.json").read_text())
# Columns that record when or where something was last processed, not what it is.
VOLATILE = {"projected_at", "updated_at", "failed_at", "source_offset", "source_partition"}


def replay_in_phases(cfg: Config, cfg_path: Path) -> None:
    lines = list(read_fixture(REPLAYS / "quality.jsonl"))
    assert len(lines) == EXPECTED["lines"]
    worker = RunningProcess(cfg, cfg_path, command="streams", log_name="streams.log")
    try:
        publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
        for phase in ("1", "2", "3"):
            replay([line for line in lines if _phase(line) == phase], publisher, cfg.kafka.topic_prefix)
            publisher.flush()
            wait_caught_up(cfg, proc=worker)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]


def _phase(line: FixtureLine) -> str:
    return dict(line.headers)["fixture.phase"].decode()


def snapshot(cfg: Config) -> dict[str, list[tuple[Any, ...]]]:
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        out = {}
        for table in (
            "preference_pairs",
            "rejected_feedback",
            "labelled_examples",
            "dead_letters",
            "training_requests",
        ):
            columns = [r[0] for r in store.query(f"DESCRIBE TABLE sam.{table}") if r[0] not in VOLATILE]
            out[table] = store.query(
                f"SELECT {', '.join(columns)} FROM sam.{table} FINAL ORDER BY {columns[0]}, {columns[1]}"
            )
            out[table + ".count"] = store.query(f"SELECT count() FROM sam.{table} FINAL")
        return out
    finally:
        store.close()


@pytest.fixture(scope="module")
def replayed(kafka: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Path]]:
    from tests.conftest import make_config_at

    cfg, path = make_config_at(tmp_path_factory.mktemp("quality"), kafka, tiny_model, **EXPECTED["config"])
    replay_in_phases(cfg, path)
    yield cfg, path


def test_the_fixture_produces_exactly_its_declared_projections(replayed: tuple[Config, Path]) -> None:
    cfg, _ = replayed
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        pairs = store.query(
            "SELECT toString(pair_id), user_id, feedback_type, is_active, training_weight "
            "FROM sam.preference_pairs FINAL"
        )
        assert sorted(pairs) == [
            (pid, p["user_id"], p["feedback_type"], p["is_active"], p["training_weight"])
            for pid, p in EXPECTED["pairs"].items()
        ]
        assert _rejections_by_feedback_id(store, cfg) == EXPECTED["rejected"]
        examples = store.query(
            "SELECT user_id, prompt, desirable FROM sam.labelled_examples FINAL ORDER BY user_id, prompt"
        )
        assert [list(e) for e in examples] == EXPECTED["examples"]
        dead = store.query("SELECT reason, stage FROM sam.dead_letters FINAL ORDER BY reason, stage")
        assert [list(d) for d in dead] == EXPECTED["dead_letters"]
        requests = store.query(
            "SELECT user_id, generation, trigger, dataset_rows FROM sam.training_requests FINAL "
            "ORDER BY user_id, generation"
        )
        assert [list(r) for r in requests] == EXPECTED["training_requests"]
        flagged = store.query(
            "SELECT count() FROM sam.preference_pairs FINAL WHERE JSONExtractBool(metadata, 'near_identical')"
        )
        assert flagged == [(1,)]
    finally:
        store.close()
    events = [decode(m.value) for m in read_topic(cfg.kafka.bootstrap_servers, Topics(cfg.kafka.topic_prefix).pairs)]
    assert [str(e.command_id) for e in events if isinstance(e, CommandRejected)] == EXPECTED["command_rejections"]
    thresholds = [(e.user_id, e.generation) for e in events if isinstance(e, TrainingThresholdReached)]
    assert sorted(thresholds) == [("qa-alice", 1), ("qa-dave", 1)]


def _rejections_by_feedback_id(store: ClickHouseStore, cfg: Config) -> dict[str, list[str]]:
    """feedback_id -> reason codes (the table keys rejections by event id; the fixture names feedback ids)."""
    ids = {}
    for msg in read_topic(cfg.kafka.bootstrap_servers, Topics(cfg.kafka.topic_prefix).feedback):
        try:
            value = json.loads(msg.value or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(value, dict) and "feedback_id" in value and "event_id" in value:
            ids[value["event_id"]] = value["feedback_id"]
    rows = store.query("SELECT toString(feedback_event_id), reason_codes FROM sam.rejected_feedback FINAL")
    return dict(sorted((ids[event_id], list(codes)) for event_id, codes in rows))


def test_replaying_the_fixture_again_changes_no_projection(replayed: tuple[Config, Path]) -> None:
    cfg, path = replayed
    before = snapshot(cfg)
    replay_in_phases(cfg, path)
    after = snapshot(cfg)
    assert after == before


def test_export_gives_the_active_pairs_in_trl_format_from_the_store_and_from_the_log(
    replayed: tuple[Config, Path], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    _, path = replayed
    active = {pid for pid, p in EXPECTED["pairs"].items() if p["is_active"]}
    outputs = {}
    for source, fmt in (("store", "jsonl"), ("log", "jsonl"), ("store", "parquet")):
        out = tmp_path / f"{source}.{fmt}"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "samtuner.cli",
                "pairs",
                "export",
                "-c",
                str(path),
                "--out",
                str(out),
                "--format",
                fmt,
                "--source",
                source,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        if fmt == "jsonl":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        else:
            rows = pq.read_table(out).to_pylist()
        assert {"prompt", "chosen", "rejected"} <= set(rows[0])
        outputs[(source, fmt)] = sorted((r["pair_id"], r["training_weight"]) for r in rows)
        assert {r["pair_id"] for r in rows} == active
    assert outputs[("store", "jsonl")] == outputs[("log", "jsonl")] == outputs[("store", "parquet")]
    one_user = tmp_path / "alice.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "samtuner.cli",
            "pairs",
            "export",
            "-c",
            str(path),
            "--out",
            str(one_user),
            "--user",
            "qa-alice",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    assert {json.loads(line)["user_id"] for line in one_user.read_text().splitlines()} == {"qa-alice"}


def test_record_writes_topics_back_as_a_fixture_that_replays(replayed: tuple[Config, Path], tmp_path: Path) -> None:
    _, path = replayed
    out = tmp_path / "recorded.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtuner.cli",
            "record",
            "-c",
            str(path),
            "--out",
            str(out),
            "--topic",
            "sam.feedback.v1",
            "--topic",
            "sam.control.v1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    recorded = list(read_fixture(out))
    original = list(read_fixture(REPLAYS / "quality.jsonl"))
    # Once by the fixture, once more when the replay test ran before this one.
    assert len(recorded) in (len(original), 2 * len(original))
    # Keys, headers, values (raw bytes kept as bytes) survive the round trip.
    by_value = {(line.topic, line.key, line.value) for line in recorded}
    assert all(
        (line.topic, line.key, line.value) in by_value
        for line in original
        if line.value is None or not line.value.startswith(b"{")
    )
