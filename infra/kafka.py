"""Kafka at the edge: client settings (security included), an idempotent event publisher, and
small consumer helpers.

Every Kafka client of the project gets its settings from :func:`client_config` (confluent-kafka:
producers, consumers, the admin client, the replay and record tools) or :func:`aiokafka_auth`
(Faust and aiokafka), so the security settings of ``kafka.security`` reach all of them. librdkafka's
own log lines go to the ``samtuner.kafka.client`` logger at DEBUG: failures are reported by our
code, once, with their cause (:func:`check_reachable`), never as raw client lines on the terminal.

Producers use ``acks=all`` with idempotence, and the murmur2 partitioner (Java's and aiokafka's
default), so every producer in the system puts a user's events in the same partition. When a
delivery fails, :func:`replication_shortfall` looks at the metadata for the cause librdkafka hides
behind "message timed out" (it retries NOT_ENOUGH_REPLICAS until the message times out): partitions
with fewer in-sync, reachable replicas than ``min.insync.replicas``; that failure is raised as
:class:`NotEnoughReplicas`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as CKafkaError

from infra.credentials import read_secret
from infra.errors import KafkaCallError, KafkaUnreachable, NotEnoughReplicas, PublishError
from schemas.codec import decode, encode_command, encode_headers, encode_key, encode_value
from schemas.commands import Command
from schemas.config import KafkaSettings
from schemas.errors import EventDecodeError
from schemas.events import Event
from schemas.topics import CLIENT_MAX_BYTES, Topics

# A bootstrap string is a PLAINTEXT connection (tests, benchmarks); settings carry the security too.
Connection = KafkaSettings | str

_CLIENT_LOG = logging.getLogger("samtuner.kafka.client")


class _QuietClientLog(logging.LoggerAdapter[logging.Logger]):
    """librdkafka calls ``log(level, fmt, fac, name, text)``; its lines go to our logger at DEBUG only."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


CLIENT_LOGGER = _QuietClientLog(_CLIENT_LOG, {})

