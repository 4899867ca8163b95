"""Models: users' adapter versions with lineage, activation and A/B share, compare answers,
correction rate per arm and version, which node holds which adapter; and the trace view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from console.deps import ConsoleDeps
from console.errors import BadRequest, NotFound
from schemas.commands import ActivateAdapter, DeactivateAdapter


class ActivateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, description="The latest or the previous version; None = the latest.")
    new_share: float | None = Field(None, ge=0.0, le=1.0, description="A/B share of requests to the latest version.")


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1, max_length=4000)


class AnswerBody(CompareBody):
    version: int | None = Field(None, ge=1, description="None = the base model.")


def models_router(deps: ConsoleDeps) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["models"], dependencies=[Depends(deps.reader)])
    _add_adapter_routes(r, deps)
    _add_command_routes(r, deps)
    _add_compare_routes(r, deps)
    _add_node_and_trace_routes(r, deps)
    return r


def _add_adapter_routes(r: APIRouter, deps: ConsoleDeps) -> None:
    """The users with adapters, and one user's versions, registry state and correction rates."""

    @r.get("/models", summary="Users with adapters: latest version, how many versions")
    def models() -> dict[str, Any]:
        return {"rows": deps.need_queries().adapter_users()}

    @r.get(
        "/models/{user:path}/detail",
        summary="A user's adapter versions (metrics, lineage), registry state, correction rate per arm and version",
    )
    def detail(user: str) -> dict[str, Any]:
        queries = deps.need_queries()
        versions = queries.adapters(user)
        if not versions:
            raise NotFound(f"user {user!r} has no adapter")
        return {
            "user": user,
            "versions": versions,
            "state": deps.nodes.user_state(user) if deps.nodes else None,
            "correction_rates": queries.correction_rates(user),
        }


def _add_command_routes(r: APIRouter, deps: ConsoleDeps) -> None:
    """Activate, roll back and deactivate a user's adapter (admin; 202 Accepted)."""

    @r.post(
        "/models/{user:path}/activate",
        status_code=202,
        dependencies=[Depends(deps.admin)],
        summary="ActivateAdapter (a version, and/or the A/B share)",
    )
    def activate(user: str, body: ActivateBody | None = None) -> dict[str, Any]:
        return _activate(deps, user, body or ActivateBody())

    @r.post(
        "/models/{user:path}/rollback",
        status_code=202,
        dependencies=[Depends(deps.admin)],
        summary="Serve the previous version to every request (ActivateAdapter of the previous version)",
    )
    def rollback(user: str) -> dict[str, Any]:
        live = [a for a in deps.need_queries().adapters(user) if not a["revoked"]]
        if len(live) < 2:
            raise BadRequest(f"user {user!r} has no previous version to roll back to", field="version")
        return _activate(deps, user, ActivateBody(version=int(live[1]["version"])))

    @r.post(
        "/models/{user:path}/deactivate",
        status_code=202,
        dependencies=[Depends(deps.admin)],
        summary="DeactivateAdapter: the base model answers, and says so",
    )
    def deactivate(user: str) -> dict[str, Any]:
        command = DeactivateAdapter(user_id=user, issued_by="console")
        deps.send([command])
        return {"status": "accepted", "command_id": str(command.command_id), "command": "DeactivateAdapter"}


def _activate(deps: ConsoleDeps, user: str, body: ActivateBody) -> dict[str, Any]:
    """Sends the ActivateAdapter command; the answer names it."""
    command = ActivateAdapter(user_id=user, version=body.version, new_share=body.new_share, issued_by="console")
    deps.send([command])
    return {"status": "accepted", "command_id": str(command.command_id), "command": "ActivateAdapter"}


def _add_compare_routes(r: APIRouter, deps: ConsoleDeps) -> None:
    """Answers to one prompt from the base model and the user's versions."""

    @r.post("/compare", summary="One prompt answered by the base model, the previous and the current version")
    def compare(body: CompareBody) -> dict[str, Any]:
        nodes = deps.need_nodes()
        versions = [a for a in deps.need_queries().adapters(body.user) if not a["revoked"]] if deps.queries else []
        current = int(versions[0]["version"]) if versions else None
        previous = int(versions[1]["version"]) if len(versions) > 1 else None
        out: dict[str, Any] = {"user": body.user, "prompt": body.prompt}
        for name, version in (("base", None), ("previous", previous), ("current", current)):
            if name != "base" and version is None:
                out[name] = None
                continue
            try:
                out[name] = {**nodes.answer(body.prompt, body.user, version), "version": version}
            except BadRequest as exc:
                out[name] = {"error": str(exc), "version": version}
        return out

    @r.post("/compare/answer", summary="One answer from exactly this version (None = base); no A/B, not logged")
    def answer(body: AnswerBody) -> dict[str, Any]:
        return deps.need_nodes().answer(body.prompt, body.user, body.version)


def _add_node_and_trace_routes(r: APIRouter, deps: ConsoleDeps) -> None:
    """Which node holds which adapter, and the trace of a feedback, an answer or a pair."""

    @r.get("/nodes", summary="Which inference nodes hold which adapters")
    def nodes() -> dict[str, Any]:
        return {"nodes": deps.need_nodes().holdings()}

    @r.get(
        "/trace/{ident}",
        summary="The chain from a feedback, an answer or a pair: pair or rejection, "
        "threshold, job, adapter, answers served with it",
    )
    def trace(ident: str, user: str | None = None) -> dict[str, Any]:
        return deps.need_queries().trace(ident, user or None)
