"""An analyst's session: `samtuner run` holds the embedded store, the quality fixture is replayed and a
user corrects one of the node's answers; `samtuner analytics` and `samtuner sql` answer through the
running process's API with the figures the fixture declares, refuse a write, and show ClickHouse's
message for a wrong query. Once the process has stopped, `samtuner sql` opens the store itself.

Expectations come from tests/replays/quality.expected.json (declared by hand in make_quality.py)
and from the answers the node returned, never from the analytics themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.kafka import KafkaEventPublisher
from samtuner.fixtures import read_fixture, replay
from samtuner.publisher import FeedbackPublisher
from schemas.config import Config
from tests.conftest import REPLAYS, ROOT
from tests.integration.harness import RunningProcess, wait_caught_up, wait_for

pytestmark = pytest.mark.integration
EXPECTED = json.loads((REPLAYS / "quality.expected.json").read_text())
DAY = {"since": "2026-11-24", "until": "2026-11-25"}  # every fixture line happened on this day
NEAR_IDENTICAL = {"qa-alice": 1}  # make_quality.py: the Germany pair, "accepted, flagged near-identical"
TERMINAL = {"succeeded", "failed", "cancelled", "rejected"}


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samtuner.cli", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def cli_json(path: Path, *args: str) -> Any:
    result = cli(path, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def period(**extra: str) -> list[str]:
    return [x for k, v in {**DAY, **extra}.items() for x in (f"--{k}", v)]


def user_of(feedback_id: str) -> str:
    return feedback_id.rsplit("-", 1)[0]  # "qa-alice-003" -> "qa-alice"


def replay_fixture(cfg: Config, proc: RunningProcess) -> None:
    lines = list(read_fixture(REPLAYS / "quality.jsonl"))
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    for phase in ("1", "2", "3"):
        replay(
            [line for line in lines if dict(line.headers)["fixture.phase"].decode() == phase],
            publisher,
            cfg.kafka.topic_prefix,
        )
        publisher.flush()
        wait_caught_up(cfg, proc=proc)


def created_at_of_pairs() -> list[datetime]:
    by_feedback = {}
    for line in read_fixture(REPLAYS / "quality.jsonl"):
        value = json.loads(line.value or b"null") if (line.value or b"").startswith(b"{") else None
        if isinstance(value, dict) and "feedback_id" in value:
            by_feedback[value["feedback_id"]] = datetime.fromisoformat(value["occurred_at"])
    return [by_feedback[p["feedback_id"]] for p in EXPECTED["pairs"].values()]


def test_analytics_and_sql_through_the_running_process(make_config: Any) -> None:
    cfg, path = make_config(**EXPECTED["config"])
    proc = RunningProcess(cfg, path)
    try:
        proc.wait_ready()
        started = time.time()
        replay_fixture(cfg, proc)
        replayed = time.time()
        # erin asks three questions (she has no adapter: the base model answers), corrects the first
        # answer and likes the second; SAM echoes the answers' ids.
        answers = [
            proc.ask(q, "qa-erin")
            for q in ("What is the capital of France?", "What is 3 plus 4?", "What color is the sky?")
        ]
        assert {(a["samtuner"]["arm"], a["samtuner"]["adapter_version"]) for a in answers} == {("base", None)}
        with FeedbackPublisher(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix) as sam:
            sam.correction(
                "qa-erin",
                "What is the capital of France?",
                answers[0]["choices"][0]["message"]["content"],
                "The capital of France is Paris.",
                confidence_score=0.95,
                context={"answer_id": answers[0]["id"]},
            )
            sam.feedback(
                "qa-erin",
                "What is 3 plus 4?",
                answers[1]["choices"][0]["message"]["content"],
                feedback_type="thumbs_up",
                context={"answer_id": answers[1]["id"]},
            )
        wait_caught_up(cfg, proc=proc)
        wait_for(lambda: jobs_ended(proc.url), 240, "both training jobs to end")

        every = cli(path, "analytics", "--json", *period())
        assert every.returncode == 0, every.stderr
        assert f"asking the API at {proc.url}" in every.stderr  # the store is held: the API answered
        results = json.loads(every.stdout)
        check_fixture_day(results, started, replayed)
        check_outside_the_fixture(path)
        check_sql_through_the_api(path)
    finally:
        code = proc.stop()
    assert code == 0, proc.log()[-3000:]
    # The process is gone: the CLI opens the store itself and finds the same.
    direct = cli(path, "sql", "--json", PAIRS_PER_USER)
    assert direct.returncode == 0, direct.stderr
    assert "asking" not in direct.stderr
    assert json.loads(direct.stdout)["rows"] == expected_pairs_per_user()


def jobs_ended(url: str) -> bool:
    sql = f"SELECT countIf(status IN {tuple(sorted(TERMINAL))}) FROM sam.training_jobs FINAL"
    r = httpx.post(f"{url}/api/v1/sql", json={"sql": sql}, timeout=30)
    return r.status_code == 200 and r.json()["rows"] == [[len(EXPECTED["training_requests"])]]


def check_fixture_day(results: dict[str, Any], started: float, replayed: float) -> None:
    pairs = EXPECTED["pairs"].values()
    users = sorted({p["user_id"] for p in pairs})
    count = Counter(p["user_id"] for p in pairs)
    active = Counter(p["user_id"] for p in pairs if p["is_active"])
    assert [
        (r["user_id"], r["pairs"], r["active_pairs"], r["near_identical"]) for r in results["pairs_per_day"]["rows"]
    ] == [(u, count[u], active[u], NEAR_IDENTICAL.get(u, 0)) for u in users]
    assert {r["day"] for r in results["pairs_per_day"]["rows"]} == {"2026-11-24"}

    rejected = Counter(user_of(fid) for fid in EXPECTED["rejected"])
    examples = Counter(u for u, _, _ in EXPECTED["examples"])
    deciding = sorted(set(count) | set(rejected) | set(examples))
    expected_acceptance = []
    for u in deciding:
        accepted = count[u] + examples[u]
        expected_acceptance.append(
            (u, count[u], examples[u], rejected[u], round(accepted / (accepted + rejected[u]), 4))
        )
    assert [
        (r["user_id"], r["accepted_pairs"], r["accepted_examples"], r["rejected"], r["acceptance_rate"])
        for r in results["acceptance_rate"]["rows"]
    ] == expected_acceptance

    reasons = Counter(code for codes in EXPECTED["rejected"].values() for code in codes)
    assert {r["reason"]: r["rejections"] for r in results["reject_reasons"]["rows"]} == dict(reasons)

    buckets = results["quality_histogram"]["rows"]
    assert sum(b["accepted"] for b in buckets) == len(EXPECTED["pairs"])
    assert all(b["quality_from"] >= 0.5 for b in buckets if b["accepted"])  # min_quality 0.5
    assert sum(b["rejected"] for b in buckets if b["quality_to"] <= 0.5) == reasons["low_quality"]

    shares = {r["user_id"]: r["near_identical_share"] for r in results["near_identical"]["rows"]}
    assert shares == {u: round(NEAR_IDENTICAL.get(u, 0) / count[u], 4) for u in users}

    # Lag: each pair was projected between the replay's start and its end.
    created = [c.timestamp() for c in created_at_of_pairs()]
    low, high = (started - max(created)) * 1000, (replayed - min(created)) * 1000
    (lag,) = results["ingestion_lag"]["rows"]
    assert lag["pairs"] == len(EXPECTED["pairs"])
    assert low <= lag["lag_ms_p50"] <= lag["lag_ms_p99"] <= lag["lag_ms_max"] <= high

    # The jobs were requested today, not on the fixture's day; answers were served today too.
    assert results["job_outcomes"]["rows"] == [] and results["correction_rate"]["rows"] == []


def check_outside_the_fixture(path: Path) -> None:
    jobs = cli_json(path, "analytics", "job_outcomes")["rows"]
    assert sum(j["jobs"] for j in jobs) == len(EXPECTED["training_requests"])
    assert {j["status"] for j in jobs} <= TERMINAL
    assert all(j["duration_s_p50"] is not None and 0 <= j["duration_s_p50"] <= j["duration_s_max"] < 600 for j in jobs)
    succeeded = sum(j["jobs"] for j in jobs if j["status"] == "succeeded")
    adapters = cli_json(path, "analytics", "adapters_per_day")["rows"]
    assert sum(a["adapters"] for a in adapters) == succeeded  # one adapter per successful job

    erin = cli_json(path, "analytics", "correction_rate", "--user", "qa-erin")["rows"]
    assert erin == [
        {
            "user_id": "qa-erin",
            "arm": "base",
            "adapter_version": None,
            "answers": 3,
            "corrected": 1,
            "thumbs_down": 0,
            "thumbs_up": 1,
            "correction_rate": 0.3333,
        }
    ]

    table = cli(path, "analytics", "reject_reasons", *period())
    assert table.returncode == 0, table.stderr
    assert "reject_reasons: Rejections per day and reason code" in table.stdout
    assert "duplicate_pair" in table.stdout and "low_quality" in table.stdout

    unknown = cli(path, "analytics", "pairs")
    assert unknown.returncode == 2 and "unknown analytic 'pairs'; known:" in unknown.stderr
    bad_time = cli(path, "analytics", "pairs_per_day", "--since", "last tuesday")
    assert bad_time.returncode == 2 and "since='last tuesday' is not a time" in bad_time.stderr


PAIRS_PER_USER = (
    "SELECT user_id, count() AS pairs FROM sam.preference_pairs FINAL "
    "WHERE toDate(created_at) = '2026-11-24' GROUP BY user_id ORDER BY user_id"
)


def expected_pairs_per_user() -> list[list[Any]]:
    return [[u, n] for u, n in sorted(Counter(p["user_id"] for p in EXPECTED["pairs"].values()).items())]


def check_sql_through_the_api(path: Path) -> None:
    result = cli_json(path, "sql", PAIRS_PER_USER)
    assert result["columns"] == [{"name": "user_id", "type": "String"}, {"name": "pairs", "type": "UInt64"}]
    assert result["rows"] == expected_pairs_per_user()

    table = cli(path, "sql", "SELECT reason, count() AS n FROM sam.dead_letters FINAL GROUP BY reason ORDER BY reason")
    assert table.returncode == 0, table.stderr
    assert all(reason in table.stdout for reason, _ in EXPECTED["dead_letters"])

    for write in (
        "INSERT INTO sam.preference_pairs (user_id) VALUES ('mallory')",
        "DROP TABLE sam.preference_pairs",
        "SELECT 1; TRUNCATE TABLE sam.preference_pairs; SELECT 2",
    ):
        refused = cli(path, "sql", write)
        assert refused.returncode == 2, (write, refused.stderr)
        assert "refused: analysts' queries are read-only" in refused.stderr
        assert "readonly mode" in refused.stderr  # ClickHouse's own words
    assert cli_json(path, "sql", PAIRS_PER_USER)["rows"] == expected_pairs_per_user()  # nothing changed

    wrong = cli(path, "sql", "SELEC user_id FROM sam.preference_pairs")
    assert wrong.returncode == 1
    assert "Syntax error" in wrong.stderr and "SYNTAX_ERROR" in wrong.stderr
    missing = cli(path, "sql", "SELECT * FROM sam.no_such_table")
    assert missing.returncode == 1 and "UNKNOWN_TABLE" in missing.stderr
