"""Stream processors: feedback -> validated pairs -> ClickHouse projections and training requests."""

from streams.decider.decisions import DecideSettings, Decision, Lookups, decide_command, decide_feedback
from streams.errors import StreamsError
from streams.projector.projection import ClickHouseSink, Projector

__all__ = [
    "ClickHouseSink",
    "DecideSettings",
    "Decision",
    "Lookups",
    "Projector",
    "StreamsError",
    "decide_command",
    "decide_feedback",
]
