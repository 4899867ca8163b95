"""An inference node: follows the adapter registry topic and keeps its engine current.

Each node is its own consumer group and reads the compacted registry from the beginning at start,
so every node sees every event and rebuilds what every user's current version is. Older or
repeated versions are ignored; a rejected adapter is logged and the node keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from inference.engine import InferenceEngine
from inference.errors import AdapterRejected
from schemas.codec import decode
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.events import AdapterPublished
from schemas.topics import Topics

log = logging.getLogger("samtuner.inference")


class RegistryFollower:
    def __init__(self, cfg: Config, engine: InferenceEngine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.topics = Topics(cfg.kafka.topic_prefix)
        self.seen_events = 0
        self.ready = threading.Event()  # set once the registry was read up to its end at start

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
        consumer.assign(partitions)

    def handle(self, value: bytes | None) -> None:
        try:
            event = decode(value)
        except EventDecodeError as exc:
            log.warning("registry: skipping an undecodable message: %s", exc)
            return
        if not isinstance(event, AdapterPublished):
            return
        self.seen_events += 1
        # On AdapterRejected the engine recorded the reason; the previous version (or base) keeps answering.
        with contextlib.suppress(AdapterRejected):
            self.engine.activate(event)

    def run(self, stop: threading.Event) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.cfg.kafka.bootstrap_servers,
            "group.id": f"samtuner-inference-{self.cfg.inference.node_id}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        })
        consumer.subscribe([self.topics.adapters], on_assign=self._on_assign)
        eof: set[int] = set()
        try:
            while not stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition() or 0)
                        if len(eof) >= len(consumer.assignment()) > 0:
                            self.ready.set()
                        continue
                    log.warning("registry consumer: %s", error.str())
                    continue
                try:
                    self.handle(msg.value())
                except Exception:  # the node never crashes on one event
                    log.exception("registry: failed handling an event")
        finally:
            consumer.close()
