"""Stream processors: feedback -> validated pairs -> ClickHouse projections and training requests."""

from streams.decide import DecideSettings, Decision, Lookups, decide_command, decide_feedback
from streams.errors import DeadLetterError, ProjectionError, StreamsError
from streams.projector import ClickHouseSink, Projector

__all__ = [
    "ClickHouseSink",
    "DeadLetterError",
    "DecideSettings",
    "Decision",
    "Lookups",
    "ProjectionError",
    "Projector",
    "StreamsError",
    "decide_command",
    "decide_feedback",
]
