"""Errors of ``samtuner``'s role runner (``samtuner run|streams|trainer|inference``).

SamtunerError
├── StreamsCrashed      the stream worker stopped itself after a crash; exit non-zero to be restarted
└── RoleFailed          a supervised role kept failing and the supervisor gave up on it
"""

from __future__ import annotations


class SamtunerError(RuntimeError):
    """Base of the errors raised by :mod:`samtuner`'s role runner."""


class StreamsCrashed(SamtunerError):
    """The stream worker stopped itself after a crash (see the log); exit non-zero to be restarted."""


class RoleFailed(SamtunerError):
    """A supervised role ended too often; every role was stopped (see the log)."""
