"""Output marks: the last output the pairs topic already holds, per source partition.

Every decider output carries ``src.topic``/``src.partition``/``src.offset`` headers and ``src.index``
(its place among the outputs of that one source event: a pair and a threshold are two messages).
Outputs are produced in order, so after a crash or a rebalance an output at or below the mark
``(offset, index)`` of its (topic, partition) is durable, and re-deciding its event must not send it
again; the outputs after it (a threshold whose pair landed just before the crash) must be sent.
"""

from __future__ import annotations

import threading
import time
from typing import cast

from confluent_kafka import TopicPartition

from infra.errors import KafkaCallError
from infra.kafka import Connection, new_consumer

SRC_TOPIC, SRC_PARTITION, SRC_OFFSET, SRC_INDEX = "src.topic", "src.partition", "src.offset", "src.index"
NONE: tuple[int, int] = (-1, -1)

Position = tuple[int, int]  # (source offset, index of the output among that event's outputs)


def source_headers(topic: str, partition: int, offset: int, index: int = 0) -> list[tuple[str, bytes]]:
    return [
        (SRC_TOPIC, topic.encode()),
        (SRC_PARTITION, str(partition).encode()),
        (SRC_OFFSET, str(offset).encode()),
        (SRC_INDEX, str(index).encode()),
    ]


class OutputMarks:
    def __init__(self, connection: Connection, output_topic: str, scan: int = 5000, timeout_s: float = 10.0) -> None:
        self.connection = connection
        self.output_topic = output_topic
        self.scan = scan
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, int], Position] = {}
        self._scanned: set[int] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._scanned.clear()

    def __call__(self, topic: str, partition: int) -> Position:
        with self._lock:
            if partition not in self._scanned:
                self._scan(partition)
                self._scanned.add(partition)
            return self._cache.get((topic, partition), NONE)

    def _scan(self, partition: int) -> None:
        """Read the tail of the output partition with the same number (the topics are co-partitioned)."""
        consumer = new_consumer(self.connection, "samtuner-output-marks")
        try:
            tp = TopicPartition(self.output_topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
            if high <= low:
                return
            next_offset = max(low, high - self.scan)
            consumer.assign([TopicPartition(self.output_topic, partition, next_offset)])
            deadline = time.monotonic() + self.timeout_s
            while next_offset < high:
                # consume() returns once it has num_messages or its timeout passed: ask for what is
                # left of the tail (at most a batch), so the last batch does not wait for more.
                batch = consumer.consume(num_messages=min(1000, high - next_offset), timeout=0.5)
                for msg in batch:
                    if msg.error() is None:
                        self._note(cast(list[tuple[str, bytes]], msg.headers() or []))
                        next_offset = max(next_offset, (msg.offset() or 0) + 1)
                if batch:
                    deadline = time.monotonic() + self.timeout_s
                elif time.monotonic() > deadline:
                    raise KafkaCallError(f"timed out reading the tail of {self.output_topic}[{partition}]")
        finally:
            consumer.close()

    def _note(self, raw_headers: list[tuple[str, bytes]]) -> None:
        headers = dict(raw_headers)
        topic = headers.get(SRC_TOPIC)
        if topic is None:
            return
        key = (topic.decode(), int(headers[SRC_PARTITION]))
        position = (int(headers[SRC_OFFSET]), int(headers.get(SRC_INDEX, b"0")))
        if position > self._cache.get(key, NONE):
            self._cache[key] = position
