"""Property: whatever bytes reach the feedback topic (invalid UTF-8, wrong types, 10 MB strings,
deeply nested JSON, SQL-looking strings), each message is either answered on the pairs topic or
dead-lettered with a reason, and the worker keeps running."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infra.clickhouse import ClickHouseStore
from infra.kafka import PRODUCER_DEFAULTS, read_topic
from infra.topics import ensure_topics
from schemas.config import Config
from schemas.topics import Topics
from tests.integration.harness import RunningProcess, wait_for

pytestmark = pytest.mark.integration
SQL = ["'; DROP TABLE sam.preference_pairs; --", '" OR 1=1 --', "Robert'); DELETE FROM sam.adapters;--"]


def event(user: str, prompt: str, original: str, corrected: str | None, **extra: Any) -> dict[str, Any]:
    eid = str(uuid.uuid4())
    value = {
        "event_type": "FeedbackReceived",
        "event_id": eid,
        "correlation_id": eid,
        "user_id": user,
        "feedback_id": eid,
        "prompt": prompt,
        "original_response": original,
        "corrected_response": corrected,
        "confidence_score": 0.9,
    }
    value.update(extra)
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "event_id",
        "user_id",
        "prompt",
        "original_response",
        "corrected_response",
        "confidence_score",
        "feedback_type",
        "occurred_at",
        "context",
        "schema_version",
    ]
)
texts = st.text(min_size=1, max_size=60)


@st.composite
def wrong_type(draw: st.DrawFn) -> bytes:
    value = event("hostile", draw(texts), draw(texts), draw(texts))
    value[draw(fields)] = draw(json_values)
    return json.dumps(value).encode()


@st.composite
def sql_looking(draw: st.DrawFn) -> bytes:
    bad = draw(st.sampled_from(SQL))
    return json.dumps(event(f"user{bad}", f"What is {bad}?", "An answer here.", f"A better answer: {bad}")).encode()


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([10_000, 1_000_000, 10 * 1024 * 1024]))
    field = draw(st.sampled_from(["prompt", "original_response", "corrected_response"]))
    value = event("hostile-huge", "What is big?", "Something small.", "Something big.")
    value[field] = "x" * size
    return json.dumps(value).encode()


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=500, max_value=200_000).map(lambda d: ("[" * d + "]" * d).encode()),
    st.integers(min_value=500, max_value=5_000).map(lambda d: ('{"a":' * d + "1" + "}" * d).encode()),
    wrong_type(),
    sql_looking(),
    huge(),
    st.builds(lambda p, o, c: json.dumps(event("hostile-valid", p, o, c)).encode(), texts, texts, texts),
)


@pytest.fixture(scope="module")
def worker(kafka: str, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    from tests.conftest import make_config_at

    cfg, path = make_config_at(tmp_path_factory.mktemp("hostile"), kafka, tiny_model)
    ensure_topics(cfg.kafka)
    proc = RunningProcess(cfg, path, command="streams", log_name="streams.log")
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]
    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:  # the SQL-looking strings were data, nothing else
        for table in ("preference_pairs", "rejected_feedback", "dead_letters", "adapters"):
            store.query(f"SELECT count() FROM sam.{table} FINAL")
        reasons = store.query("SELECT DISTINCT reason FROM sam.dead_letters FINAL")
        assert reasons and all(r[0] for r in reasons)
    finally:
        store.close()


def produce(cfg: Config, values: list[tuple[bytes | None, bytes]]) -> set[tuple[int, int]]:
    positions: set[tuple[int, int]] = set()
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err.str())
        else:
            positions.add((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, **PRODUCER_DEFAULTS})
    for key, value in values:
        producer.produce(Topics(cfg.kafka.topic_prefix).feedback, key=key, value=value, on_delivery=delivered)
    producer.flush(60)
    assert not errors, errors
    return positions


def answered(cfg: Config) -> tuple[set[tuple[int, int]], list[dict[str, bytes]]]:
    t = Topics(cfg.kafka.topic_prefix)
    seen: set[tuple[int, int]] = set()
    for msg in read_topic(cfg.kafka.bootstrap_servers, t.pairs):
        h = dict(msg.headers)
        if h.get("src.topic", b"").decode() == t.feedback:
            seen.add((int(h["src.partition"]), int(h["src.offset"])))
    dead = []
    for msg in read_topic(cfg.kafka.bootstrap_servers, t.dlq):
        h = dict(msg.headers)
        dead.append(h)
        seen.add((int(h["dlq.source.partition"]), int(h["dlq.source.offset"])))
    return seen, dead


def _ten_mb(field: str) -> bytes:
    value = event("hostile-huge", "What is big?", "Something small.", "Something big.")
    value[field] = "x" * (10 * 1024 * 1024)
    return json.dumps(value).encode()


def _incompressible_mb(field: str, mib: int = 3) -> bytes:
    """An event larger than the decider's fetch size per partition even compressed (random hex):
    the broker must hand it over whole (streams/decider/app.py, FETCH_BYTES_PER_PARTITION)."""
    value = event("hostile-huge", "What is big?", "Something small.", "Something big.")
    value[field] = os.urandom(mib * 1024 * 1024 // 2).hex()
    return json.dumps(value).encode()


# Every kind at least once, whatever the random draws do.
EXPLICIT = [
    (b"k", b"\xff\xfe\xfd invalid utf-8"),
    (None, b"[" * 100_000 + b"]" * 100_000),
    (b"k", b'{"a":' * 3000 + b"1" + b"}" * 3000),
    (b"hostile", json.dumps({**event("hostile", "Q?", "A.", "B."), "confidence_score": "very high"}).encode()),
    (b"hostile", json.dumps({**event("hostile", "Q?", "A.", "B."), "context": {"deep": {"er": [1, 2]}}}).encode()),
    (b"u", json.dumps(event(f"user{SQL[0]}", f"What is {SQL[0]}?", "An answer here.", f"Better: {SQL[0]}")).encode()),
    (b"hostile-huge", _ten_mb("corrected_response")),
    (b"hostile-huge", _incompressible_mb("prompt")),
    (None, b""),
]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@example(batch=EXPLICIT)
@given(batch=st.lists(st.tuples(st.one_of(st.none(), st.binary(max_size=20)), payloads), min_size=1, max_size=10))
def test_every_hostile_payload_is_answered_or_dead_lettered_and_the_worker_survives(
    worker: RunningProcess, batch: list[tuple[bytes | None, bytes]]
) -> None:
    cfg = worker.cfg
    positions = produce(cfg, batch)
    wait_for(lambda: positions <= answered(cfg)[0] or not worker.alive(), 120, "every payload to be answered")
    assert worker.alive(), worker.log()[-3000:]
    _, dead = answered(cfg)
    assert all(h.get("dlq.reason") and h.get("dlq.error") is not None for h in dead)
