"""Where ``samtuner analytics`` and ``samtuner sql`` get their answers, and how they print them.

With a ClickHouse server DSN, or an embedded store no one holds, the CLI opens the store itself.
While another process holds the embedded store (``samtuner run``), it asks that process's HTTP API
(``inference.host:port``, ``/api/v1/...``) instead. Both sources return the same JSON bodies
(:mod:`infra.analytics`) and raise the same errors, so what is printed does not depend on the path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httpx

from infra.analytics import run_analytic, run_sql
from infra.clickhouse import ClickHouseStore
from infra.errors import QueryFailed, QueryRefused, StoreError, StoreLocked
from schemas.analytics import describe
from schemas.config import Config
from schemas.errors import AnalyticsError, UnknownAnalytic


class AnalyticsSource(Protocol):
    where: str  # for messages: what answered

    def catalogue(self) -> list[dict[str, Any]]: ...

    def analytic(
        self, name: str, user: str | None, since: str | None, until: str | None, max_rows: int
    ) -> dict[str, Any]: ...

    def sql(self, sql: str, max_rows: int) -> dict[str, Any]: ...

    def close(self) -> None: ...


class StoreSource:
    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.where = f"ClickHouse at {store.dsn}"

    def catalogue(self) -> list[dict[str, Any]]:
        return describe()

    def analytic(
        self, name: str, user: str | None, since: str | None, until: str | None, max_rows: int
    ) -> dict[str, Any]:
        return run_analytic(self.store, name, user=user, since=since, until=until, max_rows=max_rows)

    def sql(self, sql: str, max_rows: int) -> dict[str, Any]:
        return run_sql(self.store, sql, max_rows=max_rows)

    def close(self) -> None:
        self.store.close()


class ApiSource:
    """The analytics API of the process that holds the store; its errors become the store's errors."""

    def __init__(
        self,
        base_url: str,
        why: str = "",
        http: httpx.Client | None = None,
        timeout_s: float = 60.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.why = why
        self.where = f"the API at {self.base_url}"
        # Tests pass an httpx.Client bound to an app (Starlette's TestClient is one).
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def catalogue(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self._call("GET", "/api/v1/analytics")["analytics"]
        return body

    def analytic(
        self, name: str, user: str | None, since: str | None, until: str | None, max_rows: int
    ) -> dict[str, Any]:
        params = {k: v for k, v in {"user": user, "since": since, "until": until}.items() if v is not None}
        return self._call("GET", f"/api/v1/analytics/{name}", params={**params, "max_rows": max_rows})

    def sql(self, sql: str, max_rows: int) -> dict[str, Any]:
        return self._call("POST", "/api/v1/sql", json={"sql": sql, "max_rows": max_rows})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            held = f" ({self.why})" if self.why else ""
            raise StoreError(
                f"the store is held by another process{held}, and its API at {self.base_url} "
                f"does not answer ({exc}); is `samtuner run` running with this config?"
            ) from exc
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        detail = _detail(response)
        error, message = detail.get("error"), str(detail.get("message", response.text))
        clickhouse = str(detail.get("clickhouse_message", message))
        if error == "readonly":
            raise QueryRefused(clickhouse)
        if error == "query":
            raise QueryFailed(clickhouse)
        if error == "unknown_analytic":
            raise UnknownAnalytic(message)
        if error == "parameter" or response.status_code == 422:
            raise AnalyticsError(message)
        if response.status_code in (401, 403):
            raise StoreError(
                f"{self.base_url} refused the query ({response.status_code}: {message}); pass a key "
                "with the 'read' scope (--api-key or SAMTUNER_API_KEY)"
            )
        if response.status_code == 404:
            raise StoreError(
                f"{self.base_url} has no analytics API ({path} answered 404): it does not own the "
                "store (run `samtuner run`, which does)"
            )
        raise StoreError(f"{self.base_url}{path} answered {response.status_code}: {message}")


def _detail(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return detail
    return {"message": str(detail)} if detail is not None else {}


def api_url(cfg: Config) -> str:
    host = cfg.inference.host
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine answers on loopback
        host = "127.0.0.1"
    return f"http://{host}:{cfg.inference.port}"


def open_source(
    cfg: Config,
    open_store: Callable[[str, str], ClickHouseStore] = ClickHouseStore,
    open_api: Callable[[str, str], AnalyticsSource] = ApiSource,
) -> AnalyticsSource:
    """The store itself when it can be opened; the holder's API when another process holds it."""
    try:
        return StoreSource(open_store(cfg.clickhouse_dsn, cfg.clickhouse.database))
    except StoreLocked:
        return open_api(api_url(cfg), f"the embedded store {cfg.clickhouse_dsn} is open in another process")


# -- printing -----------------------------------------------------------------------------------


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def render_table(title: str | None, columns: list[str], rows: list[list[Any]], truncated: bool) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    count = f"{len(rows)} row{'s' if len(rows) != 1 else ''}" + (" (truncated: more rows exist)" if truncated else "")
    table.caption = count
    table.caption_justify = "left"
    return table


def sql_table(result: dict[str, Any]) -> Any:
    return render_table(None, [c["name"] for c in result["columns"]], result["rows"], result["truncated"])


def analytic_table(result: dict[str, Any]) -> Any:
    names = [c["name"] for c in result["columns"]]
    rows = [[row[n] for n in names] for row in result["rows"]]
    title = f"{result['name']}: {result['description']}"
    return render_table(title, names, rows, result["truncated"])


def catalogue_table(items: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="analytics (samtuner analytics NAME [--user U] [--since T] [--until T])", title_justify="left")
    for name in ("name", "description", "view"):
        table.add_column(name, overflow="fold")
    for item in items:
        table.add_row(item["name"], item["description"], item.get("view", ""))
    return table
