"""Stream processors: feedback -> validated pairs -> ClickHouse projections and training requests."""

from streams.decide import DecideSettings, Decision, decide
from streams.errors import DeadLetterError, ProjectionError, StreamsError
from streams.projector import ClickHouseSink, Projector

__all__ = [
    "ClickHouseSink",
    "DeadLetterError",
    "DecideSettings",
    "Decision",
    "ProjectionError",
    "Projector",
    "StreamsError",
    "decide",
]
