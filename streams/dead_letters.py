"""Dead letters: the original bytes with headers that say what failed, where and why."""

from __future__ import annotations

from datetime import UTC, datetime

from infra.kafka import RawMessage


def dead_letter_headers(msg: RawMessage, stage: str, reason: str, error: str) -> list[tuple[str, bytes]]:
    return [
        *msg.headers,
        ("dlq.stage", stage.encode()),
        ("dlq.reason", reason.encode()),
        ("dlq.error", error[:4000].encode("utf-8", errors="replace")),
        ("dlq.source.topic", msg.topic.encode()),
        ("dlq.source.partition", str(msg.partition).encode()),
        ("dlq.source.offset", str(msg.offset).encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]


def headers_dict(headers: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    return {k: v.decode("utf-8", errors="replace") for k, v in headers}
