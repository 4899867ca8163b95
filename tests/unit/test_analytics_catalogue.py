"""The analytics catalogue is one declared table: every analytic reads a view a migration creates, and
its parameters become ClickHouse query parameters, never SQL text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from infra.analytics import jsonable
from schemas.analytics import BY_NAME, CATALOGUE, analytic, bind, describe, parse_time
from schemas.ddl import MIGRATIONS
from schemas.errors import AnalyticsError, UnknownAnalytic

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VIEWS = {m.group(1) for mig in MIGRATIONS for m in re.finditer(r"CREATE VIEW IF NOT EXISTS \{db\}\.(\w+)", mig.sql)}


def test_every_analytic_reads_a_view_that_a_migration_creates() -> None:
    assert len(BY_NAME) == len(CATALOGUE)
    for item in CATALOGUE:
        assert item.view in VIEWS, item.name
        assert re.search(rf"\{{db\}}\.{item.view} (AS v )?\{{where\}}", item.sql), item.name
        assert item.description and item.parameters


def test_the_issue_s_analytics_are_all_there() -> None:
    assert set(BY_NAME) == {
        "pairs_per_day",
        "acceptance_rate",
        "reject_reasons",
        "quality_histogram",
        "near_identical",
        "job_outcomes",
        "adapters_per_day",
        "correction_rate",
        "ingestion_lag",
    }


def test_the_analytic_views_come_after_the_existing_migrations_and_are_additive() -> None:
    ids = [m.id for m in MIGRATIONS]
    assert len(ids) == len(set(ids))
    ours = [m for m in MIGRATIONS if m.id.startswith("086")]
    assert ids[-len(ours) :] == [m.id for m in ours]
    assert all(m.sql.lstrip().startswith(("CREATE VIEW IF NOT EXISTS", "CREATE TABLE IF NOT EXISTS")) for m in ours)


def test_without_parameters_there_is_no_filter() -> None:
    query = bind(analytic("pairs_per_day"), "sam", NOW)
    assert "WHERE" not in query.sql and query.parameters == {}
    assert "FROM sam.pairs_daily" in query.sql


def test_a_user_is_a_query_parameter_and_never_sql_text() -> None:
    hostile = "x' OR 1=1 --"
    query = bind(analytic("correction_rate"), "sam", NOW, user=hostile)
    assert hostile not in query.sql
    assert "WHERE user_id = {user:String}" in query.sql
    assert query.parameters == {"user": hostile}


def test_an_age_counts_back_from_now() -> None:
    query = bind(analytic("ingestion_lag"), "sam", NOW, since="7d", until="90m")
    assert query.parameters == {"since": NOW - timedelta(days=7), "until": NOW - timedelta(minutes=90)}
    assert "created_at >= {since:DateTime64(3, 'UTC')}" in query.sql
    assert "created_at < {until:DateTime64(3, 'UTC')}" in query.sql


def test_a_daily_analytic_keeps_every_day_that_overlaps_the_period() -> None:
    query = bind(analytic("pairs_per_day"), "sam", NOW, since="2026-11-24T12:00", until="2026-11-25")
    assert "day >= toDate({since:DateTime64(3, 'UTC')})" in query.sql
    assert "toDateTime64(day, 3, 'UTC') < {until:DateTime64(3, 'UTC')}" in query.sql


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24", datetime(2026, 11, 24, tzinfo=UTC)),
        ("2026-11-24T12:30", datetime(2026, 11, 24, 12, 30, tzinfo=UTC)),
        ("2026-11-24T12:30:00+01:00", datetime(2026, 11, 24, 11, 30, tzinfo=UTC)),
        ("2026-11-24T12:30:00Z", datetime(2026, 11, 24, 12, 30, tzinfo=UTC)),
        ("12h", NOW - timedelta(hours=12)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5d", NOW - timedelta(hours=36)),
    ],
)
def test_times_are_iso_dates_and_times_in_utc_or_ages(text: str, expected: datetime) -> None:
    assert parse_time("since", text, NOW) == expected


def test_a_time_that_does_not_parse_names_the_parameter_and_the_accepted_forms() -> None:
    with pytest.raises(AnalyticsError, match=r"until='yesterday' is not a time: .*7d"):
        bind(analytic("pairs_per_day"), "sam", NOW, until="yesterday")


def test_an_empty_period_is_an_error() -> None:
    with pytest.raises(AnalyticsError, match="the period is empty"):
        bind(analytic("pairs_per_day"), "sam", NOW, since="2026-11-25", until="2026-11-24")


def test_an_unknown_analytic_lists_the_known_ones() -> None:
    with pytest.raises(UnknownAnalytic, match="unknown analytic 'pairs'; known: pairs_per_day, acceptance_rate"):
        analytic("pairs")


def test_the_catalogue_as_json_names_the_parameters() -> None:
    items = describe()
    assert [i["name"] for i in items] == [a.name for a in CATALOGUE]
    assert [p["name"] for p in items[0]["parameters"]] == ["user", "since", "until"]


def test_clickhouse_values_become_json() -> None:
    import uuid
    from datetime import date
    from decimal import Decimal

    assert jsonable([float("nan"), float("inf"), 1.5, Decimal("2.50"), None, True]) == [
        None,
        None,
        1.5,
        2.5,
        None,
        True,
    ]
    assert jsonable(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert jsonable({"k": (date(2026, 11, 24), b"\xff")}) == {"k": ["2026-11-24", "\ufffd"]}
    assert jsonable(datetime(2026, 11, 24, 12, 0, tzinfo=UTC)) == "2026-11-24T12:00:00+00:00"
