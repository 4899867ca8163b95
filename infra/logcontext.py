"""Which event a log line is about: ``correlation_id`` in a context variable, set by the handler of an
event for as long as it handles it (a thread's or a task's own), added to every record by the
logging set-up (``samtuner/logs.py``), so JSON logs can be followed from feedback to adapter."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

_CURRENT: ContextVar[str | None] = ContextVar("samtuner_correlation_id", default=None)


def current() -> str | None:
    return _CURRENT.get()


def mark(correlation_id: uuid.UUID | str) -> None:
    """Set the id for the rest of the enclosing :func:`correlation` block (once the event is decoded)."""
    _CURRENT.set(str(correlation_id))


@contextlib.contextmanager
def correlation(correlation_id: uuid.UUID | str | None) -> Iterator[None]:
    token = _CURRENT.set(str(correlation_id) if correlation_id is not None else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)
