"""The analytics JSON API: the catalogue, one analytic, and read-only SQL.

* ``GET /api/v1/analytics``: the catalogue (name, description, view, parameters).
* ``GET /api/v1/analytics/{name}?user=&since=&until=``: an analytic's rows as JSON objects; 404 for
  an unknown name, 400 for a parameter that does not parse.
* ``POST /api/v1/sql`` ``{"sql": "SELECT ...", "max_rows": 10000}``: columns and rows. ClickHouse
  runs it with ``readonly=1``: a query that writes gets 400 ``{"error": "readonly", "message": ...}``,
  a query ClickHouse rejects gets 400 ``{"error": "query", "message": <ClickHouse's text>}``
  (both also carry ``clickhouse_message``).

Handlers are plain functions, so FastAPI runs them in its thread pool: the store's client is
synchronous and never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from infra.analytics import DEFAULT_MAX_ROWS, refusal, run_analytic, run_sql
from infra.clickhouse import MAX_RESULT_ROWS, ClickHouseStore
from infra.errors import QueryFailed, QueryRefused, StoreError
from schemas.analytics import describe
from schemas.errors import AnalyticsError, UnknownAnalytic


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=100_000, description="One read-only ClickHouse query.")
    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, le=MAX_RESULT_ROWS, description="Rows returned at most.")


def _query_error(exc: QueryFailed) -> HTTPException:
    if isinstance(exc, QueryRefused):
        return HTTPException(
            400, {"error": "readonly", "message": refusal(exc), "clickhouse_message": exc.clickhouse_message}
        )
    return HTTPException(
        400, {"error": "query", "message": exc.clickhouse_message, "clickhouse_message": exc.clickhouse_message}
    )


def _store_error(exc: StoreError) -> HTTPException:
    return HTTPException(503, {"error": "store", "message": str(exc)})


def analytics_router(store: ClickHouseStore, dependencies: Sequence[Any] = ()) -> APIRouter:
    """``dependencies`` guard every route (the console passes its read access check)."""
    router = APIRouter(prefix="/api/v1", tags=["analytics"], dependencies=list(dependencies))

    @router.get("/analytics")
    def catalogue() -> dict[str, Any]:
        return {"analytics": describe()}

    @router.get("/analytics/{name}")
    def one(
        name: str,
        user: str | None = Query(None, description="Only this user's rows."),
        since: str | None = Query(None, description="ISO date/time (UTC) or an age: 90m, 12h, 7d, 2w."),
        until: str | None = Query(None, description="End of the period (exclusive), same forms."),
        max_rows: int = Query(DEFAULT_MAX_ROWS, ge=1, le=MAX_RESULT_ROWS),
    ) -> dict[str, Any]:
        try:
            return run_analytic(store, name, user=user, since=since, until=until, max_rows=max_rows)
        except UnknownAnalytic as exc:
            raise HTTPException(404, {"error": "unknown_analytic", "message": str(exc)}) from exc
        except AnalyticsError as exc:
            raise HTTPException(400, {"error": "parameter", "message": str(exc)}) from exc
        except QueryFailed as exc:
            raise _query_error(exc) from exc
        except StoreError as exc:
            raise _store_error(exc) from exc

    @router.post("/sql")
    def sql(body: SqlRequest) -> dict[str, Any]:
        try:
            return run_sql(store, body.sql, max_rows=body.max_rows)
        except QueryFailed as exc:
            raise _query_error(exc) from exc
        except StoreError as exc:
            raise _store_error(exc) from exc

    return router
