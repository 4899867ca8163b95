"""The adapter registry: every user's current adapter state, folded from the compacted registry topic.

:func:`fold` is pure: ``(state, event) -> state``. Nodes and the registrar fold the same events, so
they agree on each user's state:

* ``AdapterPublished`` (the trainer): a newer version becomes ``latest`` and the old latest becomes
  ``previous`` (the A/B control arm); a pin ends. Older or repeated versions change nothing, and so
  do versions up to ``revoked_through``.
* ``AdapterActivated`` / ``AdapterDeactivated`` (the registrar) carry the user's full state, so the
  last value of the compacted topic is enough for a node that starts. When a node has already seen
  a newer publish than the state names, it keeps the newer versions and takes the flags.
* ``AdapterRevoked`` (data erasure): every version known so far is dropped and never served again.

:class:`Registry` is the thread-safe map a node keeps: it knows every user's state without loading
any adapter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from schemas.events import (
    AdapterActivated,
    AdapterDeactivated,
    AdapterPublished,
    AdapterRef,
    AdapterRegistryState,
    AdapterRevoked,
    Event,
)

REGISTRY_EVENTS = (AdapterPublished, AdapterActivated, AdapterDeactivated, AdapterRevoked)


def ref_of(event: AdapterPublished) -> AdapterRef:
    return AdapterRef(version=event.version, uri=event.uri, files=event.files, base_model=event.base_model)


def _version(ref: AdapterRef | None) -> int:
    return ref.version if ref is not None else 0


def fold(state: AdapterRegistryState | None, event: Event) -> AdapterRegistryState | None:
    """The user's state after ``event``; the same object when the event changes nothing."""
    if isinstance(event, AdapterPublished):
        return _published(state, event)
    if isinstance(event, AdapterActivated | AdapterDeactivated):
        return _stated(state, event)
    if isinstance(event, AdapterRevoked):
        current = state or AdapterRegistryState()
        through = max(current.revoked_through, _version(current.latest), _version(current.previous))
        revoked = AdapterRegistryState(
            active=current.active, revoked=True, revoked_through=through, through_command=current.through_command
        )
        return state if state == revoked else revoked
    return state


def _published(state: AdapterRegistryState | None, event: AdapterPublished) -> AdapterRegistryState | None:
    current = state or AdapterRegistryState()
    if event.version <= current.revoked_through or event.version <= _version(current.latest):
        return state  # revoked, older or repeated: ignored
    return current.model_copy(
        update={"latest": ref_of(event), "previous": current.latest, "pinned_version": None, "revoked": False}
    )


def _stated(
    state: AdapterRegistryState | None, event: AdapterActivated | AdapterDeactivated
) -> AdapterRegistryState | None:
    current = state or AdapterRegistryState()
    told = event.state
    if told is None:  # a producer that does not send the state: honour the flag alone
        if isinstance(event, AdapterDeactivated):
            return current.model_copy(update={"active": False})
        pinned = event.version if event.version != _version(current.latest) else None
        return current.model_copy(update={"active": True, "pinned_version": pinned})
    if _version(told.latest) >= _version(current.latest):
        return told if told != state else state
    # We already saw a newer publish than this state names: keep our versions, take its flags.
    pinned = (
        told.pinned_version if told.pinned_version in (_version(current.latest), _version(current.previous)) else None
    )
    return current.model_copy(
        update={
            "active": told.active,
            "new_share": told.new_share,
            "pinned_version": pinned,
            "through_command": told.through_command,
            "revoked_through": max(told.revoked_through, current.revoked_through),
        }
    )


@dataclass(frozen=True)
class Change:
    """What one event did to one user's state (``before`` is ``after`` when nothing changed)."""

    user_id: str
    before: AdapterRegistryState | None
    after: AdapterRegistryState | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def new_version(self) -> AdapterRef | None:
        """The newly published latest version, when this change published one."""
        if self.after is None or self.after.latest is None:
            return None
        if self.before is not None and _version(self.before.latest) >= self.after.latest.version:
            return None
        return self.after.latest


class Registry:
    """Every user's adapter state on this node (thread-safe); holds references, never weights."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, AdapterRegistryState] = {}
        self.events_applied = 0

    def apply(self, event: Event) -> Change:
        with self._lock:
            before = self._users.get(event.user_id)
            after = fold(before, event)
            if after is not None and after is not before:
                self._users[event.user_id] = after
            self.events_applied += 1
            return Change(event.user_id, before, after)

    def get(self, user_id: str) -> AdapterRegistryState | None:
        with self._lock:
            return self._users.get(user_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    def users(self) -> list[str]:
        with self._lock:
            return list(self._users)
