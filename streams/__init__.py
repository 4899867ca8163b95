"""Stream processors: feedback -> validated pairs -> ClickHouse projections and training requests.

Two roles, two packages: `streams.decider` and `streams.projector`. Nothing is imported here, so a
decider does not load the projector's ClickHouse client (and the other way round).
"""
