"""Analytics on the embedded store (chDB in a tmp dir): ClickHouse's readonly=1 refuses every write,
however it is dressed up; the views count the projections' current state (superseded versions,
replays and erasures included); the API and the CLI's HTTP path answer exactly what the store does.

Rows are written the way the projector writes them (its row builders and its sink).
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from console.analytics_api import analytics_router
from infra.analytics import run_analytic, run_sql
from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore, embedded_holder
from infra.errors import QueryFailed, QueryRefused, StoreError, StoreLocked
from infra.kafka import RawMessage
from samtuner.analytics import ApiSource, StoreSource, open_source
from schemas.analytics import CATALOGUE
from schemas.codec import encode_value
from schemas.errors import AnalyticsError, UnknownAnalytic
from schemas.events import (
    AdapterPublished,
    AnswerServed,
    BaseModelRef,
    DatasetRef,
    FeedbackReceived,
    LabelledExampleAccepted,
    PairAccepted,
    PairRejected,
    RejectionReason,
    SourceRef,
    TrainingFailed,
    TrainingRequested,
    TrainingStarted,
    TrainingSucceeded,
)
from schemas.topics import Topics
from streams.projector import rows as R
from streams.projector.projection import ClickHouseSink, Projector
from tests.conftest import ROOT, make_config_at
from tests.fakes import FakePublisher

D1 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
D2 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SRC = SourceRef(topic="sam.feedback.v1", partition=0, offset=0)
_ids = iter(range(1, 10_000))


def uid() -> uuid.UUID:
    return uuid.UUID(int=next(_ids))


def pair(user: str, created: datetime, quality: float, near_identical: bool = False) -> PairAccepted:
    meta: dict[str, str | int | float | bool] = {"near_identical": True, "similarity": 0.93} if near_identical else {}
    return PairAccepted(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user,
        pair_id=uid(),
        feedback_event_id=uid(),
        prompt="p",
        chosen_response="c",
        rejected_response="r",
        confidence_score=0.9,
        quality_score=quality,
        feedback_type="correction",
        created_at=created,
        metadata=meta,
        source=SRC,
    )


def rejection(user: str, created: datetime, codes: list[str], quality: float | None) -> PairRejected:
    return PairRejected(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user,
        feedback_event_id=uid(),
        feedback_type="correction",
        reasons=tuple(RejectionReason(code=c) for c in codes),
        quality_score=quality,
        prompt="p",
        chosen_response="c",
        rejected_response="r",
        created_at=created,
        source=SRC,
    )


def request(user: str, at: datetime, generation: int) -> TrainingRequested:
    return TrainingRequested(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user,
        occurred_at=at,
        request_id=uid(),
        generation=generation,
        trigger="threshold",
        triggered_at=at,
        dataset=DatasetRef(uri="datasets/x.parquet", sha256="0" * 64, rows=3, pair_ids=()),
    )


def adapter(user: str, version: int, at: datetime) -> AdapterPublished:
    return AdapterPublished(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user,
        occurred_at=at,
        version=version,
        request_id=uid(),
        uri=f"adapters/{user}/{version}",
        files={},
        dataset_sha256="0" * 64,
        base_model=BaseModelRef(name_or_path="tiny", weights_sha256="0" * 64),
        triggered_at=at,
    )


def answer(user: str, arm: str, version: int | None, at: datetime) -> AnswerServed:
    return AnswerServed(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user,
        occurred_at=at,
        answer_id=uid(),
        node_id="n1",
        arm=arm,
        adapter_version=version,
        latency_ms=5.0,
    )


def feedback_on(a: AnswerServed, kind: str, user: str | None = None) -> FeedbackReceived:
    return FeedbackReceived(
        event_id=uid(),
        correlation_id=uid(),
        user_id=user or a.user_id,
        feedback_id=str(uid()),
        feedback_type=kind,
        prompt="p",
        original_response="o",
        corrected_response="c" if kind == "correction" else None,
        context={"answer_id": f"chatcmpl-{a.answer_id.hex}"},
    )


PAIR_AND_PROJECTED = (*R.PAIR_COLUMNS, "projected_at")


def load(store: ClickHouseStore) -> dict[str, Any]:
    """The story: two users over two days; every number the tests expect is written here."""
    sink = ClickHouseSink(store)
    p1 = pair("alice", D1, 0.95)
    p2 = pair("alice", D1, 0.55, near_identical=True)
    p3 = pair("alice", D2, 0.75)
    p4 = pair("bob", D2, 1.0)
    p5 = pair("bob", D2, 0.65)
    lags = [(p1, 2.0), (p2, 4.0), (p3, 6.0), (p4, 1.0), (p5, 3.0)]  # seconds from created_at to projected_at
    rows = [[*R.pair_row(p, version=i + 1), p.created_at + timedelta(seconds=lag)] for i, (p, lag) in enumerate(lags)]
    store.insert("preference_pairs", rows, PAIR_AND_PROJECTED, dedup_token="pairs-1")
    store.insert("preference_pairs", [rows[2]], PAIR_AND_PROJECTED, dedup_token="pairs-replayed")  # p3 again
    sink.update_pairs("alice", [p1.pair_id], version=10, is_active=False)  # a superseded version of p1 is stored
    store.insert(
        "rejected_feedback",
        [
            R.rejected_row(r)
            for r in (
                rejection("alice", D1, ["low_quality"], 0.3),
                rejection("alice", D2, ["duplicate_pair", "near_duplicate"], None),
                rejection("bob", D2, ["low_confidence", "low_quality"], 0.1),
            )
        ],
        R.REJECTED_COLUMNS,
        dedup_token="rejected-1",
    )
    store.insert(
        "labelled_examples",
        [
            R.example_row(
                LabelledExampleAccepted(
                    event_id=uid(),
                    correlation_id=uid(),
                    user_id="bob",
                    example_id=uid(),
                    feedback_event_id=uid(),
                    prompt="p",
                    response="r",
                    desirable=True,
                    confidence_score=0.9,
                    created_at=D2,
                    source=SRC,
                )
            )
        ],
        R.EXAMPLE_COLUMNS,
        dedup_token="examples-1",
    )
    # Jobs (requested long before, as replayed feedback would be): alice's first attempt starts, fails
    # with a retry, the second succeeds 150 s after the first start; bob's fails 8 s after its start;
    # alice's second job is still running.
    j1, j2, j3 = request("alice", D1 - timedelta(days=3), 1), request("bob", D2, 1), request("alice", D2, 2)

    def started(j: TrainingRequested, at: datetime, attempt: int = 1) -> TrainingStarted:
        return TrainingStarted(
            event_id=uid(),
            correlation_id=uid(),
            user_id=j.user_id,
            request_id=j.request_id,
            occurred_at=at,
            attempt=attempt,
        )

    starts = [
        started(j1, D1),
        started(j1, D1 + timedelta(seconds=60), attempt=2),
        started(j2, D2),
        started(j3, D2 + timedelta(hours=1)),
    ]
    job_events = [
        (j1, 1),
        (j2, 2),
        (j3, 3),
        (starts[0], 4),
        (
            TrainingFailed(
                event_id=uid(),
                correlation_id=uid(),
                user_id="alice",
                request_id=j1.request_id,
                occurred_at=D1 + timedelta(seconds=50),
                cause="out of memory",
                error_type="oom",
                will_retry=True,
                retry_in_s=5.0,
            ),
            5,
        ),
        (starts[1], 6),
        (
            TrainingSucceeded(
                event_id=uid(),
                correlation_id=uid(),
                user_id="alice",
                request_id=j1.request_id,
                occurred_at=D1 + timedelta(seconds=150),
                adapter_version=1,
                adapter_uri="a",
                duration_s=90.0,
            ),
            7,
        ),
        (starts[2], 8),
        (
            TrainingFailed(
                event_id=uid(),
                correlation_id=uid(),
                user_id="bob",
                request_id=j2.request_id,
                occurred_at=D2 + timedelta(seconds=8),
                cause="boom",
                error_type="RuntimeError",
            ),
            9,
        ),
        (starts[3], 10),
    ]
    store.insert(
        "training_requests",
        [R.training_request_row(j) for j in (j1, j2, j3)],
        R.TRAINING_REQUEST_COLUMNS,
        dedup_token="requests-1",
    )
    store.insert("training_jobs", present(R.job_row(e, v) for e, v in job_events), R.JOB_COLUMNS, dedup_token="jobs-1")
    store.insert("training_attempts", [R.attempt_row(s) for s in starts], R.ATTEMPT_COLUMNS, dedup_token="attempts-1")
    store.insert(
        "adapters",
        [R.adapter_row(a) for a in (adapter("alice", 1, D1), adapter("alice", 2, D2), adapter("bob", 1, D2))],
        R.ADAPTER_COLUMNS,
        dedup_token="adapters-1",
    )
    # Answers: alice got three from adapter v1 and one from the base model, bob one from v1.
    a1, a2, a3 = (answer("alice", "new", 1, D2) for _ in range(3))
    a4, a5 = answer("alice", "base", None, D2), answer("bob", "new", 1, D2)
    log = [R.inference_log_row(a) for a in (a1, a2, a3, a4, a5)]
    store.insert("inference_log", log, R.INFERENCE_LOG_COLUMNS, dedup_token="log-1")
    store.insert("inference_log", [log[2]], R.INFERENCE_LOG_COLUMNS, dedup_token="log-replayed")  # a3 again
    on_a5 = feedback_on(a5, "correction")
    feedback = [
        feedback_on(a1, "correction"),
        feedback_on(a1, "thumbs_down"),
        feedback_on(a2, "correction", user="bob"),  # someone else's answer: not alice's correction
        feedback_on(a4, "thumbs_up"),
        on_a5,
    ]
    store.insert(
        "answer_feedback",
        present(R.answer_feedback_row(f) for f in feedback),
        R.ANSWER_FEEDBACK_COLUMNS,
        dedup_token="feedback-1",
    )
    store.insert(
        "answer_feedback",
        present([R.answer_feedback_row(on_a5)]),
        R.ANSWER_FEEDBACK_COLUMNS,
        dedup_token="feedback-replayed",
    )
    store.insert(
        "dead_letters",
        [
            R.dead_letter_row(
                {"dlq.reason": "invalid_json", "dlq.stage": "decider", "dlq.error": "Expecting value"},
                b"alice",
                b"not json {",
            )
        ],
        R.DEAD_LETTER_COLUMNS,
        dedup_token="dead-1",
    )
    return {"p1": p1}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    s = ClickHouseStore(f"chdb://{tmp_path_factory.mktemp('analytics') / 'ch'}")
    s.migrate()
    load(s)
    try:
        yield s
    finally:
        s.close()


def present(rows: Iterable[list[Any] | None]) -> list[list[Any]]:
    """The rows of events that all make one (a None would be a fixture that tests nothing)."""
    out = list(rows)
    assert all(r is not None for r in out)
    return cast(list[list[Any]], out)


def rows(store: ClickHouseStore, name: str, **params: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = run_analytic(store, name, **params)["rows"]
    return result


# -- readonly=1 ----------------------------------------------------------------------------------


def count_pairs(store: ClickHouseStore) -> int:
    return int(store.query("SELECT count() FROM sam.preference_pairs")[0][0])


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO sam.preference_pairs (user_id) VALUES ('evil')",
        "INSERT INTO sam.preference_pairs (user_id) SELECT 'evil'",
        "DROP TABLE sam.preference_pairs",
        "TRUNCATE TABLE sam.preference_pairs",
        "ALTER TABLE sam.preference_pairs DELETE WHERE 1",
        "CREATE TABLE sam.evil (a UInt8) ENGINE = Memory",
        "OPTIMIZE TABLE sam.preference_pairs FINAL",
        # chDB runs these as three statements; a per-query setting alone would reach only the last one.
        "SELECT 1; DROP TABLE sam.preference_pairs; SELECT 2",
        "SELECT 1; INSERT INTO sam.preference_pairs (user_id) VALUES ('evil'); SELECT 2",
        "SELECT 1 SETTINGS readonly = 0",
        "SET readonly = 0",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "INSERT INTO FUNCTION file('evil.csv', 'CSV') SELECT 1",
    ],
)
def test_clickhouse_refuses_every_write_and_nothing_changes(store: ClickHouseStore, sql: str) -> None:
    before = count_pairs(store)
    with pytest.raises(QueryRefused, match=r"READONLY|readonly mode"):
        store.query_read_only(sql)
    assert count_pairs(store) == before
    assert {r[0] for r in store.query("SHOW TABLES FROM sam")} >= {"preference_pairs", "pairs_daily"}


def test_after_refused_writes_the_projector_still_writes(store: ClickHouseStore) -> None:
    with pytest.raises(QueryRefused):
        store.query_read_only("INSERT INTO sam.preference_pairs (user_id) VALUES ('evil')")
    # readonly stays on the analysts' own session, never on the projector's client.
    assert store.query("SELECT getSetting('readonly')") == [(0,)]
    store.insert("schema_migrations", [["test-marker"]], ["id"])
    assert store.query("SELECT count() FROM sam.schema_migrations WHERE id = 'test-marker'") == [(1,)]
    store.command("ALTER TABLE sam.schema_migrations DELETE WHERE id = 'test-marker' SETTINGS mutations_sync = 1")


def test_a_wrong_query_gets_clickhouse_s_own_message(store: ClickHouseStore) -> None:
    with pytest.raises(QueryFailed, match="Syntax error") as syntax:
        store.query_read_only("SELEC 1")
    assert not isinstance(syntax.value, QueryRefused)
    with pytest.raises(QueryFailed, match="UNKNOWN_TABLE"):
        store.query_read_only("SELECT * FROM sam.no_such_table")


def test_rows_past_the_limit_are_cut_and_said_to_be(store: ClickHouseStore) -> None:
    cut = store.query_read_only("SELECT number FROM numbers(50)", max_rows=10)
    assert (len(cut.rows), cut.truncated) == (10, True)
    whole = store.query_read_only("SELECT number FROM numbers(10)", max_rows=10)
    assert (len(whole.rows), whole.truncated) == (10, False)


def test_times_in_utc_columns_say_they_are_utc(store: ClickHouseStore) -> None:
    result = run_sql(store, "SELECT toDateTime64('2026-11-24 12:00:00', 3, 'UTC') AS t, toDate('2026-11-24') AS d")
    assert result["rows"] == [["2026-11-24T12:00:00+00:00", "2026-11-24"]]


def test_an_empty_result_still_has_its_columns(store: ClickHouseStore) -> None:
    result = run_sql(store, "SELECT user_id, day FROM sam.pairs_daily WHERE user_id = 'nobody'")
    assert result == {
        "columns": [{"name": "user_id", "type": "String"}, {"name": "day", "type": "Date"}],
        "rows": [],
        "row_count": 0,
        "truncated": False,
    }


# -- the views count the current state --------------------------------------------------------------


def test_every_analytic_runs_and_names_its_columns(store: ClickHouseStore) -> None:
    for item in CATALOGUE:
        result = run_analytic(store, item.name)
        assert result["columns"] and result["rows"], item.name


def test_pairs_per_day_counts_each_pair_once_in_its_current_state(store: ClickHouseStore) -> None:
    # p1 was deactivated (a newer version) and p3 replayed: still one row each.
    assert rows(store, "pairs_per_day") == [
        {
            "day": "2026-11-20",
            "user_id": "alice",
            "pairs": 2,
            "active_pairs": 1,
            "near_identical": 1,
            "mean_quality": 0.75,
        },
        {
            "day": "2026-11-21",
            "user_id": "alice",
            "pairs": 1,
            "active_pairs": 1,
            "near_identical": 0,
            "mean_quality": 0.75,
        },
        {
            "day": "2026-11-21",
            "user_id": "bob",
            "pairs": 2,
            "active_pairs": 2,
            "near_identical": 0,
            "mean_quality": 0.825,
        },
    ]


def test_a_period_keeps_the_days_it_overlaps(store: ClickHouseStore) -> None:
    assert {r["day"] for r in rows(store, "pairs_per_day", since="2026-11-21")} == {"2026-11-21"}
    assert {r["day"] for r in rows(store, "pairs_per_day", until="2026-11-21")} == {"2026-11-20"}
    assert {r["day"] for r in rows(store, "pairs_per_day", until="2026-11-21T00:00:01")} == {"2026-11-20", "2026-11-21"}
    assert {r["user_id"] for r in rows(store, "pairs_per_day", user="bob")} == {"bob"}


def test_acceptance_counts_pairs_examples_and_rejections(store: ClickHouseStore) -> None:
    assert rows(store, "acceptance_rate") == [
        {
            "day": "2026-11-20",
            "user_id": "alice",
            "accepted_pairs": 2,
            "accepted_examples": 0,
            "rejected": 1,
            "acceptance_rate": 0.6667,
        },
        {
            "day": "2026-11-21",
            "user_id": "alice",
            "accepted_pairs": 1,
            "accepted_examples": 0,
            "rejected": 1,
            "acceptance_rate": 0.5,
        },
        {
            "day": "2026-11-21",
            "user_id": "bob",
            "accepted_pairs": 2,
            "accepted_examples": 1,
            "rejected": 1,
            "acceptance_rate": 0.75,
        },
    ]


def test_reject_reasons_count_each_reason_of_a_rejection(store: ClickHouseStore) -> None:
    assert [(r["day"], r["reason"], r["rejections"]) for r in rows(store, "reject_reasons")] == [
        ("2026-11-20", "low_quality", 1),
        ("2026-11-21", "duplicate_pair", 1),
        ("2026-11-21", "low_confidence", 1),
        ("2026-11-21", "low_quality", 1),
        ("2026-11-21", "near_duplicate", 1),
    ]


def test_the_quality_histogram_has_tenths_and_puts_1_in_the_last(store: ClickHouseStore) -> None:
    assert [
        (r["quality_from"], r["quality_to"], r["accepted"], r["rejected"]) for r in rows(store, "quality_histogram")
    ] == [
        (0.1, 0.2, 0, 1),
        (0.3, 0.4, 0, 1),
        (0.5, 0.6, 1, 0),
        (0.6, 0.7, 1, 0),
        (0.7, 0.8, 1, 0),
        (0.9, 1.0, 2, 0),
    ]


def test_near_identical_share_per_user(store: ClickHouseStore) -> None:
    assert rows(store, "near_identical") == [
        {"user_id": "alice", "pairs": 3, "near_identical": 1, "near_identical_share": 0.3333},
        {"user_id": "bob", "pairs": 2, "near_identical": 0, "near_identical_share": 0.0},
    ]


def test_job_outcomes_time_each_job_from_its_first_start_to_its_outcome(store: ClickHouseStore) -> None:
    assert rows(store, "job_outcomes") == [
        {"day": "2026-11-20", "status": "succeeded", "jobs": 1, "duration_s_p50": 150.0, "duration_s_max": 150.0},
        {"day": "2026-11-21", "status": "failed", "jobs": 1, "duration_s_p50": 8.0, "duration_s_max": 8.0},
        {"day": "2026-11-21", "status": "running", "jobs": 1, "duration_s_p50": None, "duration_s_max": None},
    ]


def test_adapters_per_day(store: ClickHouseStore) -> None:
    assert rows(store, "adapters_per_day") == [
        {"day": "2026-11-20", "adapters": 1, "users": 1, "revoked": 0},
        {"day": "2026-11-21", "adapters": 2, "users": 2, "revoked": 0},
    ]


def test_correction_rate_per_arm_and_version_counts_each_answer_once(store: ClickHouseStore) -> None:
    assert rows(store, "correction_rate") == [
        {
            "user_id": "alice",
            "arm": "base",
            "adapter_version": None,
            "answers": 1,
            "corrected": 0,
            "thumbs_down": 0,
            "thumbs_up": 1,
            "correction_rate": 0.0,
        },
        {
            "user_id": "alice",
            "arm": "new",
            "adapter_version": 1,
            "answers": 3,
            "corrected": 1,
            "thumbs_down": 1,
            "thumbs_up": 0,
            "correction_rate": 0.3333,
        },
        {
            "user_id": "bob",
            "arm": "new",
            "adapter_version": 1,
            "answers": 1,
            "corrected": 1,
            "thumbs_down": 0,
            "thumbs_up": 0,
            "correction_rate": 1.0,
        },
    ]


def test_ingestion_lag_is_projected_at_minus_created_at_and_survives_deactivation(store: ClickHouseStore) -> None:
    # p1 (lag 2 s) was deactivated after it was projected: the update keeps its projected_at.
    assert rows(store, "ingestion_lag") == [{"pairs": 5, "lag_ms_p50": 3000, "lag_ms_p99": 6000, "lag_ms_max": 6000}]
    assert rows(store, "ingestion_lag", user="alice") == [
        {"pairs": 3, "lag_ms_p50": 4000, "lag_ms_p99": 6000, "lag_ms_max": 6000}
    ]
    assert rows(store, "ingestion_lag", since="2026-11-21") == [
        {"pairs": 3, "lag_ms_p50": 3000, "lag_ms_p99": 6000, "lag_ms_max": 6000}
    ]
    assert rows(store, "ingestion_lag", user="nobody") == [
        {"pairs": 0, "lag_ms_p50": None, "lag_ms_p99": None, "lag_ms_max": None}
    ]


def test_an_erased_user_leaves_the_analytics(tmp_path: Path, store: ClickHouseStore) -> None:
    other = ClickHouseStore(store.dsn, database="sam_erasure")  # same engine, a database of its own
    other.migrate()
    load(other)
    ClickHouseSink(other).erase_user("bob")
    assert {r["user_id"] for r in rows(other, "pairs_per_day")} == {"alice"}
    assert {r["user_id"] for r in rows(other, "acceptance_rate")} == {"alice"}
    assert rows(other, "adapters_per_day")[-1] == {"day": "2026-11-21", "adapters": 2, "users": 2, "revoked": 1}
    other.command("DROP DATABASE sam_erasure SYNC")


def test_the_projector_records_each_attempt_s_start_for_the_job_durations(
    tmp_path: Path, store: ClickHouseStore
) -> None:
    other = ClickHouseStore(store.dsn, database="sam_projector")
    other.migrate()
    job = request("carol", D1 - timedelta(days=30), 1)  # replayed feedback: requested long ago
    events = [
        job,
        TrainingStarted(
            event_id=uid(), correlation_id=uid(), user_id="carol", request_id=job.request_id, occurred_at=D2
        ),
        TrainingSucceeded(
            event_id=uid(),
            correlation_id=uid(),
            user_id="carol",
            request_id=job.request_id,
            occurred_at=D2 + timedelta(seconds=42),
            adapter_version=1,
            adapter_uri="a",
            duration_s=41.0,
        ),
    ]
    topics = Topics()
    messages = [RawMessage(topics.training, 0, i, b"carol", encode_value(e), (), 0) for i, e in enumerate(events)]
    Projector(ClickHouseSink(other), ArtifactStore(tmp_path), FakePublisher(), topics).project(messages)
    assert rows(other, "job_outcomes") == [
        {"day": "2026-11-21", "status": "succeeded", "jobs": 1, "duration_s_p50": 42.0, "duration_s_max": 42.0}
    ]
    other.command("DROP DATABASE sam_projector SYNC")


def cookbook() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### SQL cookbook") :]
    section = section[: section.index("\n### ", 1)]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def test_every_recipe_of_the_readme_s_cookbook_runs_and_finds_the_story(store: ClickHouseStore) -> None:
    recipes = cookbook()
    assert len(recipes) >= 8
    for sql in recipes:
        result = run_sql(store, sql)
        assert result["columns"], sql
        if "today()" not in sql:  # the story happened in November 2026
            assert result["rows"], sql


# -- the API, and the CLI's way through it --------------------------------------------------------------


@pytest.fixture(scope="module")
def api(store: ClickHouseStore) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(analytics_router(store))
    with TestClient(app) as client:
        yield client


def test_the_api_serves_the_catalogue_and_each_analytic(api: TestClient, store: ClickHouseStore) -> None:
    catalogue = api.get("/api/v1/analytics").json()["analytics"]
    assert [c["name"] for c in catalogue] == [a.name for a in CATALOGUE]
    body = api.get("/api/v1/analytics/near_identical", params={"user": "alice", "since": "2026-11-20"}).json()
    assert body["rows"] == [{"user_id": "alice", "pairs": 3, "near_identical": 1, "near_identical_share": 0.3333}]
    assert body["parameters"] == {"user": "alice", "since": "2026-11-20T00:00:00+00:00"}


def test_the_api_says_what_is_wrong(api: TestClient) -> None:
    unknown = api.get("/api/v1/analytics/nope")
    assert unknown.status_code == 404 and "known: pairs_per_day" in unknown.json()["detail"]["message"]
    bad_time = api.get("/api/v1/analytics/pairs_per_day", params={"since": "last tuesday"})
    assert bad_time.status_code == 400 and bad_time.json()["detail"]["error"] == "parameter"
    write = api.post("/api/v1/sql", json={"sql": "DROP TABLE sam.preference_pairs"})
    assert write.status_code == 400
    assert write.json()["detail"]["error"] == "readonly"
    assert write.json()["detail"]["message"].startswith("refused: analysts' queries are read-only")
    wrong = api.post("/api/v1/sql", json={"sql": "SELEC 1"})
    assert wrong.status_code == 400 and wrong.json()["detail"]["error"] == "query"
    assert "Syntax error" in wrong.json()["detail"]["message"]
    assert api.post("/api/v1/sql", json={"sql": ""}).status_code == 422


def test_with_api_keys_the_api_answers_read_keys_only(store: ClickHouseStore) -> None:
    from infra.auth import Authenticator
    from schemas.keys import ApiKey, hash_token

    auth = Authenticator(
        [
            ApiKey(id="reader", sha256=hash_token("r"), scopes=("read",)),
            ApiKey(id="chat", sha256=hash_token("c"), scopes=("infer",)),
        ]
    )
    app = FastAPI()
    app.include_router(analytics_router(store, dependencies=[auth.require("read", "all")]))
    sql = {"sql": "SELECT count() FROM sam.preference_pairs FINAL"}
    with TestClient(app) as client:
        assert client.post("/api/v1/sql", json=sql).status_code == 401
        assert client.post("/api/v1/sql", json=sql, headers={"Authorization": "Bearer c"}).status_code == 403
        ok = client.post("/api/v1/sql", json=sql, headers={"Authorization": "Bearer r"})
        assert ok.status_code == 200 and ok.json()["rows"] == [[5]]
        with pytest.raises(StoreError, match="'read' scope"):  # the CLI's way says what to pass
            ApiSource("http://testserver", http=cast(httpx.Client, client)).sql(sql["sql"], 10)


class TestSources:
    """The CLI's two paths, the store and the API of the process that holds it, answer the same."""

    @pytest.fixture
    def sources(self, store: ClickHouseStore, api: TestClient) -> tuple[StoreSource, ApiSource]:
        return StoreSource(store), ApiSource("http://testserver", http=cast(httpx.Client, api))

    def test_same_answers(self, sources: tuple[StoreSource, ApiSource]) -> None:
        local, remote = sources
        sql = "SELECT user_id, count() AS pairs FROM sam.preference_pairs FINAL GROUP BY user_id ORDER BY user_id"
        assert local.sql(sql, 100) == remote.sql(sql, 100)
        assert local.sql(sql, 100)["rows"] == [["alice", 3], ["bob", 2]]
        for item in CATALOGUE:
            assert local.analytic(item.name, "alice", "2026-11-20", None, 100) == remote.analytic(
                item.name, "alice", "2026-11-20", None, 100
            )
        assert local.catalogue() == remote.catalogue()

    @pytest.mark.parametrize("sql", ["DROP TABLE sam.preference_pairs", "SELEC 1", "SELECT * FROM sam.nope"])
    def test_same_errors_with_clickhouse_s_message(self, sources: tuple[StoreSource, ApiSource], sql: str) -> None:
        local, remote = sources
        with pytest.raises(QueryFailed) as here:
            local.sql(sql, 10)
        with pytest.raises(QueryFailed) as there:
            remote.sql(sql, 10)
        assert type(here.value) is type(there.value)
        assert here.value.clickhouse_message == there.value.clickhouse_message

    def test_same_parameter_errors(self, sources: tuple[StoreSource, ApiSource]) -> None:
        for source in sources:
            with pytest.raises(UnknownAnalytic):
                source.analytic("nope", None, None, None, 10)
            with pytest.raises(AnalyticsError, match="is not a time"):
                source.analytic("pairs_per_day", None, "soon", None, 10)


