"""Analysts' queries against the store, as JSON-ready results: the catalogue's analytics and free SQL.

Both run through :meth:`ClickHouseStore.query_read_only` (ClickHouse's ``readonly=1``). The shapes
returned here are the HTTP API's bodies (``console/analytics_api.py``) and what ``samtuner analytics
--json`` / ``samtuner sql --json`` print, whether the CLI opened the store or went through the API:

* SQL: ``{"columns": [{"name", "type"}], "rows": [[...]], "row_count", "truncated"}``
* an analytic: ``{"name", "description", "parameters": {...}, "columns": [...], "rows": [{column: value}],
  "row_count", "truncated"}``
"""

from __future__ import annotations

import ipaddress
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from infra.clickhouse import ClickHouseStore, ReadOnlyResult
from infra.errors import QueryRefused
from schemas.analytics import analytic, bind

DEFAULT_MAX_ROWS = 10_000


def jsonable(value: Any) -> Any:
    """A ClickHouse value as JSON: times as ISO text, ids as text, NaN and infinities as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def cell(value: Any, clickhouse_type: str) -> Any:
    """One value of a column as JSON. clickhouse-connect returns a column in UTC as naive datetimes
    (UTC wall time); they are marked UTC, so the JSON says which time it is."""
    if isinstance(value, datetime) and value.tzinfo is None and "'UTC'" in clickhouse_type:
        value = value.replace(tzinfo=UTC)
    return jsonable(value)


def refusal(exc: QueryRefused) -> str:
    """What a person is told when a query writes (the CLI and the API say the same)."""
    return (
        "refused: analysts' queries are read-only (ClickHouse runs them with readonly=1); "
        f"ClickHouse said: {exc.clickhouse_message}"
    )


def _columns(result: ReadOnlyResult) -> list[dict[str, str]]:
    return [{"name": n, "type": t} for n, t in zip(result.columns, result.types, strict=True)]


def run_sql(store: ClickHouseStore, sql: str, max_rows: int = DEFAULT_MAX_ROWS) -> dict[str, Any]:
    """A read-only query; raises QueryRefused (it writes) or QueryFailed (ClickHouse's message)."""
    result = store.query_read_only(sql, max_rows=max_rows)
    return {
        "columns": _columns(result),
        "rows": [[cell(v, t) for v, t in zip(row, result.types, strict=True)] for row in result.rows],
        "row_count": len(result.rows),
        "truncated": result.truncated,
    }


def run_analytic(
    store: ClickHouseStore,
    name: str,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
    now: datetime | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> dict[str, Any]:
    """One analytic of the catalogue; raises UnknownAnalytic / AnalyticsError on bad input."""
    item = analytic(name)
    query = bind(item, store.database, now or datetime.now(UTC), user=user, since=since, until=until)
    result = store.query_read_only(query.sql, query.parameters, max_rows=max_rows)
    return {
        "name": item.name,
        "description": item.description,
        "parameters": {k: jsonable(v) for k, v in query.parameters.items()},
        "columns": _columns(result),
        "rows": [
            {c: cell(v, t) for c, t, v in zip(result.columns, result.types, row, strict=True)} for row in result.rows
        ],
        "row_count": len(result.rows),
        "truncated": result.truncated,
    }
