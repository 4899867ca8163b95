"""The registrar's decisions: Activate/Deactivate commands and new publications -> full-state registry events.

Pure: no Kafka, no clock. The registrar folds the registry topic (:func:`inference.registry.fold`) to
know every user's state, and:

* turns ``ActivateAdapter`` / ``DeactivateAdapter`` into ``AdapterActivated`` / ``AdapterDeactivated``
  carrying the user's full new state. The state records the command's control-topic position, so a
  command delivered again after a crash changes nothing (exactly-once effect), and event ids are
  derived from the command id;
* follows every newer ``AdapterPublished`` with a full-state event (:func:`settle`), so the last value
  of the compacted topic always tells a starting node the whole state (deactivation, A/B share,
  previous version), not only the trainer's view.

A command that cannot be honoured (no adapter published, an unknown version) is refused with a reason;
the worker dead-letters it, so nothing is lost silently.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from schemas.commands import ActivateAdapter, Command, DeactivateAdapter
from schemas.events import AdapterActivated, AdapterDeactivated, AdapterRegistryState, Event, SourceRef
from schemas.ids import derived_event_id


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True)
class CommandOutcome:
    events: tuple[Event, ...] = ()
    refusal: Refusal | None = None


def already_applied(state: AdapterRegistryState | None, source: SourceRef) -> bool:
    done = state.through_command if state is not None else None
    return (
        done is not None
        and done.topic == source.topic
        and done.partition == source.partition
        and source.offset <= done.offset
    )


def decide_registry_command(state: AdapterRegistryState | None, command: Command, source: SourceRef) -> CommandOutcome:
    """The registry events a command leads to (none for commands that are not the registrar's)."""
    if not isinstance(command, ActivateAdapter | DeactivateAdapter):
        return CommandOutcome()
    if already_applied(state, source):
        return CommandOutcome()  # delivered again after a crash: it took effect the first time
    current = state or AdapterRegistryState()
    cid = str(command.command_id)
    if isinstance(command, DeactivateAdapter):
        after = current.model_copy(update={"active": False, "through_command": source})
        return CommandOutcome(
            (
                AdapterDeactivated(
                    event_id=derived_event_id("adapter-deactivated", command.user_id, cid),
                    user_id=command.user_id,
                    correlation_id=command.command_id,
                    occurred_at=command.issued_at,
                    command_id=command.command_id,
                    state=after,
                ),
            )
        )
    latest, previous = current.latest, current.previous
    if latest is None:
        return CommandOutcome(refusal=Refusal("no_adapter", "the user has no published adapter to activate"))
    wanted = command.version or latest.version
    if wanted == latest.version:
        pinned = None
    elif previous is not None and wanted == previous.version:
        pinned = wanted  # a rollback: every request goes to the previous version
    else:
        known = ", ".join(str(r.version) for r in (latest, previous) if r is not None)
        return CommandOutcome(
            refusal=Refusal("unknown_version", f"version {wanted} is not one the registry can serve (known: {known})")
        )
    share = command.new_share if command.new_share is not None else current.new_share
    after = current.model_copy(
        update={"active": True, "pinned_version": pinned, "new_share": share, "through_command": source}
    )
    return CommandOutcome(
        (
            AdapterActivated(
                event_id=derived_event_id("adapter-activated", command.user_id, cid),
                user_id=command.user_id,
                correlation_id=command.command_id,
                occurred_at=command.issued_at,
                version=wanted,
                command_id=command.command_id,
                state=after,
            ),
        )
    )


def settle(user_id: str, state: AdapterRegistryState, correlation_id: uuid.UUID) -> Event | None:
    """The full-state event that follows a newly published version (its correlation id), or None."""
    latest = state.latest
    if latest is None:
        return None
    corr = correlation_id
    if state.active:
        return AdapterActivated(
            event_id=derived_event_id("adapter-activated-published", user_id, str(latest.version)),
            user_id=user_id,
            correlation_id=corr,
            version=state.pinned_version or latest.version,
            state=state,
        )
    return AdapterDeactivated(
        event_id=derived_event_id("adapter-deactivated-published", user_id, str(latest.version)),
        user_id=user_id,
        correlation_id=corr,
        state=state,
    )
