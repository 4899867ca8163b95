"""The decider's state writes: produced to the state table's changelog by our producer, then applied
to the table's local store.

A Faust table sends one changelog message per key set (``Table.on_key_set``): a ``FutureMessage``,
an asyncio future, a hop through Faust's producer buffer and aiokafka's Python record builder each,
and the buffer makes the stream wait (``ProducerBuffer.wait_until_ebb``) once more than 100 are
pending. A batch of the decider sets about 0.7 keys per event (``make bench-decider``:
``journal_writes_per_event``), so that path was a large share of the decider's cost under Faust. Here
a batch's writes go to the same changelog topic through the confluent-kafka producer the outputs use
(the bytes a table write makes: key and value through the table's own codecs, ``Table.key_serializer``
and ``value_serializer``, both JSON; a null value for a tombstone, as ``Table.on_key_del`` sends), each
to its source partition's changelog partition, and are flushed; only then are they applied to the
table's store (``Table.data``), as a restore from the changelog would apply them. The same bytes keep
compaction working across an upgrade: a key written either way is one key to the log cleaner.

What stays the same: the writes of a partition land in its changelog partition in the order
``DeciderMemory.drain_writes`` gives (one producer, idempotent, so order holds within a partition),
the head last; they land after the batch's outputs were acked (the agent flushes the outputs first);
Faust restores the table from the same topic. What is stricter: the state of a batch is durable
before Faust acks its events (Faust used to send the changelog asynchronously and flush it only
before it commits). And the table's partition no longer comes from Faust's current event, so the
agent needs no private Faust name for it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from faust.serializers import codecs

from streams.decider.journal import Write, apply_writes


class ChangelogPublisher(Protocol):
    """What the writer needs of a producer (``infra.kafka.KafkaEventPublisher``; tests pass a fake)."""

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


def encode_write(write: Write, key_codec: str = "json", value_codec: str = "json") -> tuple[bytes, bytes | None]:
    """A state write as the changelog message (key, value) a Faust table write makes of it; None for a
    tombstone."""
    key, value = write
    return codecs.dumps(key_codec, key), None if value is None else codecs.dumps(value_codec, value)


class TableChangelog:
    """Writes a batch's state to a Faust table: ``send`` (changelog, durable) then ``apply`` (local store).

    ``send`` blocks until the broker acked every write (run it off the event loop); ``apply`` only
    touches memory, on the event loop, where Faust touches the store too."""

    def __init__(
        self,
        topic: str,
        store: MutableMapping[str, Any],
        publisher: ChangelogPublisher,
        key_codec: str = "json",
        value_codec: str = "json",
    ) -> None:
        self.topic = topic
        self.store = store
        self.publisher = publisher
        self.key_codec = key_codec
        self.value_codec = value_codec

    def send(self, journal: Mapping[int, list[Write]]) -> int:
        """Produce every partition's writes to its changelog partition, in order, and wait for the acks
        (``PublishError`` or ``NotEnoughReplicas`` when one fails); returns how many were sent."""
        sent = 0
        for partition, writes in journal.items():
            for write in writes:
                key, value = encode_write(write, self.key_codec, self.value_codec)
                self.publisher.publish_raw(self.topic, key, value, partition=partition)
                sent += 1
        if sent:
            self.publisher.flush()
        return sent

    def apply(self, journal: Mapping[int, list[Write]]) -> None:
        """Apply the writes to the local store (after ``send``): what a restore would read back."""
        for writes in journal.values():
            apply_writes(self.store, writes)
