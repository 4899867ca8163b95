"""Errors of the stream processors.

    StreamsError
    ├── DeadLetterError       one message cannot be processed; it goes to the dead-letter topic
    ├── ProjectionError       writing a projection failed after retries (the batch is not acked)
    └── RebuildError          ``samtuner projections rebuild`` failed (the live tables are as they were)
        └── UnknownProjection a ``--table`` that is not a projection table (the message lists them)
"""

from __future__ import annotations


class StreamsError(Exception):
    """Base of every error raised by :mod:`streams`."""


class DeadLetterError(StreamsError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ProjectionError(StreamsError):
    pass


class RebuildError(StreamsError):
    pass


class UnknownProjection(RebuildError):
    pass
