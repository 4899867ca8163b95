"""Preference data: the filtered, paged pairs table, its export, bulk actions, rejections, dead letters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from console.commands import bulk_commands
from console.deps import ConsoleDeps, pair_filter, parse_filter
from console.errors import BadRequest, TooManyPairs
from console.filters import PairFilter

Filter = Annotated[PairFilter, Depends(pair_filter)]


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: dict[str, Any] = Field(default_factory=dict, description="The pairs table's filter (same fields).")
    action: Literal["deactivate", "reweight"]
    weight: float | None = Field(None, ge=0.0, le=100.0, description="For reweight: the new training weight.")
    expect: int | None = Field(None, ge=0, description="The match count the operator saw: refused if it differs.")


def pairs_router(deps: ConsoleDeps) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["preference data"], dependencies=[Depends(deps.reader)])

    @r.get("/pairs", summary="A page of pairs matching the filter, with scores and a word diff")
    def pairs(f: Filter, page: int = Query(0, ge=0), size: int = Query(50, ge=1)) -> dict[str, Any]:
        if size > deps.cfg.console.page_size_max:
            raise BadRequest(
                f"size {size} is above console.page_size_max {deps.cfg.console.page_size_max}", field="size"
            )
        return deps.need_queries().pairs_page(f, page, size)

    @r.get("/pairs/export", summary="The filtered pairs in TRL's preference format (JSONL or Parquet)")
    def export(f: Filter, format: Literal["jsonl", "parquet"] = Query("jsonl")) -> Response:
        chunks = deps.need_queries().export(f, format)
        headers = {"Content-Disposition": f'attachment; filename="pairs.{format}"'}
        if format == "parquet":
            return Response(b"".join(chunks), media_type="application/vnd.apache.parquet", headers=headers)
        return StreamingResponse(chunks, media_type="application/x-ndjson", headers=headers)

    @r.get("/pairs/{pair_id}", summary="One pair")
    def pair(pair_id: str) -> dict[str, Any]:
        return deps.need_queries().pair(pair_id)

    @r.post(
        "/pairs/bulk",
        status_code=202,
        dependencies=[Depends(deps.admin)],
        summary="Deactivate or reweight every pair matching the filter (commands, so they become events)",
    )
    def bulk(body: BulkRequest) -> dict[str, Any]:
        f = parse_filter(body.filter)
        queries = deps.need_queries()
        if body.action == "deactivate":
            extra, params = "is_active", {}
        else:
            if body.weight is None:
                raise BadRequest("a reweight needs a weight", field="weight")
            extra, params = "training_weight != {b_weight:Float64}", {"b_weight": body.weight}
        matched = queries.count(f)
        if body.expect is not None and body.expect != matched:
            raise BadRequest(
                f"the filter now matches {matched} pairs, not the {body.expect} shown: look again", field="expect"
            )
        rows = queries.matching_keys(f, extra, params)
        if len(rows) > deps.cfg.console.bulk_max_pairs:
            raise TooManyPairs(
                f"{len(rows)} pairs match, above console.bulk_max_pairs "
                f"{deps.cfg.console.bulk_max_pairs}: narrow the filter",
                field="filter",
            )
        commands = bulk_commands(body.action, rows, f.canonical(), body.weight)
        sent = deps.send(list(commands))
        return {
            "status": "accepted",
            "matched": matched,
            "changing": len(rows),
            "commands": sent,
            "users": len({c.user_id for c in commands}),
            "filter": f.model_dump(mode="json", exclude_none=True),
        }

    @r.get("/rejected", summary="Rejected feedback with its reason codes, filterable by reason and user")
    def rejected(
        reason: str | None = None,
        user: str | None = None,
        page: int = Query(0, ge=0),
        size: int = Query(50, ge=1, le=500),
    ) -> dict[str, Any]:
        return deps.need_queries().rejected(reason or None, user or None, page, size)

    @r.get("/dead-letters", summary="Dead letters with their reasons, filterable by reason")
    def dead_letters(
        reason: str | None = None, page: int = Query(0, ge=0), size: int = Query(50, ge=1, le=500)
    ) -> dict[str, Any]:
        return deps.need_queries().dead_letters(reason or None, page, size)

    return r
