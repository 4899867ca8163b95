"""Replay fixtures: one JSON object per line, ``{"topic", "key", "value", "headers", "timestamp"}``.

``value`` is an object for a well-formed event and a string for raw bytes (sent as is, UTF-8;
``value_b64`` carries bytes that are not UTF-8). Topic names are the base names (``sam.feedback.v1``);
a topic prefix is applied when publishing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.kafka import EventPublisher, RawMessage
from schemas.events import FeedbackType


class FixtureError(ValueError):
    pass


@dataclass(frozen=True)
class FixtureLine:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int | None


def parse_line(raw: dict[str, Any], where: str) -> FixtureLine:
    if not isinstance(raw, dict) or "topic" not in raw:
        raise FixtureError(f"{where}: a fixture line is an object with at least 'topic'")
    value: bytes | None
    if "value_b64" in raw:
        value = base64.b64decode(raw["value_b64"])
    elif raw.get("value") is None:
        value = None
    elif isinstance(raw["value"], str):
        value = raw["value"].encode("utf-8")
    else:
        value = json.dumps(raw["value"], ensure_ascii=False).encode("utf-8")
    key = raw.get("key")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise FixtureError(f"{where}: 'headers' must be an object")
    return FixtureLine(
        topic=str(raw["topic"]),
        key=key.encode("utf-8") if isinstance(key, str) else None,
        value=value,
        headers=tuple((str(k), str(v).encode("utf-8")) for k, v in headers.items()),
        timestamp_ms=int(raw["timestamp"]) if raw.get("timestamp") is not None else None,
    )


def read_fixture(path: Path) -> Iterator[FixtureLine]:
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FixtureError(f"{path}:{number}: not JSON: {exc}") from exc
            yield parse_line(raw, f"{path}:{number}")


def replay(
    lines: Iterable[FixtureLine], publisher: EventPublisher, topic_prefix: str = "", keep_timestamps: bool = True
) -> int:
    """Publish fixture lines in order; returns how many. Call ``publisher.flush()`` to wait for acks."""
    count = 0
    for line in lines:
        publisher.publish_raw(
            f"{topic_prefix}{line.topic}",
            line.key,
            line.value,
            line.headers,
            line.timestamp_ms if keep_timestamps else None,
        )
        count += 1
    return count


def record_line(msg: RawMessage, topic_prefix: str = "") -> dict[str, Any]:
    """A consumed message as a fixture line (the inverse of :func:`parse_line`)."""
    topic = msg.topic[len(topic_prefix) :] if topic_prefix and msg.topic.startswith(topic_prefix) else msg.topic
    out: dict[str, Any] = {"topic": topic, "key": msg.key.decode("utf-8", errors="replace") if msg.key else None}
    if msg.value is None:
        out["value"] = None
    else:
        try:
            text = msg.value.decode("utf-8")
        except UnicodeDecodeError:
            out["value_b64"] = base64.b64encode(msg.value).decode()
        else:
            try:
                parsed = json.loads(text)
                out["value"] = parsed if isinstance(parsed, dict) else text
            except json.JSONDecodeError:
                out["value"] = text
    out["headers"] = {k: v.decode("utf-8", errors="replace") for k, v in msg.headers}
    out["timestamp"] = msg.timestamp_ms
    return out


def feedback_line(
    user_id: str,
    feedback_id: str,
    prompt: str,
    original: str,
    corrected: str | None,
    occurred_at: Any,
    feedback_type: FeedbackType = "correction",
    confidence: float = 0.95,
    context: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A fixture line holding a well-formed FeedbackReceived (ids derived as the publisher derives them)."""
    from schemas.events import FeedbackReceived
    from schemas.ids import feedback_event_id

    eid = feedback_event_id(user_id, feedback_id)
    event = FeedbackReceived(
        event_id=eid,
        occurred_at=occurred_at,
        user_id=user_id,
        correlation_id=eid,
        feedback_id=feedback_id,
        feedback_type=feedback_type,
        prompt=prompt,
        original_response=original,
        corrected_response=corrected,
        confidence_score=confidence,
        context=context or {},
    )
    return {
        "topic": "sam.feedback.v1",
        "key": user_id,
        "value": json.loads(event.model_dump_json()),
        "headers": {},
        "timestamp": int(event.occurred_at.timestamp() * 1000),
    }
