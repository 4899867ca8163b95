"""Training: users toward their threshold, start and cancel, jobs with their curves and the gate,
and the live feed of job events (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from console.commands import request_training
from console.deps import ConsoleDeps
from console.errors import BadRequest, Unavailable
from infra.errors import ArtifactError
from schemas.commands import CancelTraining

log = logging.getLogger("samtuner.console")
HEARTBEAT_S = 15.0


class TrainingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=256)
    overrides: dict[str, Any] = Field(default_factory=dict, description="training.dpo values for this job only.")


def training_router(deps: ConsoleDeps) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["training"], dependencies=[Depends(deps.reader)])

    @r.get("/users", summary="Per user: pairs and new pairs toward the threshold (n / trigger.min_new_pairs)")
    def users() -> dict[str, Any]:
        return {
            "threshold": deps.cfg.trigger.min_new_pairs,
            "rows": deps.need_queries().users(deps.cfg.trigger.min_new_pairs),
        }

    @r.get("/jobs", summary="Training jobs, newest first")
    def jobs(user: str | None = None) -> dict[str, Any]:
        return {"rows": deps.need_queries().jobs(user or None)}

    @r.get("/jobs/{request_id}", summary="One job: its state, the gate's decision with reasons, control answers")
    def job(request_id: str) -> dict[str, Any]:
        queries = deps.need_queries()
        row = queries.job(_uuid(request_id))
        return {**row, "gate": _gate(deps, queries, row)}

    @r.get("/jobs/{request_id}/progress", summary="Every progress point of a job (its curves)")
    def progress(request_id: str) -> dict[str, Any]:
        return {"request_id": request_id, "points": deps.need_queries().progress(_uuid(request_id))}

    @r.post(
        "/training",
        status_code=202,
        dependencies=[Depends(deps.admin)],
        summary="RequestTraining for a user, with training.dpo overrides checked like the config",
    )
    def start(body: TrainingRequest) -> dict[str, Any]:
        command = request_training(deps.cfg, body.user, body.overrides)
        deps.send([command])
        return {
            "status": "accepted",
            "command_id": str(command.command_id),
            "user": body.user,
            "overrides": command.dpo_overrides,
        }

    @r.post("/jobs/{request_id}/cancel", status_code=202, dependencies=[Depends(deps.admin)], summary="CancelTraining")
    def cancel(request_id: str) -> dict[str, Any]:
        row = deps.need_queries().job(_uuid(request_id))
        command = CancelTraining(user_id=row["user_id"], request_id=uuid.UUID(request_id), issued_by="console")
        deps.send([command])
        return {"status": "accepted", "command_id": str(command.command_id)}

    @r.get("/live/training", summary="Server-sent events: every job event as it reaches the training topic")
    async def live(request: Request, request_id: str | None = None) -> StreamingResponse:
        if deps.feed is None:
            raise Unavailable("this process runs no live training feed")
        feed = deps.feed
        token, queue = feed.subscribe(request_id or None)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield b": heartbeat\n\n"
                        continue
                    yield f"event: {item['type']}\ndata: {json.dumps(item)}\n\n".encode()
            finally:
                feed.unsubscribe(token)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    return r


def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise BadRequest(f"{text!r} is not a request id (a UUID)", field="request_id") from exc


def _gate(deps: ConsoleDeps, queries: Any, job: dict[str, Any]) -> dict[str, Any]:
    """The gate's decision: reasons and metrics from the job; for a published adapter, its manifest's
    gate reasons and control answers too."""
    metrics = job.get("metrics", {})
    gate: dict[str, Any] = {
        "status": job["status"],
        "published": job["status"] == "succeeded",
        "reason": job.get("cause", ""),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("baseline/")},
        "baseline_metrics": {k.removeprefix("baseline/"): v for k, v in metrics.items() if k.startswith("baseline/")},
        "control": [],
    }
    version = job.get("adapter_version")
    if version is None or deps.artifacts is None:
        return gate
    adapters = [a for a in queries.adapters(job["user_id"]) if int(a["version"]) == int(version)]
    if not adapters:
        return gate
    adapter = adapters[0]
    gate["metrics"] = adapter["metrics"] or gate["metrics"]
    gate["baseline_metrics"] = adapter["baseline_metrics"]
    from trainer.manifest import read_manifest

    try:
        manifest = read_manifest(deps.artifacts, adapter["uri"], verify=False)
    except (ArtifactError, OSError) as exc:  # a missing or unreadable manifest is shown, not fatal
        gate["manifest_error"] = str(exc)
        return gate
    gate["reasons"] = manifest.get("gate", {}).get("reasons", [])
    gate["control"] = manifest.get("control", [])
    gate["baseline"] = manifest.get("baseline", {}).get("name")
    return gate
