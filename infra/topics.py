"""Idempotent topic creation from the declared list in :mod:`schemas.topics`."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.errors import KafkaCallError
from infra.kafka import check_reachable, client_config, describe
from schemas.config import KafkaSettings
from schemas.topics import ALL, TopicSpec


def topic_config(spec: TopicSpec) -> dict[str, str]:
    cfg = {
        "retention.ms": str(spec.retention_ms),
        "max.message.bytes": str(spec.max_message_bytes),
    }
    if spec.compacted:
        cfg["cleanup.policy"] = "compact"
        cfg["min.cleanable.dirty.ratio"] = "0.1"
        cfg["segment.ms"] = str(60 * 60 * 1000)
    else:
        cfg["cleanup.policy"] = "delete"
    return cfg


def ensure_topics(settings: KafkaSettings, specs: tuple[TopicSpec, ...] = ALL, timeout_s: float = 30.0) -> list[str]:
    """Create the declared topics that are missing; returns the names it created."""
    check_reachable(settings)
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise KafkaCallError(f"cannot list topics on {describe(settings)}: {exc}") from exc
    wanted = [
        NewTopic(
            spec.name(settings.topic_prefix),
            num_partitions=spec.partitions or settings.partitions,
            replication_factor=settings.replication_factor,
            config=topic_config(spec),
        )
        for spec in specs
        if spec.name(settings.topic_prefix) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "code", lambda: None)() == 36:  # TOPIC_ALREADY_EXISTS
                continue
            raise KafkaCallError(f"cannot create topic {name}: {exc}") from exc
    return created
