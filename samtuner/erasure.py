"""``samtuner users erase``: send EraseUser and follow it to the UserErased report."""

from __future__ import annotations

import time
import uuid

from infra.kafka import event_or_none, new_reader, publish_command
from samtuner.training import end_offsets
from schemas.commands import EraseUser
from schemas.config import Config
from schemas.events import UserErased
from schemas.topics import Topics


def erase_and_follow(cfg: Config, user_id: str, timeout_s: float) -> tuple[uuid.UUID, UserErased | None]:
    """Send ``EraseUser``; returns its command id and the ``UserErased`` report (None if none came in
    ``timeout_s``: the decider and the projector must be running)."""
    from infra.kafka import KafkaEventPublisher

    topics = Topics(cfg.kafka.topic_prefix)
    consumer = new_reader(cfg.kafka, "samtuner-cli")
    try:
        consumer.assign(end_offsets(cfg, topics.pairs))  # from the end, before the command exists
        command = EraseUser(user_id=user_id, issued_by="cli")
        publisher = KafkaEventPublisher(cfg.kafka, client_id="samtuner-cli")
        publish_command(publisher, topics.control, command)
        publisher.flush()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            event = event_or_none(msg.value())
            if isinstance(event, UserErased) and event.command_id == command.command_id:
                return command.command_id, event
        return command.command_id, None
    finally:
        consumer.close()
