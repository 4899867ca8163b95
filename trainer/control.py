"""Every trainer worker follows the control topic from the beginning and acts on ``CancelTraining``.

It reads every partition itself (no consumer group, nothing committed), so every worker sees every
command: the worker that holds the job cancels it, the others remember the cancel in case the
request reaches them later. Re-reading old commands is harmless: a finished job is not affected.
``ready`` is set once the commands that existed at start are read, so no job starts before a
cancel that was issued while no worker ran is known. Other commands are for other roles.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas.codec import decode_command
from schemas.commands import CancelTraining
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.topics import Topics

log = logging.getLogger("samtuner.trainer.control")


class ControlFollower:
    def __init__(self, cfg: Config, on_cancel: Callable[[CancelTraining], None]) -> None:
        self.cfg = cfg
        self.topic = Topics(cfg.kafka.topic_prefix).control
        self.on_cancel = on_cancel

    def run(self, stop: threading.Event, ready: threading.Event) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.cfg.kafka.bootstrap_servers,
            "group.id": "samtuner-trainer-control",  # never joins: assign() only, nothing committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        })
        try:
            ends = self._assign_all(consumer)
            if not ends:
                ready.set()
            while not stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                self._handle(msg.value())
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if ends and offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                    if not ends:
                        ready.set()
        except KafkaException as exc:
            log.error("the control topic cannot be followed (cancels are not seen): %s", exc)
            ready.set()
        finally:
            consumer.close()

    def _assign_all(self, consumer: Consumer) -> dict[int, int]:
        """Assign every partition from the beginning; returns the end offsets of the non-empty ones."""
        meta = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {self.topic} does not exist")
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        return ends

    def _handle(self, value: bytes | None) -> None:
        try:
            command = decode_command(value)
        except EventDecodeError:
            return  # the control topic's dead letters are the decider's to report
        if isinstance(command, CancelTraining):
            self.on_cancel(command)
