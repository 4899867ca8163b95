"""Kafka at the inference edge: the node's registry follower and the registrar worker.

* :class:`RegistryFollower`: each node is its own consumer group and reads the compacted registry
  from the beginning at start, so every node sees every event and knows every user's state without
  loading any adapter; then it follows new events. ``ready`` is set once it has read to the end.
* :class:`RegistrarWorker`: one consumer group over the control topic. It folds the whole registry
  topic first, then turns ActivateAdapter / DeactivateAdapter into full-state registry events
  (:mod:`inference.registrar`) and follows every newer AdapterPublished with one. It commits a command
  only after its events were acknowledged; a redelivered command is recognised by its position.
  It settles only users whose control partition it owns (both topics share the partition count and
  the key partitioner), so several registrars never race on one user.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from inference.node import InferenceNode
from inference.registrar import decide_registry_command, settle
from inference.registry import REGISTRY_EVENTS, Registry
from infra.errors import PublishError
from infra.kafka import EventPublisher, KafkaEventPublisher, RawMessage, new_consumer
from infra.logcontext import correlation
from schemas.codec import decode, decode_command
from schemas.config import Config
from schemas.dead_letters import dead_letter_headers
from schemas.errors import EventDecodeError
from schemas.events import AdapterActivated, AdapterDeactivated, AdapterPublished, Event, SourceRef
from schemas.ids import derived_event_id
from schemas.topics import Topics

log = logging.getLogger("samtuner.inference")

HOUSEKEEPING_S = 1.0


def _registry_event(value: bytes | None) -> Event | None:
    try:
        event = decode(value)
    except EventDecodeError as exc:
        log.warning("registry: skipping an undecodable message: %s", exc)
        return None
    return event if isinstance(event, REGISTRY_EVENTS) else None


class RegistryFollower:
    def __init__(self, cfg: Config, node: InferenceNode) -> None:
        self.cfg = cfg
        self.node = node
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.ready = threading.Event()

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
        consumer.assign(partitions)

    def run(self, stop: threading.Event) -> None:
        consumer = new_consumer(
            self.cfg.kafka,
            f"samtuner-inference-{self.cfg.inference.node_id}",
            **{"auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 50},
        )
        consumer.subscribe([self.topics.adapters], on_assign=self._on_assign)
        eof: set[int] = set()
        next_upkeep = time.monotonic() + HOUSEKEEPING_S
        try:
            while not stop.is_set():
                if time.monotonic() >= next_upkeep:
                    next_upkeep = time.monotonic() + HOUSEKEEPING_S
                    self._upkeep()
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition() or 0)
                        if len(eof) >= len(consumer.assignment()) > 0 and not self.ready.is_set():
                            log.info("registry read to its end: %d users known", len(self.node.registry))
                            self.ready.set()
                        continue
                    log.warning("registry consumer: %s", error.str())
                    continue
                event = _registry_event(msg.value())
                if event is None:
                    continue
                try:
                    with correlation(event.correlation_id):  # the node's log lines about it name it
                        self.node.apply(event)
                except Exception:  # the node never crashes on one event
                    log.exception("registry: failed applying an event")
        finally:
            consumer.close()

    def _upkeep(self) -> None:
        try:
            self.node.housekeeping()
        except Exception:
            log.exception("node housekeeping failed")


class RegistrarWorker:
    def __init__(self, cfg: Config, publisher: EventPublisher | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.publisher = publisher or KafkaEventPublisher(cfg.kafka, client_id="samtuner-registrar")
        self.registry = Registry()
        self._stated: dict[str, int] = {}  # user -> latest version named by the last full-state event
        self._partition: dict[str, int] = {}  # user -> registry partition (== control partition)
        self._owned: set[int] = set()
        self.caught_up = threading.Event()
        self.commands_applied = 0

    # -- the registry side ---------------------------------------------------------------------

    def _fold(self, event: Event, partition: int | None) -> None:
        change = self.registry.apply(event)
        if partition is not None:
            self._partition[event.user_id] = partition
        after = change.after
        if isinstance(event, AdapterActivated | AdapterDeactivated) and event.state is not None:
            latest = event.state.latest.version if event.state.latest is not None else 0
            self._stated[event.user_id] = max(self._stated.get(event.user_id, 0), latest)
        if self.caught_up.is_set() and isinstance(event, AdapterPublished) and after is not None:
            self._settle(event.user_id, event.correlation_id)

    def _settle(self, user_id: str, correlation_id: uuid.UUID | None) -> None:
        state = self.registry.get(user_id)
        if state is None or state.latest is None or state.latest.version <= self._stated.get(user_id, 0):
            return
        if self._partition.get(user_id) not in self._owned:
            return  # another registrar owns this user's commands
        event = settle(
            user_id, state, correlation_id or derived_event_id("registrar-settle", user_id, str(state.latest.version))
        )
        if event is not None:
            self._emit([event])

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.publisher.publish(self.topics.adapters, event)
            self._fold(event, None)
        self.publisher.flush()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        kafka = self.cfg.kafka
        registry = new_consumer(
            kafka,
            f"{self.cfg.inference.registrar_group_id}-fold",
            **{"enable.partition.eof": True, "fetch.wait.max.ms": 50},
        )
        control = new_consumer(
            kafka,
            self.cfg.inference.registrar_group_id,
            **{"auto.offset.reset": "earliest", "fetch.wait.max.ms": 50},
        )
        try:
            meta = registry.list_topics(self.topics.adapters, timeout=30).topics[self.topics.adapters]
            registry.assign([TopicPartition(self.topics.adapters, p, OFFSET_BEGINNING) for p in meta.partitions])
            pending_eof = set(meta.partitions)
            control.subscribe([self.topics.control], on_assign=self._assigned, on_revoke=self._revoked)
            while not stop.is_set():
                self._poll_registry(registry, pending_eof)
                if not self.caught_up.is_set():
                    control.poll(0)  # keeps the group membership alive while catching up
                    continue
                msg = control.poll(0.1)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("registrar control consumer: %s", error.str())
                    continue
                self._command(control, msg)
        finally:
            control.close()
            registry.close()

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._owned |= {tp.partition for tp in partitions}
        if self.caught_up.is_set():
            for user in list(self.registry.users()):
                self._settle(user, None)

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._owned -= {tp.partition for tp in partitions}

    def _poll_registry(self, consumer: Any, pending_eof: set[int]) -> None:
        for _ in range(500):
            msg = consumer.poll(0 if self.caught_up.is_set() else 0.1)
            if msg is None:
                return
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending_eof.discard(msg.partition())
                    if not pending_eof and not self.caught_up.is_set():
                        self.caught_up.set()
                        log.info("registrar caught up: %d users", len(self.registry))
                        for user in self.registry.users():
                            self._settle_safely(user)
                continue
            event = _registry_event(msg.value())
            if event is not None:
                self._fold(event, msg.partition())

    def _settle_safely(self, user_id: str) -> None:
        try:
            self._settle(user_id, None)
        except PublishError as exc:
            log.error("registrar could not settle a user: %s", exc)

    def _command(self, consumer: Any, msg: Any) -> None:
        raw = RawMessage(
            msg.topic(),
            msg.partition(),
            msg.offset(),
            msg.key(),
            msg.value(),
            tuple(msg.headers() or ()),
            msg.timestamp()[1],
        )
        try:
            command = decode_command(msg.value())
        except EventDecodeError as exc:
            log.warning(
                "registrar: skipping an undecodable command at %s/%d@%d: %s", raw.topic, raw.partition, raw.offset, exc
            )
            consumer.commit(message=msg, asynchronous=False)
            return
        source = SourceRef(topic=raw.topic, partition=raw.partition, offset=raw.offset)
        outcome = decide_registry_command(self.registry.get(command.user_id), command, source)
        with correlation(command.command_id):
            self._carry_out(consumer, msg, raw, command, outcome)

    def _carry_out(self, consumer: Any, msg: Any, raw: RawMessage, command: Any, outcome: Any) -> None:
        try:
            if outcome.events:
                self._emit(list(outcome.events))
                self.commands_applied += 1
            if outcome.refusal is not None:
                log.warning("registrar refused %s: %s", type(command).__name__, outcome.refusal.detail)
                self.publisher.publish_raw(
                    self.topics.dlq,
                    raw.key,
                    raw.value,
                    dead_letter_headers(raw, "registrar", outcome.refusal.reason, outcome.refusal.detail),
                )
                self.publisher.flush()
        except PublishError as exc:
            log.error("registrar could not publish (will retry the command): %s", exc)
            time.sleep(1.0)
            consumer.seek(TopicPartition(raw.topic, raw.partition, raw.offset))
            return
        consumer.commit(message=msg, asynchronous=False)
