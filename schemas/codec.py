"""Events to and from Kafka message parts. Keys are the user id, values are JSON, headers describe."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.commands import COMMAND_ADAPTER, Command
from schemas.errors import EventDecodeError
from schemas.events import AnyEvent, Event

_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)

Headers = list[tuple[str, bytes]]
E = TypeVar("E", bound=Event)


def encode_key(event: Event) -> bytes:
    return event.user_id.encode("utf-8")


def encode_value(event: Event) -> bytes:
    # pydantic-core's bytes as they are: model_dump_json() decodes them to str, and we encoded them back.
    return event.__pydantic_serializer__.to_json(event)


def encode_headers(event: Event) -> Headers:
    event_id = str(event.event_id)
    return [
        ("event_type", str(getattr(event, "event_type", type(event).__name__)).encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("event_id", event_id.encode()),
        # Most events of a chain share the id that started it: one str() less.
        (
            "correlation_id",
            (event_id if event.correlation_id == event.event_id else str(event.correlation_id)).encode(),
        ),
    ]


def decode(value: bytes | None) -> Event:
    """Bytes -> the event they encode, or :class:`EventDecodeError` with a stable reason code."""
    if value is not None:
        try:  # the fast path: pydantic-core parses and validates in one go
            return _ADAPTER.validate_json(value)
        except (ValueError, RecursionError):
            pass  # the slow path below says precisely what is wrong
    if value is None:
        raise EventDecodeError("empty_message", "the message has no value (tombstone?)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventDecodeError("invalid_utf8", str(exc)) from exc
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EventDecodeError("invalid_json", _short(exc)) from exc
    if not isinstance(raw, dict):
        raise EventDecodeError("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    if "event_type" not in raw:
        raise EventDecodeError("missing_event_type", "the object has no 'event_type'")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise EventDecodeError("invalid_event", _describe(exc)) from exc
    except RecursionError as exc:
        raise EventDecodeError("invalid_event", "nested too deeply") from exc


def decode_command(value: bytes | None) -> Command:
    """Bytes on the control topic -> the command they encode, or EventDecodeError."""
    if value is None:
        raise EventDecodeError("empty_message", "the message has no value")
    try:
        return COMMAND_ADAPTER.validate_json(value)
    except ValidationError as exc:
        raise EventDecodeError("invalid_command", _describe(exc)) from exc


def encode_command(command: Command) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of a command for the control topic."""
    headers = [
        ("command_type", str(getattr(command, "command_type", "")).encode()),
        ("command_id", str(command.command_id).encode()),
    ]
    return command.user_id.encode("utf-8"), command.__pydantic_serializer__.to_json(command), headers


def decode_as(value: bytes | None, kind: type[E]) -> E:
    event = decode(value)
    if not isinstance(event, kind):
        raise EventDecodeError("unexpected_event_type", f"expected {kind.__name__}, got {type(event).__name__}")
    return event


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:8]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