# librdkafka errors after which retrying cannot help: the broker refused us.
_REFUSED = frozenset(
    {
        CKafkaError._AUTHENTICATION,
        CKafkaError._SSL,
        CKafkaError.SASL_AUTHENTICATION_FAILED,
        CKafkaError.TOPIC_AUTHORIZATION_FAILED,
        CKafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


def settings_of(connection: Connection) -> KafkaSettings:
    return connection if isinstance(connection, KafkaSettings) else KafkaSettings(bootstrap_servers=connection)


def kafka_password(kafka: KafkaSettings) -> str | None:
    sec = kafka.security
    return read_secret(sec.password_env, sec.password_file, f"kafka.security (user {sec.username})")


def security_config(kafka: KafkaSettings) -> dict[str, Any]:
    """The confluent-kafka (librdkafka) settings for ``kafka.security``; the password is read now."""
    sec = kafka.security
    conf: dict[str, Any] = {"security.protocol": sec.protocol}
    if sec.sasl:
        conf.update(
            {
                "sasl.mechanism": sec.sasl_mechanism,
                "sasl.username": sec.username,
                "sasl.password": kafka_password(kafka),
            }
        )
    if sec.tls:
        conf.update(
            {
                k: v
                for k, v in (
                    ("ssl.ca.location", sec.ssl_ca),
                    ("ssl.certificate.location", sec.ssl_cert),
                    ("ssl.key.location", sec.ssl_key),
                )
                if v
            }
        )
    return conf


def client_config(connection: Connection, **extra: Any) -> dict[str, Any]:
    """Settings for any confluent-kafka client: bootstrap, security, and librdkafka's lines routed to
    our logger (at DEBUG), plus ``extra``."""
    kafka = settings_of(connection)
    return {"bootstrap.servers": kafka.bootstrap_servers, **security_config(kafka), "logger": CLIENT_LOGGER, **extra}


def aiokafka_auth(kafka: KafkaSettings) -> dict[str, Any]:
    """The same security for aiokafka (and Faust, which passes these through): keyword arguments."""
    import ssl

    sec = kafka.security
    out: dict[str, Any] = {"security_protocol": sec.protocol}
    if sec.sasl:
        out.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.username,
            sasl_plain_password=kafka_password(kafka),
        )
    if sec.tls:
        context = ssl.create_default_context(cafile=sec.ssl_ca)
        if sec.ssl_cert and sec.ssl_key:
            context.load_cert_chain(sec.ssl_cert, sec.ssl_key)
        out["ssl_context"] = context
    return out


def describe(kafka: KafkaSettings) -> str:
    """Where and as whom: 'Kafka at 127.0.0.1:9092 (SASL_PLAINTEXT, SCRAM-SHA-512 as decider)'."""
    sec = kafka.security
    how = sec.protocol + (f", {sec.sasl_mechanism} as {sec.username}" if sec.sasl else "")
    return f"Kafka at {kafka.bootstrap_servers} ({how})"


def unreachable_message(kafka: KafkaSettings, errors: Sequence[CKafkaError], fallback: str) -> str:
    """One line that names the address, the cause and what to do."""
    sec = kafka.security
    refused = next((e for e in errors if e.code() in _REFUSED), None)
    if refused is not None:
        where = f"environment variable {sec.password_env}" if sec.password_env else f"file {sec.password_file}"
        if refused.code() == CKafkaError._SSL:
            return f"{describe(kafka)}: the TLS handshake failed: {refused.str()}; check kafka.security.ssl_*"
        return (
            f"{describe(kafka)} refused our credentials: {refused.str()}; check kafka.security.username and "
            f"the password in the {where}"
            if sec.sasl
            else f"{describe(kafka)} refused us: {refused.str()}"
        )
    # The first error the client reported says most ("Connect to ipv4#127.0.0.1:9092 failed: Connection
    # refused"); the exception at the end only says that metadata could not be read.
    cause = errors[0].str() if errors else fallback
    return (
        f"cannot reach {describe(kafka)}: {cause}; start the local broker with `samtuner kafka up` "
        "(or set kafka.bootstrap_servers)"
    )


def check_reachable(connection: Connection, timeout_s: float | None = None) -> None:
    """Fail in one line (:class:`KafkaUnreachable`) unless a broker answers within the timeout.

    Refused credentials and TLS failures fail at once; an unreachable broker after the timeout."""
    from confluent_kafka.admin import AdminClient

    kafka = settings_of(connection)
    errors: list[CKafkaError] = []
    admin = AdminClient(client_config(kafka, error_cb=errors.append, **{"socket.connection.setup.timeout.ms": 3000}))
    started = time.monotonic()
    limit = timeout_s if timeout_s is not None else kafka.connect_timeout_s
    last = "no answer"
    while True:
        try:
            admin.list_topics(timeout=0.5)
            return
        except KafkaException as exc:
            last = str(exc)
        elapsed = time.monotonic() - started
        # Refused credentials: at once. Connections refused or timing out: after the limit. Connected
        # but no answer yet (a busy broker): a while longer.
        if any(e.code() in _REFUSED for e in errors) or elapsed > (limit if errors else 3 * limit):
            raise KafkaUnreachable(unreachable_message(kafka, errors, last))
        admin.poll(0.1)


# Errors a topic that was just created answers with until its partitions have leaders.
_NOT_READY = frozenset(
    {
        CKafkaError.NOT_LEADER_FOR_PARTITION,
        CKafkaError.LEADER_NOT_AVAILABLE,
        CKafkaError.UNKNOWN_TOPIC_OR_PART,
        CKafkaError._TIMED_OUT,
    }
)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "partitioner": "murmur2_random",
    "message.max.bytes": CLIENT_MAX_BYTES,
    "compression.type": "lz4",
}


@dataclass(frozen=True)
class PartitionReplicas:
    """One partition as the metadata shows it: its replicas and which of them are in sync."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def shortfall_lines(
    partitions: Sequence[PartitionReplicas], min_isr: Mapping[str, int], unreachable: Mapping[int, str]
) -> list[str]:
    """One line per topic whose partitions cannot take an acks=all write: fewer in-sync replicas on
    brokers that answer than the topic's ``min.insync.replicas``. ``unreachable``: broker id -> address."""
    short: dict[str, list[PartitionReplicas]] = {}
    for p in partitions:
        usable = [r for r in p.isr if r not in unreachable]
        if len(usable) < min_isr.get(p.topic, 1):
            short.setdefault(p.topic, []).append(p)
    lines = []
    for topic, parts in sorted(short.items()):
        worst = parts[0]
        down = sorted(set(worst.isr) & set(unreachable))
        isr = f"ISR {list(worst.isr)}" + (f", of which broker(s) {down} do not answer" if down else "")
        lines.append(
            f"{topic} partition(s) {sorted(p.partition for p in parts)}: {isr}, "
            f"{len(worst.isr) - len(down)} in-sync replica(s) of {len(worst.replicas)}, "
            f"below min.insync.replicas={min_isr.get(topic, 1)}"
        )
    return lines


