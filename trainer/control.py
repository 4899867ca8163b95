"""Every trainer worker follows the control topic from the beginning and acts on ``CancelTraining``
and ``EraseUser`` (the user's jobs stop, their job directories and checkpoints go).

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

from infra.errors import KafkaCallError
from infra.kafka import new_reader, watermarks
from schemas.codec import decode_command
from schemas.commands import CancelTraining, EraseUser
from schemas.config import Config
from schemas.errors import EventDecodeError
from schemas.topics import Topics

log = logging.getLogger("samtuner.trainer.control")


class ControlFollower:
    def __init__(
        self,
        cfg: Config,
        on_cancel: Callable[[CancelTraining], None],
        on_erase: Callable[[EraseUser], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.topic = Topics(cfg.kafka.topic_prefix).control
        self.on_cancel = on_cancel
        self.on_erase = on_erase

    def run(self, stop: threading.Event, ready: threading.Event) -> None:
        consumer = new_reader(self.cfg.kafka, "samtuner-trainer-control")  # assign() only, nothing committed
        try:
            ends = self._assign(consumer, stop)
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
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer, stop: threading.Event) -> dict[int, int]:
        """Assign every partition from the beginning; returns the end offsets of the non-empty ones.

        Until the topic can be read, no job starts here (a cancel could be missed): keep trying, loudly.
        """
        while not stop.is_set():
            try:
                meta = consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
                if meta is None or meta.error is not None:
                    raise KafkaCallError(f"topic {self.topic} does not exist (run `samtuner topics`)")
                ends: dict[int, int] = {}
                for p in meta.partitions:
                    low, high = watermarks(consumer, self.topic, p)
                    if high > low:
                        ends[p] = high
                consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
                return ends
            except (KafkaCallError, KafkaException) as exc:
                log.error("cannot follow the control topic yet, so no job starts on this worker: %s", exc)
                stop.wait(2.0)
        return {}

    def _handle(self, value: bytes | None) -> None:
        try:
            command = decode_command(value)
        except EventDecodeError:
            return  # the control topic's dead letters are the decider's to report
        if isinstance(command, CancelTraining):
            self.on_cancel(command)
        elif isinstance(command, EraseUser) and self.on_erase is not None:
            self.on_erase(command)
