"""The decider's commit guard is its own Faust transport, found by the broker scheme, not a patch.

Faust's commit check lets a hole of exactly one offset at the committed position through
(faust-streaming/faust #606): the decider's consumer refuses it. No Faust class is changed, so a
plain ``kafka://`` app in the same process keeps Faust's own behaviour."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport import drivers
from faust.transport.drivers import aiokafka
from faust.types import TP

from schemas.config import Config
from streams.decider import faust_guards
from streams.decider.app import create_app
from streams.decider.faust_guards import GuardedConsumer, GuardedTransport, guarded_broker_urls
from streams.errors import GuardNotInstalled
from tests.decider_config import decider_config

TP0 = TP("feedback", 0)


def config(tmp_path: Path) -> Config:
    return decider_config(tmp_path, kafka={"bootstrap_servers": "127.0.0.1:9092, 127.0.0.1:9093"})


def next_commit(app: faust.App, acked: list[int], committed: int) -> tuple[type, int | None]:
    """The consumer class ``app`` builds, and the offset it would commit for these acks."""

    async def ask() -> tuple[type, int | None]:
        consumer: Any = app.consumer
        consumer._acked[TP0] = list(acked)
        consumer._acked_index[TP0] = set(acked)
        consumer._committed_offset[TP0] = committed
        return type(consumer), consumer._new_offset(TP0)

    return asyncio.run(ask())


def test_the_decider_scheme_resolves_to_the_guarded_transport() -> None:
    urls = guarded_broker_urls("127.0.0.1:9092, 127.0.0.1:9093")
    assert urls == ["samtuner://127.0.0.1:9092", "samtuner://127.0.0.1:9093"]
    assert drivers.by_url(urls[0]) is GuardedTransport
    assert GuardedTransport.Consumer is GuardedConsumer
    assert issubclass(GuardedConsumer, aiokafka.Consumer)


def test_the_decider_refuses_to_commit_past_a_missing_event_at_the_committed_offset(tmp_path: Path) -> None:
    app = create_app(config(tmp_path))
    assert isinstance(app.transport, GuardedTransport)
    kind, offset = next_commit(app, acked=[11, 12], committed=10)
    assert kind is GuardedConsumer
    assert offset is None  # event 10 was never processed


def test_the_decider_commits_a_run_that_starts_at_the_committed_offset(tmp_path: Path) -> None:
    _, offset = next_commit(create_app(config(tmp_path)), acked=[10, 11, 12, 14], committed=10)
    assert offset == 13


def test_an_app_on_faust_s_own_scheme_in_the_same_process_is_not_changed(tmp_path: Path) -> None:
    create_app(config(tmp_path))  # the decider's app, built first: it must not leak into others
    plain = faust.App("plain", broker="kafka://127.0.0.1:9092", store="memory://", web_enabled=False)
    kind, offset = next_commit(plain, acked=[11, 12], committed=10)
    assert kind is aiokafka.Consumer
    assert offset == 13  # Faust's own check lets the one-offset hole through


def test_a_missing_entry_point_stops_the_decider_with_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    def unresolved(url: str) -> type:
        raise ImportError(f"no transport for {url}")

    monkeypatch.setattr(faust_guards.drivers, "by_url", unresolved)
    with pytest.raises(GuardNotInstalled, match=r"faust\.transports.*pip install --no-deps -e \."):
        guarded_broker_urls("127.0.0.1:9092")