def test_a_store_held_by_another_process_is_named_without_opening_it(tmp_path: Path, store: ClickHouseStore) -> None:
    dsn = f"chdb://{tmp_path / 'held'}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, clickhouse_connect\n"
            "client = clickhouse_connect.get_client(dsn=sys.argv[1]); print('open', flush=True); sys.stdin.read()",
            dsn,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert embedded_holder(dsn) == holder.pid
        with pytest.raises(StoreLocked, match=f"is open in process {holder.pid}"):
            ClickHouseStore(dsn)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert embedded_holder(dsn) is None
    assert embedded_holder(store.dsn) is None  # this process's own engine is no obstacle


def test_a_held_store_sends_the_cli_to_the_holder_s_api(tmp_path: Path) -> None:
    cfg, _ = make_config_at(tmp_path, "127.0.0.1:1", tmp_path, inference={"host": "0.0.0.0", "port": 8123})
    asked: list[str] = []

    def held(dsn: str, database: str) -> ClickHouseStore:
        raise StoreLocked(f"the embedded ClickHouse at {dsn} is open in another process")

    def api_at(url: str, why: str) -> Any:
        asked.append(url)
        return ApiSource(url, why)

    source = open_source(cfg, open_store=held, open_api=api_at)
    assert isinstance(source, ApiSource) and asked == ["http://127.0.0.1:8123"]
    assert "is open in another process" in source.why
    source.close()
