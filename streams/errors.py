"""Errors of the stream processors.

StreamsError
├── JournalFormatError    the decider's state table was written by another version of its form
└── RebuildError          ``samtuner projections rebuild`` failed (the live tables are as they were)
    └── UnknownProjection a ``--table`` that is not a projection table (the message lists them)
"""

from __future__ import annotations


class StreamsError(Exception):
    """Base of every error raised by :mod:`streams`."""


class JournalFormatError(StreamsError):
    def __init__(self, partition: int, found: int, expected: int) -> None:
        super().__init__(
            f"partition {partition}: the decider's state is in form {found}, this version reads form "
            f"{expected}; run the version that wrote it, or delete the changelog topic "
            "'<app_id>-decider-journal-changelog' and the consumer group '<app_id>' to decide "
            "the whole log again"
        )
        self.partition = partition
        self.found = found
        self.expected = expected


class RebuildError(StreamsError):
    pass


class UnknownProjection(RebuildError):
    pass
