"""The console on a FastAPI app: its page and assets (served from this package, nothing from a
CDN), the JSON API under ``/api/v1``, and local API docs at ``/docs``.

``mount_console(app, deps)`` adds it to an existing app (the node's, in ``samtuner run``);
``console_app(deps)`` makes an app of its own (``samtuner streams``). More routers over the same
store join in ``store_routers``: one line each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from console.deps import ConsoleDeps
from console.errors import ConsoleError, NotFound
from console.models_api import models_router
from console.pairs_api import pairs_router
from console.queries import Store
from console.training_api import training_router

STATIC = Path(__file__).parent / "static"
ASSETS = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
MEDIA = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def store_routers(store: Store, deps: ConsoleDeps) -> list[APIRouter]:
    """Routers of other packages over the store this process owns (the analytics API), read access as the pages."""
    from console.analytics_api import analytics_router
    from infra.clickhouse import ClickHouseStore

    if not isinstance(store, ClickHouseStore):
        return []
    return [analytics_router(store, dependencies=[Depends(deps.reader)])]


def console_router(deps: ConsoleDeps) -> APIRouter:
    r = APIRouter()

    @r.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @r.get("/console/", include_in_schema=False)
    def page() -> FileResponse:  # the page holds no data: a remote reader loads it, then gives the token
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @r.get("/console/static/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        path = ASSETS.get(name)  # only files shipped in the package: a name never becomes a path
        if path is None:
            raise NotFound(f"no asset {name!r}")
        return FileResponse(
            path, media_type=MEDIA.get(path.suffix, "application/octet-stream"), headers={"Cache-Control": "no-cache"}
        )

    @r.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @r.get("/api/v1/whoami", tags=["access"], summary="What this process serves, and whether the token is valid")
    def whoami(request: Request) -> dict[str, Any]:
        admin = True
        try:
            deps.authorizer.require_admin(request)
        except (ConsoleError, HTTPException):  # the token's refusal, or the API keys'
            admin = False
        return {
            "admin": admin,
            "admin_configured": deps.authorizer.configured,
            "store": deps.queries is not None,
            "node": deps.nodes is not None,
            "live": deps.feed is not None,
            "commands": deps.send_command is not None,
            "threshold": deps.cfg.trigger.min_new_pairs,
        }

    r.include_router(pairs_router(deps))
    r.include_router(training_router(deps))
    r.include_router(models_router(deps))
    return r


async def _console_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConsoleError)
    body: dict[str, Any] = {"detail": str(exc), "error": type(exc).__name__}
    if exc.field:
        body["field"] = exc.field
    if exc.fields:
        body["fields"] = exc.fields
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def mount_console(app: FastAPI, deps: ConsoleDeps) -> FastAPI:
    app.include_router(console_router(deps))
    if deps.queries is not None:
        for router in store_routers(deps.queries.store, deps):
            app.include_router(router)
    app.add_exception_handler(ConsoleError, _console_error)
    return app


def console_app(deps: ConsoleDeps) -> FastAPI:
    return mount_console(FastAPI(title="sam-tuner console", version="1", docs_url=None, redoc_url=None), deps)
