"""Errors of the stream processors.

StreamsError
├── JournalFormatError    the decider's state table was written by another version of its form
├── GuardNotInstalled     Faust does not resolve the decider's broker scheme to its guarded transport
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


class GuardNotInstalled(StreamsError):
    def __init__(self, scheme: str, found: object) -> None:
        super().__init__(
            f"Faust resolves the {scheme}:// broker scheme to {found!r}, not the decider's guarded transport: "
            "the project's 'faust.transports' entry point is not installed (run: pip install --no-deps -e .)"
        )


class RebuildError(StreamsError):
    pass


class UnknownProjection(RebuildError):
    pass