def _answers(address: str, timeout_s: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def replication_shortfall(connection: Connection, topics: Collection[str], timeout_s: float = 3.0) -> str | None:
    """Why acks=all writes to ``topics`` cannot be acknowledged now (one line), or None when the
    metadata shows no such cause or cannot be read."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(client_config(connection, **{"socket.connection.setup.timeout.ms": 2000}))
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return None
    # A broker killed while the quorum is lost stays in the metadata (nobody fences it): ask it directly.
    unreachable = {b.id: f"{b.host}:{b.port}" for b in meta.brokers.values() if not _answers(f"{b.host}:{b.port}")}
    partitions = [
        PartitionReplicas(t, p.id, tuple(p.replicas), tuple(p.isrs))
        for t in topics
        if (tm := meta.topics.get(t)) is not None and tm.error is None
        for p in tm.partitions.values()
    ]
    min_isr: dict[str, int] = {}
    for resource, future in admin.describe_configs(
        [ConfigResource("TOPIC", t) for t in topics], request_timeout=timeout_s
    ).items():
        try:
            entry = future.result().get("min.insync.replicas")
        except KafkaException:
            continue
        if entry is not None and entry.value is not None:
            min_isr[resource.name] = int(entry.value)
    lines = shortfall_lines(partitions, min_isr, unreachable)
    if not lines:
        return None
    return (
        "NOT_ENOUGH_REPLICAS: " + "; ".join(lines) + ". Start the stopped brokers; the unacknowledged messages "
        "stay queued and are sent when the partitions have enough in-sync replicas again"
    )


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

    def __init__(self, connection: Connection, client_id: str = "samtuner", **overrides: Any) -> None:
        self._connection = connection
        self._producer = Producer(
            client_config(connection, **{"client.id": client_id, **PRODUCER_DEFAULTS, **overrides})
        )
        self._errors: list[str] = []
        self._failed_topics: set[str] = set()
        self._sent_topics: set[str] = set()  # since the last flush: where an undelivered message may be
        self._lock = threading.Lock()

    def _on_delivery(self, err: CKafkaError | None, msg: Any) -> None:
        if err is not None:
            hint = ""
            if err.code() == CKafkaError.INVALID_RECORD:
                hint = " (a timestamp more than an hour in the future is refused by the broker)"
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err.str()}{hint}")
                self._failed_topics.add(msg.topic())

    def publish(self, topic: str, event: Event) -> None:
        self.publish_raw(topic, encode_key(event), encode_value(event), encode_headers(event))

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {
            "key": key,
            "value": value,
            "headers": list(headers or []),
            "on_delivery": self._on_delivery,
        }
        self._sent_topics.add(topic)
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if partition is not None:  # a table's changelog: the partition is the source event's, not the key's
            kwargs["partition"] = partition
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
            failed, self._failed_topics = self._failed_topics, set()
        sent, self._sent_topics = self._sent_topics, set()  # for the diagnosis only: a race costs a name
        if not remaining and not errors:
            return
        message = (
            f"{remaining} message(s) not delivered within {timeout_s}s"
            if remaining
            else "delivery failed: " + "; ".join(errors[:5])
        )
        if remaining:
            self._sent_topics = sent  # still queued: a later flush may deliver them
        cause = replication_shortfall(self._connection, sorted(failed | sent if remaining else failed))
        if cause is not None:
            raise NotEnoughReplicas(f"{message}: {cause}")
        raise PublishError(message)


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
                raise KafkaCallError(f"cannot read the offsets of {topic}[{partition}]: {exc}") from exc
            time.sleep(0.2)


READER_GROUP = "samtuner-reader"  # never joined, never committed: readers assign() partitions


def consumer_config(connection: Connection, group_id: str, **extra: Any) -> dict[str, Any]:
    """What every consumer of ours starts from: ``client_config``, its group, no auto-commit (a role
    commits what it has handled, or nothing), and fetches sized for the largest message a topic
    accepts (``schemas.topics``); ``extra`` adds or overrides librdkafka settings."""
    return client_config(
        connection,
        **{"group.id": group_id, "enable.auto.commit": False, "fetch.message.max.bytes": CLIENT_MAX_BYTES, **extra},
    )


def new_consumer(connection: Connection, group_id: str, **extra: Any) -> Consumer:
    """A confluent-kafka consumer with ``consumer_config``: the one way a role gets one."""
    return Consumer(consumer_config(connection, group_id, **extra))


def new_reader(connection: Connection, group_id: str = READER_GROUP, **extra: Any) -> Consumer:
    """A consumer that ``assign()``s partitions and never joins its group or stores an offset."""
    return new_consumer(connection, group_id, **{"enable.auto.offset.store": False, **extra})


def event_or_none(value: bytes | None) -> Event | None:
    """The event in a message's value, or None where it is not one (its dead letter is the decider's
    or the projector's to write, not a reader's)."""
    try:
        return decode(value)
    except EventDecodeError:
        return None


def events_in(messages: Iterable[RawMessage]) -> Iterator[Event]:
    """The events among ``messages``, in order; what does not decode is skipped (see ``event_or_none``)."""
    for msg in messages:
        event = event_or_none(msg.value)
        if event is not None:
            yield event


def _read_ranges(
    consumer: Consumer, topic: str, ranges: Mapping[int, tuple[int, int]], timeout_s: float
) -> Iterator[RawMessage]:
    """The messages of ``topic`` with ``start <= offset < end``, per partition: ``{partition: (start, end)}``."""
    ends = {p: end for p, (start, end) in ranges.items() if end > start}
    if not ends:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in ends])
    while ends:
        msg = consumer.poll(timeout_s)
        if msg is None:
            raise KafkaCallError(f"timed out reading {topic}; partitions left: {sorted(ends)}")
        error = msg.error()
        if error is not None:
            if error.code() == CKafkaError._PARTITION_EOF:
                continue
            raise KafkaCallError(f"reading {topic}: {error.str()}")
        p, offset = msg.partition() or 0, msg.offset() or 0
        if p not in ends:
            continue
        if offset < ends[p]:
            yield to_raw_message(msg)
        if offset + 1 >= ends[p]:
            del ends[p]


def read_topic(
    connection: Connection, topic: str, timeout_s: float = 30.0, partitions: Collection[int] | None = None
) -> Iterator[RawMessage]:
    """Every message of ``topic`` (or of some of its ``partitions``) from the beginning up to the high
    watermarks at call time."""
    consumer = new_reader(connection)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise KafkaCallError(f"cannot read metadata of {topic}: {exc}") from exc
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise KafkaCallError(f"topic {topic} does not exist")
        ranges = {
            p: watermarks(consumer, topic, p, timeout_s)
            for p in tmeta.partitions
            if partitions is None or p in partitions
        }
        yield from _read_ranges(consumer, topic, ranges, timeout_s)
    finally:
        consumer.close()


def read_range(
    connection: Connection, topic: str, partition: int, start: int, end: int, timeout_s: float = 30.0
) -> list[RawMessage]:
    """The messages of ``topic[partition]`` with ``start <= offset < end``, straight from the log.

    Offsets with no message (transaction markers, records deleted by retention) are simply absent."""
    consumer = new_reader(connection)
    try:
        low, high = watermarks(consumer, topic, partition, timeout_s)
        return list(_read_ranges(consumer, topic, {partition: (max(low, start), min(high, end))}, timeout_s))
    except KafkaException as exc:
        raise KafkaCallError(f"could not read {topic}[{partition}] offsets {start}..{end - 1}: {exc}") from exc
    finally:
        consumer.close()


def resume_offset(connection: Connection, group_id: str, topic: str, partition: int, timeout_s: float = 30.0) -> int:
    """Where ``group_id`` resumes ``topic[partition]``: its committed offset, or the log's start when it
    has committed none (the group's offset reset is ``earliest``). Asks the broker; joins no group."""
    consumer = new_reader(connection, group_id, **{"enable.auto.commit": False})
    try:
        (committed,) = consumer.committed([TopicPartition(topic, partition)], timeout=timeout_s)
        if committed.error is not None:
            raise KafkaException(committed.error)
        if committed.offset >= 0:
            return int(committed.offset)
        return watermarks(consumer, topic, partition, timeout_s)[0]
    except KafkaException as exc:
        raise KafkaCallError(f"cannot read where {group_id} resumes {topic}[{partition}]: {exc}") from exc
    finally:
        consumer.close()


def topic_counts(connection: Connection, topic: str, timeout_s: float = 10.0) -> int:
    """Messages currently in ``topic`` (high - low watermark summed over partitions)."""
    consumer = new_reader(connection)
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaCallError(f"topic {topic} does not exist")
        total = 0
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            total += high - low
        return total
    except KafkaException as exc:
        raise KafkaCallError(f"cannot read watermarks of {topic}: {exc}") from exc
    finally:
        consumer.close()


def publish_command(publisher: EventPublisher, topic: str, command: Command) -> None:
    """Send a command to the control topic (keyed by its user id)."""
    key, value, headers = encode_command(command)
    publisher.publish_raw(topic, key, value, headers)


def send_command(
    connection: Connection, command: Command, client_id: str = "samtuner-cli", timeout_s: float = 30.0
) -> None:
    """One command onto the control topic, acknowledged by the broker before this returns (a
    :class:`PublishError` or :class:`KafkaUnreachable` otherwise)."""
    publisher = KafkaEventPublisher(connection, client_id=client_id)
    publish_command(publisher, Topics(settings_of(connection).topic_prefix).control, command)
    publisher.flush(timeout_s=timeout_s)
