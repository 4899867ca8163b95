"""Output watermarks: the highest source offset the pairs topic already answers, per source partition.

Every decider output carries ``src.topic``/``src.partition``/``src.offset`` headers. After a crash
or a rebalance, an event at or below the watermark of its (topic, partition) already has durable
outputs (they are produced in order), so re-deciding it must not send them again.
"""

from __future__ import annotations

import threading
from typing import cast

from confluent_kafka import Consumer, TopicPartition

from infra.errors import KafkaError

SRC_TOPIC, SRC_PARTITION, SRC_OFFSET = "src.topic", "src.partition", "src.offset"


def source_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [(SRC_TOPIC, topic.encode()), (SRC_PARTITION, str(partition).encode()), (SRC_OFFSET, str(offset).encode())]


class OutputWatermarks:
    def __init__(self, bootstrap_servers: str, output_topic: str, scan: int = 5000, timeout_s: float = 10.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.output_topic = output_topic
        self.scan = scan
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, int], int] = {}
        self._scanned: set[int] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._scanned.clear()

    def __call__(self, topic: str, partition: int) -> int:
        with self._lock:
            if partition not in self._scanned:
                self._scan(partition)
                self._scanned.add(partition)
            return self._cache.get((topic, partition), -1)

    def _scan(self, partition: int) -> None:
        """Read the tail of the output partition with the same number (the topics are co-partitioned)."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "samtuner-watermarks",
                             "enable.auto.commit": False, "fetch.message.max.bytes": 17 * 1024 * 1024})
        try:
            tp = TopicPartition(self.output_topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
            if high <= low:
                return
            consumer.assign([TopicPartition(self.output_topic, partition, max(low, high - self.scan))])
            while True:
                msg = consumer.poll(self.timeout_s)
                if msg is None:
                    raise KafkaError(f"timed out reading the tail of {self.output_topic}[{partition}]")
                if msg.error() is not None:
                    continue
                raw_headers = cast(list[tuple[str, bytes]], msg.headers() or [])
                headers = {str(k): bytes(v or b"").decode() for k, v in raw_headers}
                if SRC_TOPIC in headers:
                    key = (headers[SRC_TOPIC], int(headers[SRC_PARTITION]))
                    self._cache[key] = max(self._cache.get(key, -1), int(headers[SRC_OFFSET]))
                if (msg.offset() or 0) + 1 >= high:
                    return
        finally:
            consumer.close()
