"""Kafka at the edge: an idempotent event publisher, and small consumer helpers.

Producers use ``acks=all`` with idempotence, and the murmur2 partitioner (Java's and aiokafka's
default), so every producer in the system puts a user's events in the same partition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from infra.errors import KafkaError, PublishError
from schemas.codec import encode_command, encode_headers, encode_key, encode_value
from schemas.commands import Command
from schemas.events import Event

# Errors a topic that was just created answers with until its partitions have leaders.
_NOT_READY = frozenset({CKafkaError.NOT_LEADER_FOR_PARTITION, CKafkaError.LEADER_NOT_AVAILABLE,
                        CKafkaError.UNKNOWN_TOPIC_OR_PART, CKafkaError._TIMED_OUT})

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "partitioner": "murmur2_random",
    "message.max.bytes": 17 * 1024 * 1024,
    "compression.type": "lz4",
}


class EventPublisher(Protocol):
    """The seam every role publishes events through (tests pass a fake)."""

    def publish(self, topic: str, event: Event) -> None: ...

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class KafkaEventPublisher:
    """Publishes events with an idempotent confluent-kafka producer; ``flush`` raises on any failure."""

    def __init__(self, bootstrap_servers: str, client_id: str = "samtuner", **overrides: Any) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, "client.id": client_id,
                                   **PRODUCER_DEFAULTS, **overrides})
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def _on_delivery(self, err: CKafkaError | None, msg: Any) -> None:
        if err is not None:
            hint = ""
            if err.code() == CKafkaError.INVALID_RECORD:
                hint = " (a timestamp more than an hour in the future is refused by the broker)"
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err.str()}{hint}")

    def publish(self, topic: str, event: Event) -> None:
        self.publish_raw(topic, encode_key(event), encode_value(event), encode_headers(event))

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": list(headers or []),
                                  "on_delivery": self._on_delivery}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:
                raise PublishError(f"cannot produce to {topic}: {exc}") from exc
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining:
            raise PublishError(f"{remaining} message(s) not delivered within {timeout_s}s")
        if errors:
            raise PublishError("delivery failed: " + "; ".join(errors[:5]))


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def to_raw_message(msg: Any) -> RawMessage:
    """A confluent-kafka message as a RawMessage."""
    _, ts = msg.timestamp()
    return RawMessage(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple((k, v if v is not None else b"") for k, v in (msg.headers() or [])),
        timestamp_ms=ts,
    )


def watermarks(consumer: Any, topic: str, partition: int, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying while the broker says it is not ready yet (a topic
    just created has no leader for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, CKafkaError) and (error.retriable() or error.code() in _NOT_READY)
            if not retriable or time.monotonic() > deadline:
                raise KafkaError(f"cannot read the offsets of {topic}[{partition}]: {exc}") from exc
            time.sleep(0.2)


def _reader(bootstrap_servers: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap_servers,
        "group.id": "samtuner-reader",  # never commits: assign() + no offset storage
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.message.max.bytes": 17 * 1024 * 1024,
    })


def _read_ranges(consumer: Consumer, topic: str, ranges: Mapping[int, tuple[int, int]],
                 timeout_s: float) -> Iterator[RawMessage]:
    """The messages of ``topic`` with ``start <= offset < end``, per partition: ``{partition: (start, end)}``."""
    ends = {p: end for p, (start, end) in ranges.items() if end > start}
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in ends])
    while ends:
        msg = consumer.poll(timeout_s)
        if msg is None:
            raise KafkaError(f"timed out reading {topic}; partitions left: {sorted(ends)}")
        error = msg.error()
        if error is not None:
            if error.code() == CKafkaError._PARTITION_EOF:
                continue
            raise KafkaError(f"reading {topic}: {error.str()}")
        p, offset = msg.partition() or 0, msg.offset() or 0
        if p not in ends:
            continue
        if offset < ends[p]:
            yield to_raw_message(msg)
        if offset + 1 >= ends[p]:
            del ends[p]


def read_topic(bootstrap_servers: str, topic: str, timeout_s: float = 30.0,
               partitions: Collection[int] | None = None) -> Iterator[RawMessage]:
    """Every message of ``topic`` (or of some of its ``partitions``) from the beginning up to the high
    watermarks at call time."""
    consumer = _reader(bootstrap_servers)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaError(f"cannot read metadata of {topic}: {exc}") from exc
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise KafkaError(f"topic {topic} does not exist")
        ranges = {p: watermarks(consumer, topic, p, timeout_s) for p in tmeta.partitions
                  if partitions is None or p in partitions}
        yield from _read_ranges(consumer, topic, ranges, timeout_s)
    finally:
        consumer.close()


def read_range(bootstrap_servers: str, topic: str, partition: int, start: int, end: int,
               timeout_s: float = 30.0) -> list[RawMessage]:
    """The messages of ``topic[partition]`` with ``start <= offset < end``, straight from the log.

    Offsets with no message (transaction markers, records deleted by retention) are simply absent."""
    consumer = _reader(bootstrap_servers)
    try:
        low, high = watermarks(consumer, topic, partition, timeout_s)
        return list(_read_ranges(consumer, topic, {partition: (max(low, start), min(high, end))}, timeout_s))
    except KafkaException as exc:
        raise KafkaError(f"could not read {topic}[{partition}] offsets {start}..{end - 1}: {exc}") from exc
    finally:
        consumer.close()


def topic_counts(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> int:
    """Messages currently in ``topic`` (high - low watermark summed over partitions)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "samtuner-reader"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaError(f"topic {topic} does not exist")
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            total += high - low
        return total
    except KafkaException as exc:
        raise KafkaError(f"cannot read watermarks of {topic}: {exc}") from exc
    finally:
        consumer.close()


def publish_command(publisher: EventPublisher, topic: str, command: Command) -> None:
    """Send a command to the control topic (keyed by its user id)."""
    key, value, headers = encode_command(command)
    publisher.publish_raw(topic, key, value, headers)


