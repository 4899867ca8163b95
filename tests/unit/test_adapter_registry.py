"""The registry fold, the registrar's decisions and the A/B routing: pure functions, step by step."""

from __future__ import annotations

import uuid

from inference.registrar import decide_registry_command, settle
from inference.registry import Registry, fold
from inference.routing import draw, route
from schemas.commands import ActivateAdapter, DeactivateAdapter, RequestTraining
from schemas.events import (
    AdapterActivated,
    AdapterDeactivated,
    AdapterPublished,
    AdapterRegistryState,
    AdapterRevoked,
    BaseModelRef,
    SourceRef,
    utc_now,
)
from schemas.ids import adapter_event_id

BASE = BaseModelRef(name_or_path="base", weights_sha256="b" * 64)


def published(user: str, version: int) -> AdapterPublished:
    now = utc_now()
    return AdapterPublished(
        event_id=adapter_event_id(user, version),
        user_id=user,
        correlation_id=uuid.uuid4(),
        version=version,
        request_id=uuid.uuid4(),
        uri=f"adapters/{user}/{version}",
        files={"adapter_model.safetensors": "0" * 64},
        base_model=BASE,
        dataset_sha256="d" * 64,
        triggered_at=now,
    )


def at(offset: int) -> SourceRef:
    return SourceRef(topic="sam.control.v1", partition=0, offset=offset)


def run(*events: object) -> AdapterRegistryState | None:
    state = None
    for event in events:
        state = fold(state, event)  # type: ignore[arg-type]
    return state


def test_a_newer_version_becomes_latest_and_the_old_one_previous() -> None:
    state = run(published("alice", 1), published("alice", 2))
    assert state is not None and state.latest is not None and state.previous is not None
    assert (state.latest.version, state.previous.version, state.active) == (2, 1, True)


def test_older_or_repeated_versions_change_nothing() -> None:
    state = run(published("alice", 2))
    assert fold(state, published("alice", 2)) is state
    assert fold(state, published("alice", 1)) is state


def test_deactivation_persists_across_a_new_publication() -> None:
    state = run(published("alice", 1))
    deactivated = decide_registry_command(state, DeactivateAdapter(user_id="alice"), at(0)).events
    state = run(published("alice", 1), *deactivated, published("alice", 2))
    assert state is not None and state.latest is not None
    assert state.latest.version == 2 and state.active is False


def test_a_command_delivered_twice_takes_effect_once() -> None:
    state = run(published("alice", 1))
    command = DeactivateAdapter(user_id="alice")
    (event,) = decide_registry_command(state, command, at(5)).events
    after = fold(state, event)
    assert decide_registry_command(after, command, at(5)).events == ()  # redelivered after a crash: no-op
    again = decide_registry_command(state, command, at(5)).events[0]
    assert again.event_id == event.event_id  # the same decision gets the same id


def test_activate_can_roll_back_to_the_previous_version_and_set_the_split() -> None:
    state = run(published("alice", 1), published("alice", 2))
    (event,) = decide_registry_command(state, ActivateAdapter(user_id="alice", version=1, new_share=0.25), at(1)).events
    assert isinstance(event, AdapterActivated) and event.state is not None
    assert (event.version, event.state.pinned_version, event.state.new_share) == (1, 1, 0.25)
    latest = decide_registry_command(fold(state, event), ActivateAdapter(user_id="alice"), at(2)).events[0]
    assert isinstance(latest, AdapterActivated) and latest.state is not None
    assert (latest.state.pinned_version, latest.state.new_share) == (None, 0.25)  # the share is kept


def test_commands_that_cannot_be_honoured_are_refused_with_a_reason() -> None:
    assert decide_registry_command(None, ActivateAdapter(user_id="nobody"), at(0)).refusal.reason == "no_adapter"  # type: ignore[union-attr]
    state = run(published("alice", 1), published("alice", 2), published("alice", 3))
    refusal = decide_registry_command(state, ActivateAdapter(user_id="alice", version=1), at(0)).refusal
    assert refusal is not None and refusal.reason == "unknown_version" and "known: 3, 2" in refusal.detail
    assert decide_registry_command(state, RequestTraining(user_id="alice"), at(0)).events == ()  # not the registrar's


