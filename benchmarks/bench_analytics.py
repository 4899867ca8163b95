"""``make bench-analytics``: how long the analytics take on a store of realistic size (embedded chDB).

The analytics are plain views over ``FINAL`` (no materialized views: see schemas/ddl.py), so their
cost is paid at query time; this measures it. A store in a temporary directory is filled through
the projector's own row builders with 100,000 pairs (1,000 users over 30 days, 5% deactivated: a
second, superseded version each), 20,000 rejections, 5,000 labelled examples, 2,000 jobs with their
attempts, 1,500 adapters, 100,000 answers and 10,000 feedback events naming an answer. Then every
analytic runs ``--runs`` times for every user and for one user, through the same read-only path
as ``samtuner analytics`` (readonly=1 session), every row read and converted to JSON (the largest,
pairs per user per day, has 30,000). Progress goes to stderr; the last stdout line is one
JSON object:

* ``analytics_ms``: per analytic, ``{"all_p50", "all_max", "user_p50", "user_max"}`` in ms;
* ``slowest_all_p50_ms`` / ``slowest_user_p50_ms``: the slowest analytic's median;
* ``sql_query_ms_p50`` (and ``_max``): a per-user aggregate over ``preference_pairs FINAL`` through
  ``query_read_only``;
* ``load_rows_per_s``: rows written while filling the store (for scale, not a goal).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.analytics import run_analytic
from infra.clickhouse import MAX_RESULT_ROWS, ClickHouseStore
from schemas.analytics import CATALOGUE
from streams.projector import rows as R

START = datetime(2026, 11, 1, tzinfo=UTC)
REASONS = ["low_quality", "duplicate_pair", "near_duplicate", "chosen_too_long", "low_confidence", "contradiction"]
BATCH = 20_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill(store: ClickHouseStore, users: int, pairs: int, seed: int) -> int:
    rnd = random.Random(seed)
    names = [f"user-{i:04d}" for i in range(users)]

    def when() -> datetime:
        return START + timedelta(seconds=rnd.uniform(0, 30 * 86_400))

    def uid() -> uuid.UUID:
        return uuid.UUID(int=rnd.getrandbits(128))

    written = 0

    def put(table: str, rows: list[list[Any]], columns: tuple[str, ...]) -> None:
        nonlocal written
        for i in range(0, len(rows), BATCH):
            store.insert(table, rows[i : i + BATCH], columns, dedup_token=f"bench-{table}-{i}")
        written += len(rows)

    pair_rows = []
    for n in range(pairs):
        created = when()
        near = rnd.random() < 0.08
        pair_rows.append(
            [
                uid(),
                rnd.choice(names),
                "What is the capital of Peru?",
                "The capital of Peru is Lima. Hope this helps!",
                "Lima.",
                0.95,
                rnd.uniform(0.5, 1.0),
                "correction",
                created,
                True,
                1.0,
                json.dumps({"near_identical": True, "similarity": 0.93} if near else {}),
                uid(),
                uid(),
                "sam.feedback.v1",
                0,
                n,
                n + 1,
                created,
                created + timedelta(milliseconds=rnd.lognormvariate(7, 0.5)),
            ]
        )
    columns = (*R.PAIR_COLUMNS, "projected_at")
    put("preference_pairs", pair_rows, columns)
    superseded = [[*row[:9], False, *row[10:17], row[17] + pairs, *row[18:]] for row in pair_rows[: pairs // 20]]
    put("preference_pairs", superseded, columns)
    put(
        "rejected_feedback",
        [
            [
                uid(),
                rnd.choice(names),
                "correction",
                rnd.sample(REASONS, rnd.choice((1, 1, 2))),
                ["detail"],
                rnd.uniform(0.0, 1.0) if rnd.random() < 0.7 else None,
                "p",
                "c",
                "r",
                when(),
                uid(),
                "sam.feedback.v1",
                0,
                n,
            ]
            for n in range(pairs // 5)
        ],
        R.REJECTED_COLUMNS,
    )
    put(
        "labelled_examples",
        [
            [
                uid(),
                rnd.choice(names),
                "p",
                "r",
                rnd.random() < 0.5,
                0.9,
                when(),
                "{}",
                uid(),
                uid(),
                "sam.feedback.v1",
                0,
                n,
            ]
            for n in range(pairs // 20)
        ],
        R.EXAMPLE_COLUMNS,
    )
    jobs, attempts = [], []
    for n in range(2_000):
        request_id, user, started = uid(), rnd.choice(names), when()
        status = rnd.choice(("succeeded", "succeeded", "succeeded", "failed", "rejected", "cancelled"))
        ended = started + timedelta(seconds=rnd.uniform(10, 300))
        jobs.append(
            [
                request_id,
                user,
                status,
                1,
                160,
                160,
                0.1,
                1 if status == "succeeded" else None,
                "",
                "{}",
                ended,
                n,
                "w1",
                20.0,
                None,
            ]
        )
        attempts.append([request_id, 1, user, "w1", 0, started])
    put("training_jobs", jobs, R.JOB_COLUMNS)
    put("training_attempts", attempts, R.ATTEMPT_COLUMNS)
    put(
        "adapters",
        [
            [name, v, uid(), "adapters/x", "{}", "base", "0" * 64, "0" * 64, "{}", when(), "", [], [], None, "{}", "{}"]
            for v in (1, 2)
            for name in names[:750]
        ],
        R.ADAPTER_COLUMNS,
    )
    answers = [
        [uid(), rnd.choice(names), "node-1", arm, 1 if arm == "new" else None, None, 20.0, 16, when()]
        for arm in rnd.choices(("new", "previous", "base"), weights=(6, 2, 2), k=pairs)
    ]
    put("inference_log", answers, R.INFERENCE_LOG_COLUMNS)
    put(
        "answer_feedback",
        [
            [a[0], uid(), a[1], rnd.choice(("correction", "thumbs_up", "thumbs_down")), a[8]]
            for a in rnd.sample(answers, pairs // 10)
        ],
        R.ANSWER_FEEDBACK_COLUMNS,
    )
    return written


def timed(action: Callable[[], Any], runs: int) -> list[float]:
    action()  # warm
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        action()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        store = ClickHouseStore(f"chdb://{Path(tmp) / 'ch'}")
        store.migrate()
        t = time.perf_counter()
        written = fill(store, args.users, args.pairs, args.seed)
        load_s = time.perf_counter() - t
        log(f"filled the store: {written} rows in {load_s:.1f} s")
        user = "user-0042"
        figures: dict[str, dict[str, float]] = {}
        for item in CATALOGUE:
            every = timed(lambda n=item.name: run_analytic(store, n, max_rows=MAX_RESULT_ROWS), args.runs)
            one = timed(lambda n=item.name: run_analytic(store, n, user=user, max_rows=MAX_RESULT_ROWS), args.runs)
            figures[item.name] = {
                "all_p50": round(statistics.median(every), 1),
                "all_max": round(max(every), 1),
                "user_p50": round(statistics.median(one), 1),
                "user_max": round(max(one), 1),
            }
            log(f"{item.name}: {figures[item.name]}")
        sql = (
            "SELECT count() AS pairs, countIf(is_active) AS active, avg(quality_score) AS quality "
            "FROM sam.preference_pairs FINAL WHERE user_id = 'user-0042'"
        )
        per_user = timed(lambda: store.query_read_only(sql), args.runs)
        store.close()
    print(
        json.dumps(
            {
                "pairs": args.pairs,
                "users": args.users,
                "runs": args.runs,
                "analytics_ms": figures,
                "slowest_all_p50_ms": max(f["all_p50"] for f in figures.values()),
                "slowest_user_p50_ms": max(f["user_p50"] for f in figures.values()),
                "sql_query_ms_p50": round(statistics.median(per_user), 2),
                "sql_query_ms_max": round(max(per_user), 2),
                "load_rows_per_s": round(written / load_s),
            }
        )
    )


if __name__ == "__main__":
    main()
