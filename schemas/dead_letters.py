"""The dead-letter contract: the original bytes, with headers that say what failed, where and why.

Every role that dead-letters writes these headers; the projector's ``dead_letters`` table reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

STAGE = "dlq.stage"
REASON = "dlq.reason"
ERROR = "dlq.error"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
FAILED_AT = "dlq.failed_at"
MAX_ERROR_CHARS = 4000


class SourceMessage(Protocol):
    """What a dead letter needs of the message it replaces (``infra.kafka.RawMessage`` has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]: ...


def dead_letter_headers(msg: SourceMessage, stage: str, reason: str, error: str) -> list[tuple[str, bytes]]:
    """The message's own headers, then what failed (``stage``), why (``reason``, ``error``) and where."""
    return [
        *msg.headers,
        (STAGE, stage.encode()),
        (REASON, reason.encode()),
        (ERROR, error[:MAX_ERROR_CHARS].encode("utf-8", errors="replace")),
        (SOURCE_TOPIC, msg.topic.encode()),
        (SOURCE_PARTITION, str(msg.partition).encode()),
        (SOURCE_OFFSET, str(msg.offset).encode()),
        (FAILED_AT, datetime.now(UTC).isoformat().encode()),
    ]


def headers_dict(headers: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    return {k: v.decode("utf-8", errors="replace") for k, v in headers}
