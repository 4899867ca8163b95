"""The Faust app: the decider and projector agents around the pure core.

Deciders validate, de-duplicate and count, with their state in Faust tables, and emit events.
The projector writes ClickHouse in idempotent batches (in a worker thread: the chDB client is
synchronous) and acks a batch only after the store acknowledged it. Every exception is handled
inside the agents' loops (Faust acks a message even when an agent raises), and every agent runs
with ``concurrency=1`` (more can commit offsets past unprocessed events).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import EventT, StreamT

from infra.kafka import RawMessage
from schemas.codec import decode_as, encode_headers, encode_key, encode_value
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.events import FeedbackReceived, SourceRef
from schemas.topics import Topics
from streams.dead_letters import dead_letter_headers
from streams.decide import DecideSettings, decide, pair_key_for
from streams.projector import Projector
from streams.state import SeenPair, UserState

log = logging.getLogger("samtuner.streams")

ROLES = frozenset({"decider", "projector"})
MAX_MESSAGE = 17 * 1024 * 1024


@dataclass
class StreamsStats:
    """Counters for the console and tests (per process)."""

    decided: int = 0
    dead_lettered: int = 0
    projected_batches: int = 0
    projected_events: int = 0
    crashed: str | None = None  # why the worker stopped itself, when it did


def _add_watchdog(app: faust.App, stats: StreamsStats) -> None:
    """A crashed fetcher or agent leaves a Faust worker alive but idle: stop it, so it is restarted.

    Nothing is lost: offsets of unprocessed events were not committed, and every handler is idempotent.
    """

    @app.timer(1.0)
    async def watchdog() -> None:
        if stats.crashed:
            return
        services = [app._fetcher, app.consumer, *app.agents.values()]
        for service in services:
            if service.crashed:
                stats.crashed = f"{service.shortlabel} crashed: {service.crash_reason!r}"
                log.error("stream worker stopping: %s", stats.crashed)
                os.kill(os.getpid(), signal.SIGTERM)
                return


def raw_message(event: EventT) -> RawMessage:
    msg = event.message
    return RawMessage(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=tuple((str(k), bytes(v or b"")) for k, v in cast(list[tuple[str, bytes]], msg.headers or [])),
        timestamp_ms=int(msg.timestamp * 1000),
    )


def create_app(
    cfg: Config,
    roles: frozenset[str] = ROLES,
    projector: Projector | None = None,
    stats: StreamsStats | None = None,
) -> faust.App:
    unknown = roles - ROLES
    if unknown:
        raise ValueError(f"unknown stream roles {sorted(unknown)}; valid: {sorted(ROLES)}")
    if "projector" in roles and projector is None:
        raise ValueError("the projector role needs a Projector (it owns the ClickHouse store)")
    stats = stats if stats is not None else StreamsStats()
    topics = Topics(cfg.kafka.topic_prefix)
    app = faust.App(
        cfg.streams.app_id,
        broker=[f"kafka://{hp}" for hp in cfg.kafka.bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(cfg.state_path / "faust"),
        topic_partitions=cfg.kafka.partitions,
        topic_replication_factor=cfg.kafka.replication_factor,
        table_standby_replicas=0,
        web_enabled=False,
        producer_acks=-1,
        producer_max_request_size=MAX_MESSAGE,
        consumer_max_fetch_size=MAX_MESSAGE,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        stream_wait_empty=True,
    )
    dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")

    async def dead_letter(msg: RawMessage, stage: str, reason: str, error: str) -> None:
        await dlq.send(key=msg.key, value=msg.value, headers=dead_letter_headers(msg, stage, reason, error))
        stats.dead_lettered += 1

    _add_watchdog(app, stats)
    if "decider" in roles:
        _add_decider(app, cfg, topics, dead_letter, stats)
    if "projector" in roles:
        assert projector is not None
        _add_projector(app, cfg, topics, projector, stats)
    return app


def _add_decider(app: faust.App, cfg: Config, topics: Topics, dead_letter: Any, stats: StreamsStats) -> None:
    feedback = app.topic(topics.feedback, key_serializer="raw", value_serializer="raw")
    pairs = app.topic(topics.pairs, key_serializer="raw", value_serializer="raw")
    # One value per user, updated once per event: its changelog message is the atomic unit.
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    users = app.Table("decider-users", partitions=cfg.kafka.partitions, schema=schema)
    seen = app.Table("decider-seen-pairs", partitions=cfg.kafka.partitions, schema=schema)
    settings = DecideSettings(min_new_pairs=cfg.trigger.min_new_pairs, preview_chars=cfg.streams.preview_chars)

    @app.agent(feedback, concurrency=1, name="decide")
    async def decide_agent(stream: StreamT) -> None:
        async for event in stream.events():
            msg = raw_message(event)
            try:
                fb = decode_as(msg.value, FeedbackReceived)
            except EventDecodeError as exc:
                await dead_letter(msg, "decider", exc.reason, exc.detail)
                continue
            try:
                source = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset)
                user_key = fb.user_id
                state = UserState.from_json(users.get(user_key))
                key = pair_key_for(fb)
                seen_key = f"{fb.user_id}\x1f{key}" if key else None
                sighting = SeenPair.from_json(seen.get(seen_key)) if seen_key else None
                decision = decide(fb, source, state, sighting, settings)
                for out in decision.events:
                    await pairs.send(key=encode_key(out), value=encode_value(out), headers=encode_headers(out))
                if decision.seen is not None and decision.pair_key is not None:
                    seen[f"{fb.user_id}\x1f{decision.pair_key}"] = decision.seen.to_json()
                if decision.state != state:
                    users[user_key] = decision.state.to_json()
                stats.decided += 1
            except Exception as exc:  # a bug must not stop the worker or lose the message
                log.exception("decider failed on %s/%d@%d", msg.topic, msg.partition, msg.offset)
                await dead_letter(msg, "decider", "internal_error", f"{type(exc).__name__}: {exc}")


def _add_projector(app: faust.App, cfg: Config, topics: Topics, projector: Projector, stats: StreamsStats) -> None:
    sources = app.topic(topics.pairs, topics.training, topics.adapters, topics.dlq, topics.inference, topics.feedback,
                        key_serializer="raw", value_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector")

    @app.agent(sources, concurrency=1, name="project")
    async def project_agent(stream: StreamT) -> None:
        loop = asyncio.get_running_loop()
        batches = cast(Any, stream).take_events(cfg.streams.batch_size, within=cfg.streams.batch_timeout_s)
        async for events in batches:
            messages = [raw_message(e) for e in events]
            while True:
                try:
                    # Runs until the store acknowledged the batch; only then do these offsets advance.
                    await loop.run_in_executor(executor, projector.project, messages)
                    break
                except Exception:
                    log.exception("projecting a batch of %d events failed; retrying", len(messages))
                    await asyncio.sleep(2.0)
            stats.projected_batches += 1
            stats.projected_events += len(messages)
