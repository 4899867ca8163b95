"""The analytics catalogue: what analysts can ask, as one declared table.

Each :class:`Analytic` names a query over one of the views in :mod:`schemas.ddl` (0861-0867, plus
``rejections_by_reason``), says what it answers and which parameters it takes. ``samtuner
analytics``, ``GET /api/v1/analytics`` and the README's cookbook all read this table.

Parameters are optional and the same for every analytic:

* ``user``: one user's rows only;
* ``since`` / ``until``: the period ``[since, until)``, each an ISO date or time (UTC unless it says
  otherwise) or an age such as ``90m``, ``12h``, ``7d``, ``2w`` (that long before now). A daily
  analytic keeps every day that overlaps the period.

:func:`bind` turns an analytic and its parameters into SQL with ClickHouse query parameters
(``{user:String}``): values never become SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from schemas.errors import AnalyticsError, UnknownAnalytic


@dataclass(frozen=True)
class Parameter:
    name: str
    description: str


USER = Parameter("user", "Only this user's rows (default: every user).")
SINCE = Parameter(
    "since",
    "Start of the period (inclusive): an ISO date or time (UTC unless it says otherwise), "
    "or an age such as 90m, 12h, 7d, 2w. Default: the beginning.",
)
UNTIL = Parameter("until", "End of the period (exclusive), in the same forms as since. Default: no end.")
PARAMETERS = (USER, SINCE, UNTIL)


@dataclass(frozen=True)
class Analytic:
    name: str
    description: str
    view: str  # the view (schemas/ddl.py) the query reads
    # '{db}' is the database, '{where}' the filter clause that bind() writes (or nothing). Where an
    # output is named like the view's column it sums, other expressions name the column as v.<name>.
    sql: str
    time_column: str = "day"
    time_kind: Literal["day", "timestamp"] = "day"
    parameters: tuple[Parameter, ...] = PARAMETERS


CATALOGUE: tuple[Analytic, ...] = (
    Analytic(
        "pairs_per_day",
        "Accepted preference pairs per user per day (by the feedback's time): all, still active, "
        "near-identical, and their mean quality score.",
        "pairs_daily",
        "SELECT day, user_id, pairs, active_pairs, near_identical, round(mean_quality, 4) AS mean_quality "
        "FROM {db}.pairs_daily {where} ORDER BY day, user_id",
    ),
    Analytic(
        "acceptance_rate",
        "Decided feedback per user per day: pairs and labelled examples accepted, feedback rejected, and the "
        "share accepted.",
        "feedback_outcomes_daily",
        "SELECT day, user_id, accepted_pairs, accepted_examples, rejected, "
        "round((accepted_pairs + accepted_examples) / (accepted_pairs + accepted_examples + rejected), 4) "
        "AS acceptance_rate FROM {db}.feedback_outcomes_daily {where} ORDER BY day, user_id",
    ),
    Analytic(
        "reject_reasons",
        "Rejections per day and reason code (a rejection with two reasons counts under both).",
        "rejections_by_reason",
        "SELECT day, reason, sum(rejections) AS rejections FROM {db}.rejections_by_reason {where} "
        "GROUP BY day, reason ORDER BY day, rejections DESC, reason",
    ),
    Analytic(
        "quality_histogram",
        "Quality scores in tenths: accepted pairs and scored rejections per bucket [from, to).",
        "quality_daily",
        "SELECT bucket / 10 AS quality_from, (bucket + 1) / 10 AS quality_to, sum(accepted) AS accepted, "
        "sum(rejected) AS rejected FROM {db}.quality_daily {where} GROUP BY bucket ORDER BY bucket",
    ),
    Analytic(
        "near_identical",
        "Per user: accepted pairs, how many are near-identical corrections (flagged, kept), and their share.",
        "pairs_daily",
        "SELECT user_id, sum(pairs) AS pairs, sum(near_identical) AS near_identical, "
        "round(sum(v.near_identical) / sum(v.pairs), 4) AS near_identical_share FROM {db}.pairs_daily AS v {where} "
        "GROUP BY user_id ORDER BY user_id",
    ),
    Analytic(
        "job_outcomes",
        "Training jobs per day (of their first start) and status, with the time from the first attempt's "
        "start to the outcome (retries included, queueing not): median and longest.",
        "training_job_outcomes",
        "SELECT day, status, count() AS jobs, round(quantileExactOrNull(0.5)(duration_s), 1) AS duration_s_p50, "
        "round(maxOrNull(duration_s), 1) AS duration_s_max FROM {db}.training_job_outcomes {where} "
        "GROUP BY day, status ORDER BY day, status",
    ),
    Analytic(
        "adapters_per_day",
        "Adapters published per day, the users they are for, and how many were revoked since (erasure).",
        "adapters_daily",
        "SELECT day, sum(published) AS adapters, uniqExact(user_id) AS users, sum(revoked) AS revoked "
        "FROM {db}.adapters_daily {where} GROUP BY day ORDER BY day",
    ),
    Analytic(
        "correction_rate",
        "Answers per user, A/B arm and adapter version (none = the base model), how many of them their user "
        "corrected (feedback naming the answer), thumbs up/down, and the correction rate.",
        "answer_outcomes_daily",
        "SELECT user_id, arm, adapter_version, sum(answers) AS answers, sum(corrected) AS corrected, "
        "sum(thumbs_down) AS thumbs_down, sum(thumbs_up) AS thumbs_up, "
        "round(sum(v.corrected) / sum(v.answers), 4) AS correction_rate FROM {db}.answer_outcomes_daily AS v {where} "
        "GROUP BY user_id, arm, adapter_version ORDER BY user_id, arm, adapter_version",
    ),
    Analytic(
        "ingestion_lag",
        "Ingestion lag of accepted pairs, projected_at - created_at (feedback created to pair visible in "
        "ClickHouse), in milliseconds: median, p99 and max.",
        "pair_ingestion_lag",
        "SELECT count() AS pairs, quantileExactOrNull(0.5)(lag_ms) AS lag_ms_p50, "
        "quantileExactOrNull(0.99)(lag_ms) AS lag_ms_p99, maxOrNull(lag_ms) AS lag_ms_max "
        "FROM {db}.pair_ingestion_lag {where}",
        time_column="created_at",
        time_kind="timestamp",
    ),
)
BY_NAME = {a.name: a for a in CATALOGUE}


def analytic(name: str) -> Analytic:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownAnalytic(f"unknown analytic {name!r}; known: {', '.join(BY_NAME)}") from None


@dataclass(frozen=True)
class BoundQuery:
    sql: str
    parameters: dict[str, Any]


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(name: str, text: str, now: datetime) -> datetime:
    """An ISO date or time (naive = UTC), or an age before ``now``: ``90m``, ``12h``, ``7d``, ``2w``."""
    age = _AGE.match(text)
    if age:
        return now - timedelta(**{_AGE_UNITS[age.group(2)]: float(age.group(1))})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = date.fromisoformat(text.strip())
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AnalyticsError(
            f"{name}={text!r} is not a time: give an ISO date or time (2026-11-24, 2026-11-24T12:00, "
            f"2026-11-24T12:00+01:00) or an age (90m, 12h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def bind(
    item: Analytic,
    database: str,
    now: datetime,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> BoundQuery:
    """The analytic's SQL for ``database`` with the given filters, values as query parameters."""
    given = {"user": user, "since": since, "until": until}
    accepted = {p.name for p in item.parameters}
    extra = [k for k, v in given.items() if v is not None and k not in accepted]
    if extra:
        raise AnalyticsError(f"{item.name} takes no {', '.join(extra)} (its parameters: {', '.join(sorted(accepted))})")
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if user is not None:
        if not user:
            raise AnalyticsError("user must not be empty")
        conditions.append("user_id = {user:String}")
        params["user"] = user
    start = parse_time("since", since, now) if since is not None else None
    end = parse_time("until", until, now) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise AnalyticsError(f"the period is empty: since {start.isoformat()} is not before until {end.isoformat()}")
    column = item.time_column
    if start is not None:
        params["since"] = start
        conditions.append(
            f"{column} >= toDate({{since:DateTime64(3, 'UTC')}})"
            if item.time_kind == "day"
            else f"{column} >= {{since:DateTime64(3, 'UTC')}}"
        )
    if end is not None:
        params["until"] = end
        # A day overlaps [since, until) when it starts before until.
        conditions.append(
            f"toDateTime64({column}, 3, 'UTC') < {{until:DateTime64(3, 'UTC')}}"
            if item.time_kind == "day"
            else f"{column} < {{until:DateTime64(3, 'UTC')}}"
        )
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return BoundQuery(item.sql.format(db=database, where=where), params)


def describe() -> list[dict[str, Any]]:
    """The catalogue as JSON: what ``GET /api/v1/analytics`` returns and ``samtuner analytics --list`` prints."""
    return [
        {
            "name": a.name,
            "description": a.description,
            "view": a.view,
            "parameters": [{"name": p.name, "description": p.description} for p in a.parameters],
        }
        for a in CATALOGUE
    ]
