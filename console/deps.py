"""What the console's routes need, gathered once per process; each part may be missing (None) and
the routes that need it answer 503 saying which part this process does not run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from console.auth import Authorizer
from console.errors import BadRequest, Unavailable
from console.filters import PairFilter
from console.live import LiveFeed
from console.nodes import NodeView
from console.queries import ConsoleQueries
from infra.artifacts import ArtifactStore
from schemas.commands import Command
from schemas.config import Config


@dataclass
class ConsoleDeps:
    cfg: Config
    authorizer: Authorizer
    queries: ConsoleQueries | None = None  # None: this process does not own the store
    send_command: Callable[[Command], None] | None = None
    feed: LiveFeed | None = None
    nodes: NodeView | None = None
    artifacts: ArtifactStore | None = None

    def need_queries(self) -> ConsoleQueries:
        if self.queries is None:
            raise Unavailable(
                "this process does not own the projections store (the console runs in samtuner run or samtuner streams)"
            )
        return self.queries

    def need_nodes(self) -> NodeView:
        if self.nodes is None:
            raise Unavailable("no inference node runs in this process and console.node_urls names none")
        return self.nodes

    def send(self, commands: list[Command]) -> list[str]:
        if self.send_command is None:
            raise Unavailable("this process cannot publish commands (no Kafka publisher)")
        for command in commands:
            self.send_command(command)
        return [str(c.command_id) for c in commands]

    def reader(self, request: Request) -> None:
        self.authorizer.require_reader(request)

    def admin(self, request: Request) -> None:
        self.authorizer.require_admin(request)


def pair_filter(
    user: str | None = None,
    feedback_type: str | None = None,
    quality_min: float | None = None,
    quality_max: float | None = None,
    since: str | None = None,
    until: str | None = None,
    active: bool | None = None,
    near_identical: bool | None = None,
) -> PairFilter:
    """The filter from query parameters; a bad value is a 400 that names the parameter."""
    raw: dict[str, Any] = {
        "user": user or None,
        "feedback_type": feedback_type or None,
        "quality_min": quality_min,
        "quality_max": quality_max,
        "since": since or None,
        "until": until or None,
        "active": active,
        "near_identical": near_identical,
    }
    return parse_filter({k: v for k, v in raw.items() if v is not None})


def parse_filter(raw: dict[str, Any]) -> PairFilter:
    try:
        return PairFilter.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if not where:  # a rule across fields: name the first field it is about
            where = "quality_min" if "quality" in err["msg"] else "since" if "since" in err["msg"] else "filter"
        raise BadRequest(f"filter {where}: {err['msg'].removeprefix('Value error, ')}", field=where) from exc