def test_the_last_registry_value_alone_rebuilds_the_full_state() -> None:
    """A node that starts after compaction sees only each user's last value."""
    state = run(published("alice", 1), published("alice", 2))
    (deactivated,) = decide_registry_command(state, DeactivateAdapter(user_id="alice"), at(0)).events
    fresh = run(deactivated)
    assert fresh == fold(state, deactivated)
    assert fresh is not None and fresh.previous is not None and fresh.active is False


def test_a_stale_state_event_does_not_undo_a_newer_publication() -> None:
    state = run(published("alice", 1))
    (deactivated,) = decide_registry_command(state, DeactivateAdapter(user_id="alice"), at(0)).events
    node_view = run(published("alice", 1), published("alice", 2), deactivated)  # v2 landed before the state
    assert node_view is not None and node_view.latest is not None
    assert (node_view.latest.version, node_view.active) == (2, False)


def test_settling_a_publication_names_the_full_state() -> None:
    state = run(published("alice", 1), published("alice", 2))
    assert state is not None
    event = settle("alice", state, uuid.uuid4())
    assert isinstance(event, AdapterActivated) and event.state == state and event.version == 2
    inactive = state.model_copy(update={"active": False})
    assert isinstance(settle("alice", inactive, uuid.uuid4()), AdapterDeactivated)


def test_revocation_drops_every_known_version_for_good() -> None:
    revoked = AdapterRevoked(event_id=uuid.uuid4(), user_id="alice", correlation_id=uuid.uuid4(), reason="erased")
    state = run(published("alice", 1), published("alice", 2), revoked)
    assert state is not None and state.revoked and state.latest is None and state.revoked_through == 2
    assert fold(state, published("alice", 2)) is state  # an old event replayed: still revoked
    newer = fold(state, published("alice", 3))
    assert newer is not None and not newer.revoked and newer.latest is not None and newer.latest.version == 3


def test_the_registry_knows_users_without_loading_anything() -> None:
    registry = Registry()
    for i in range(100):
        registry.apply(published(f"user-{i}", 1))
    change = registry.apply(published("user-7", 2))
    assert len(registry) == 100 and change.changed and change.new_version is not None
    assert registry.apply(published("user-7", 2)).changed is False


def test_routing_explains_every_base_model_answer() -> None:
    state = run(published("alice", 1))
    assert route(None, None, 1.0, 0.5).reason == "anonymous"
    assert route("carol", None, 1.0, 0.5).reason == "no_adapter"
    off = state.model_copy(update={"active": False})  # type: ignore[union-attr]
    assert route("alice", off, 1.0, 0.5).reason == "deactivated"
    revoked = AdapterRegistryState(revoked=True, revoked_through=1)
    assert route("alice", revoked, 1.0, 0.5).reason == "revoked"
    routed = route("alice", state, 1.0, 0.99)
    assert (routed.arm, routed.target.version, routed.reason) == ("new", 1, None)  # type: ignore[union-attr]


def test_the_ab_split_sends_the_configured_share_to_the_new_version() -> None:
    state = run(published("alice", 1), published("alice", 2))
    state = state.model_copy(update={"new_share": 0.3})  # type: ignore[union-attr]
    arms = [route("alice", state, 1.0, draw(uuid.uuid4())).arm for _ in range(4_000)]
    assert 0.27 < arms.count("new") / len(arms) < 0.33
    assert set(arms) == {"new", "previous"}
    no_previous = run(published("bob", 1)).model_copy(update={"new_share": 0.0})  # type: ignore[union-attr]
    control = route("bob", no_previous, 1.0, 0.5)
    assert (control.arm, control.reason) == ("base", "ab_control")


def test_a_pin_sends_every_request_to_the_pinned_version() -> None:
    state = run(published("alice", 1), published("alice", 2)).model_copy(  # type: ignore[union-attr]
        update={"pinned_version": 1, "new_share": 1.0}
    )
    assert {route("alice", state, 1.0, u / 10).arm for u in range(10)} == {"previous"}
