"""Erasure, honoured by every store: alice corrects, thumbs, asks, trains and gets an adapter, and some
of her messages are dead letters; after `samtuner users erase alice` no table of the store, no file
under the artifact root or the trainer's job directories, and no live value of the decider's journal
holds her id or her texts. UserErased reports what went; bob's data stays; alice, correcting again
with the SDK, is heard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from infra.clickhouse import ClickHouseStore
from infra.kafka import KafkaEventPublisher, read_topic
from samtuner import FeedbackPublisher
from schemas.config import Config
from schemas.ddl import USER_DATA
from schemas.events import AdapterPublished, PairAccepted, UserErased
from schemas.ids import user_key
from schemas.topics import Topics
from tests.integration.harness import ROOT, MakeConfig, RunningProcess, events_on, wait_for

pytestmark = pytest.mark.integration

ALICE = [(f"What is {i} plus 1?", f"{i + 1}.", f"{i} plus 1 is {i + 1}. Hope this helps, Alice-{i}!") for i in range(4)]
ALICE_TEXTS = ["Hope this helps, Alice-", "alice-thumb-text", "alice-rejected-text", "alice-dead-letter-text"]
BOB = ("What sound does a dog make?", "A dog meows.", "A dog barks, bob-text.")


def _values(cfg: Config, topic: str, user: str) -> list[Any]:
    return [e for e in events_on(cfg, topic) if e.user_id == user]


def test_an_erased_user_leaves_nothing_in_any_store(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg, cfg_path = make_config(trigger={"min_new_pairs": 4})
    topics = Topics(cfg.kafka.topic_prefix)
    node = RunningProcess(cfg, cfg_path)
    try:
        node.wait_ready()
        answer = node.ask(ALICE[0][0], "alice")
        with FeedbackPublisher(cfg.kafka, cfg.kafka.topic_prefix) as sam:
            for prompt, original, corrected in ALICE:
                sam.correction(
                    user_id="alice",
                    prompt=prompt,
                    original_response=original,
                    corrected_response=corrected,
                    context={"answer_id": answer["id"]},
                )
            sam.feedback("alice", "What is alice-thumb-text?", "It is alice-thumb-text.", feedback_type="thumbs_up")
            sam.correction(
                user_id="alice",
                prompt="Hi?",
                original_response="alice-rejected-text",
                corrected_response="alice-rejected-text",
            )  # chosen equals rejected: a rejection
            sam.correction(user_id="bob", prompt=BOB[0], original_response=BOB[1], corrected_response=BOB[2])
        raw = KafkaEventPublisher(cfg.kafka)
        raw.publish_raw(topics.feedback, b"alice", b"alice-dead-letter-text: not json")
        raw.publish_raw(
            topics.feedback,
            b"nobody",
            json.dumps(
                {"event_type": "FeedbackReceived", "user_id": "alice", "prompt": "alice-dead-letter-text"}
            ).encode(),
        )
        raw.flush()
        wait_for(lambda: _values(cfg, topics.adapters, "alice"), 240, "alice's adapter")
        wait_for(lambda: node.ask("Q?", "alice")["samtuner"]["adapter_version"] == 1, 30, "alice's adapter served")
        wait_for(lambda: files_with_alice(cfg), 30, "alice's files (the scan below must be able to see them)")

        erase = subprocess.run(
            [sys.executable, "-m", "samtuner.cli", "users", "erase", "alice", "--yes", "-c", str(cfg_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert erase.returncode == 0, erase.stderr
        report = json.loads(erase.stdout.strip().splitlines()[-1])
        assert report["rows"]["preference_pairs"] == 4 and report["rows"]["labelled_examples"] == 1
        assert report["rows"]["rejected_feedback"] == 1 and report["rows"]["dead_letters"] == 2
        assert report["rows"]["training_requests"] == 1 and report["rows"]["training_jobs"] >= 1
        assert report["rows"]["adapters"] == 1 and report["rows"]["inference_log"] >= 2
        assert report["rows"]["answer_feedback"] == 4
        assert report["files"]["datasets"] == 1 and report["files"]["adapters"] >= 3
        assert report["decider"]["pair_fingerprints"] == 4 and report["decider"]["minhash_signatures"] == 4
        assert any("retention" in k for k in report["kept"])

        after = wait_for(
            lambda: (a := node.ask("Q?", "alice"))["samtuner"]["source"] == "base" and a,
            30,
            "alice answered by the base model",
        )
        assert after["samtuner"]["fallback_reason"].startswith("revoked")

        # Alice corrects again through the SDK (a fresh feedback id per call): she is heard.
        with FeedbackPublisher(cfg.kafka, cfg.kafka.topic_prefix) as sam:
            again = sam.correction(
                user_id="alice", prompt=ALICE[0][0], original_response=ALICE[0][1], corrected_response=ALICE[0][2]
            )
        wait_for(
            lambda: any(
                isinstance(e, PairAccepted) and e.feedback_event_id == again.event_id
                for e in events_on(cfg, topics.pairs)
            ),
            60,
            "the new correction to become a pair",
        )
        # ... and that new pair is hers again, until the next erasure, which is what the scan below checks.
        erase2 = subprocess.run(
            [sys.executable, "-m", "samtuner.cli", "users", "erase", "alice", "--yes", "-c", str(cfg_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert erase2.returncode == 0, erase2.stderr
        assert json.loads(erase2.stdout.strip().splitlines()[-1])["rows"]["preference_pairs"] == 1
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]

    erased = [e for e in events_on(cfg, topics.pairs) if isinstance(e, UserErased)]
    assert len(erased) == 2
    assert [e.user_id for e in events_on(cfg, topics.adapters) if isinstance(e, AdapterPublished)] == ["alice"]
    scan_store(cfg)
    assert files_with_alice(cfg) == []
    scan_journal(cfg)


def _found(text: str) -> list[str]:
    return [needle for needle in ["alice", *ALICE_TEXTS] if needle.lower() in text.lower()]


def scan_store(cfg: Config) -> None:
    """Every table with storage, every column, every row: nothing of alice; bob is still there."""
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        tables = store.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": cfg.clickhouse.database}
        )
        stored = sorted(name for name, engine in tables if engine not in ("View",))
        declared = sorted(d.table for d in USER_DATA)
        assert stored == declared, "every table of the store must be declared in schemas/ddl.py USER_DATA"
        bob_seen = False
        for table in stored:
            for row in store.query(f"SELECT * FROM {cfg.clickhouse.database}.{table}"):
                text = " ".join(map(str, row))
                assert not _found(text), f"{table}: {_found(text)} in {text[:300]}"
                bob_seen = bob_seen or "bob-text" in text
        assert bob_seen, "the scan must see other users' data (else it proves nothing)"
        revoked = store.query(
            f"SELECT version, revoked, uri FROM {cfg.clickhouse.database}.adapters FINAL WHERE user_id = {{u:String}}",
            {"u": f"erased:{user_key('alice')}"},
        )
        assert revoked == [(1, True, "")], "alice's adapter version stays known, revoked, under her user key"
    finally:
        store.close()


def files_with_alice(cfg: Config) -> list[str]:
    """Files under the artifact root and the trainer's job directories that hold alice's id or texts:
    raw bytes, and the decoded rows of Parquet snapshots (they are compressed)."""
    hits = []
    for root in (cfg.artifact_root, cfg.state_path / "trainer"):
        for path in (p for p in root.rglob("*") if p.is_file()) if root.exists() else ():
            try:
                text = path.read_bytes().decode("utf-8", errors="replace")
                if path.suffix == ".parquet":
                    text += json.dumps(pq.read_table(path).to_pylist(), default=str)
            except OSError:
                continue  # removed while we looked
            if _found(text):
                hits.append(f"{path}: {_found(text)}")
    return hits


def scan_journal(cfg: Config) -> None:
    """The decider's journal as a compacted changelog keeps it: the last value of every key."""
    changelog = f"{cfg.streams.app_id}-decider-journal-changelog"
    last: dict[bytes | None, bytes | None] = {}
    for msg in read_topic(cfg.kafka.bootstrap_servers, changelog):
        last[msg.key] = msg.value
    live = " ".join((v or b"").decode("utf-8", errors="replace") for v in last.values())
    assert live and not _found(live), _found(live)
    assert "bob" in live  # bob's state is still there
