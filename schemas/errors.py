"""Errors of the contract layer.

SchemaError
├── EventDecodeError      bytes on a topic are not a known, valid event
├── ConfigError           samtuner.yaml is unreadable or invalid (names the bad keys)
└── AnalyticsError        an analytic's parameters are invalid (a time that does not parse, an empty period)
    └── UnknownAnalytic   no analytic of that name in the catalogue (names the known ones)
"""

from __future__ import annotations


class SchemaError(Exception):
    """Base of every error raised by :mod:`schemas`."""


class EventDecodeError(SchemaError):
    """A message's bytes are not a valid event; ``reason`` is a stable code for dead letters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(SchemaError):
    """The configuration is invalid; the message names every offending key."""


class AnalyticsError(SchemaError):
    """The parameters of an analytic are invalid; the message says which and what is accepted."""


class UnknownAnalytic(AnalyticsError):
    """No analytic of that name; the message lists the catalogue."""
