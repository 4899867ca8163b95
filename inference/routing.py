"""Which adapter version answers a request: the A/B split and the reasons the base model answers. Pure.

* no user, no adapter, a revoked or a deactivated user -> the base model, with the reason;
* a pinned version (an operator's rollback) -> that version, every request;
* otherwise a share of the requests (the user's ``new_share``, else the node's default) goes to the
  newest version (arm ``new``) and the rest to the previous version (arm ``previous``), or to the base
  model (arm ``base``, reason ``ab_control``) when there is no previous version.

The draw is derived from the answer id, so the arm of any logged answer can be recomputed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from schemas.events import AdapterRef, AdapterRegistryState

Arm = Literal["new", "previous", "base"]


@dataclass(frozen=True)
class Route:
    arm: Arm
    target: AdapterRef | None
    reason: str | None = None
    detail: str = ""


def draw(answer_id: uuid.UUID) -> float:
    """A uniform number in [0, 1) fixed by the answer id."""
    return int(answer_id.hex[:8], 16) / 2**32


def route(user_id: str | None, state: AdapterRegistryState | None, default_share: float, u: float) -> Route:
    if not user_id:
        return Route("base", None, "anonymous", "the request names no user; the base model answered")
    if state is not None and state.revoked:
        return Route("base", None, "revoked", "this user's adapters were revoked; the base model answered")
    if state is None or state.latest is None:
        return Route("base", None, "no_adapter", "this user has no published adapter yet; the base model answered")
    if not state.active:
        return Route("base", None, "deactivated", "this user's adapter is deactivated; the base model answered")
    latest, previous = state.latest, state.previous
    if state.pinned_version is not None:
        if previous is not None and state.pinned_version == previous.version:
            return Route("previous", previous)
        return Route("new", latest)
    share = state.new_share if state.new_share is not None else default_share
    if u < share:
        return Route("new", latest)
    if previous is not None:
        return Route("previous", previous)
    return Route("base", None, "ab_control", f"A/B control arm ({1 - share:.0%} of requests); the base model answered")
