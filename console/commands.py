"""Command builders: what the console sends on the control topic for each action (pure).

Bulk actions. The console resolves the filter against the store and sends, per user, commands that
list the matching pair ids (at most ``MAX_BULK_PAIRS`` each), rather than one command carrying the
filter for someone to resolve later:

* the command's effect is a pure function of the command, so replaying the log rebuilds the same
  projection whatever the store held when the replay runs (a filter resolved at replay time would
  match other rows);
* commands stay keyed by user, so the decider that owns the user's pairs decides them in order with
  the user's other events, and unknown ids are named in a ``CommandRejected``;
* the command id is derived from the action, its value and the ids *with the row versions they were
  resolved at*: a retried request (double click, a proxy's retry) sends the same ids and is a no-op,
  while the same action after the rows changed is a new command.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import ValidationError

from console.errors import BadRequest
from schemas.commands import MAX_BULK_PAIRS, DeactivatePairs, RequestTraining, ReweightPairs
from schemas.config import Config, describe_errors
from schemas.errors import ConfigError
from schemas.ids import derived_event_id

BulkAction = Literal["deactivate", "reweight"]
ISSUER = "console"


def bulk_commands(
    action: BulkAction,
    rows: Sequence[tuple[str, uuid.UUID, int]],
    filter_text: str,
    weight: float | None = None,
    issued_by: str = ISSUER,
) -> list[DeactivatePairs | ReweightPairs]:
    """Commands for ``rows`` = (user id, pair id, row version): per user, ids sorted, in chunks."""
    if action == "reweight" and weight is None:
        raise BadRequest("a reweight needs a weight", field="weight")
    by_user: dict[str, list[tuple[uuid.UUID, int]]] = defaultdict(list)
    for user, pid, version in rows:
        by_user[user].append((pid, version))
    out: list[DeactivatePairs | ReweightPairs] = []
    for user in sorted(by_user):
        pairs = sorted(set(by_user[user]))
        for start in range(0, len(pairs), MAX_BULK_PAIRS):
            chunk = pairs[start : start + MAX_BULK_PAIRS]
            basis = hashlib.sha256("\n".join(f"{p}:{v}" for p, v in chunk).encode()).hexdigest()
            cid = derived_event_id("console-bulk", action, repr(weight), user, basis)
            ids = tuple(p for p, _ in chunk)
            if action == "deactivate":
                out.append(
                    DeactivatePairs(command_id=cid, user_id=user, pair_ids=ids, filter=filter_text, issued_by=issued_by)
                )
            else:
                assert weight is not None
                out.append(
                    ReweightPairs(
                        command_id=cid,
                        user_id=user,
                        pair_ids=ids,
                        training_weight=weight,
                        filter=filter_text,
                        issued_by=issued_by,
                    )
                )
    return out


_DPO_KEY = re.compile(r"training\.dpo\.([A-Za-z0-9_]+)")


def field_errors(message: str, keys: Sequence[str]) -> dict[str, str]:
    """Split a validation message ('a; b; ...') into {override key: its problems}; the rest under '_'.
    A part that names no key continues the part before it (some problems contain '; ' themselves)."""
    out: dict[str, str] = {}
    current: list[str] = []
    for part in (p.strip() for p in message.split("; ") if p.strip()):
        named = [k for k in _DPO_KEY.findall(part) if k in keys]
        if named or not current:
            current = named or ["_"]
            for key in current:
                out[key] = f"{out[key]}; {part}" if key in out else part
        else:
            for key in current:
                out[key] = f"{out[key]}; {part}"
    return out


def check_overrides(cfg: Config, overrides: Mapping[str, Any]) -> dict[str, str]:
    """Problems of ``training.dpo`` overrides by key: the config's own validation, then TRL's DPOConfig
    check, exactly as ``samtuner config check`` runs them. Empty = valid."""
    from trainer.errors import TrainingConfigError
    from trainer.library_config import validate_training_config

    keys = list(overrides)
    bad = {
        k: f"training.dpo.{k}: a number is expected, got {v!r}"
        for k, v in overrides.items()
        if isinstance(v, bool) or not isinstance(v, int | float)
    }
    if bad:
        return bad
    try:
        merged = cfg.with_overrides(training={"dpo": {**cfg.training.dpo, **overrides}})
    except ValidationError as exc:
        return field_errors(describe_errors(exc, Config), keys)
    except (ConfigError, ValueError) as exc:
        return field_errors(str(exc), keys)
    try:
        validate_training_config(merged)
    except TrainingConfigError as exc:
        return field_errors(str(exc), keys)
    return {}


def request_training(cfg: Config, user: str, overrides: Mapping[str, Any], issued_by: str = ISSUER) -> RequestTraining:
    problems = check_overrides(cfg, overrides)
    if problems:
        raise BadRequest("; ".join(problems.values()), field="overrides", fields=problems)
    try:
        return RequestTraining(user_id=user, dpo_overrides=dict(overrides), issued_by=issued_by)
    except ValidationError as exc:
        raise BadRequest(f"not a valid training request: {exc.errors()[0]['msg']}", field="user") from exc
