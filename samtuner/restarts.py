"""When a supervised role that stopped on its own is started again (pure: the clock is passed in).

The rule, per role:

* the first restart waits ``first_delay_s``; each further one in a row waits ``factor`` times longer,
  up to ``max_delay_s``;
* a run that lasted ``healthy_after_s`` or longer was a healthy one: the next restart starts the
  backoff over (a role that fails once a day never waits long);
* with ``give_up_after`` set, a role that stopped that many times within ``window_s`` is not
  restarted: the supervisor stops the whole process, non-zero, and says why (``None``: never give up).

``samtuner run`` gives the decider process no give-up rule (it is a process of its own: a Kafka
outage must not take the inference node down with it) and the in-process thread roles one (a thread
that keeps failing may have left the process's shared state broken; see ``samtuner/supervisor.py``).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    factor: float = 2.0
    healthy_after_s: float = 60.0
    give_up_after: int | None = None
    window_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"need 0 < first_delay_s ({self.first_delay_s}) <= max_delay_s ({self.max_delay_s})")
        if self.factor < 1:
            raise ValueError(f"factor ({self.factor}) must be >= 1")
        if self.give_up_after is not None and self.give_up_after < 1:
            raise ValueError(f"give_up_after ({self.give_up_after}) must be >= 1 or None")


@dataclass(frozen=True)
class RestartHistory:
    """What the policy remembers of one role: its recent stops and its current run of quick failures."""

    stops: tuple[float, ...] = ()  # when it stopped, within the policy's window
    streak: int = 0  # quick failures in a row (runs shorter than healthy_after_s)
    restarts: int = 0  # restarts so far (for stats)


@dataclass(frozen=True)
class Restart:
    delay_s: float
    attempt: int  # 1 for the first restart of a streak


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class Verdict:
    action: Restart | GiveUp
    history: RestartHistory = field(default_factory=RestartHistory)


def after_stop(policy: RestartPolicy, history: RestartHistory, started_at: float, stopped_at: float) -> Verdict:
    """What to do about a role that ran from ``started_at`` to ``stopped_at`` and stopped unasked."""
    stops = (*(t for t in history.stops if stopped_at - t < policy.window_s), stopped_at)
    healthy = stopped_at - started_at >= policy.healthy_after_s
    streak = 1 if healthy else history.streak + 1
    if policy.give_up_after is not None and len(stops) >= policy.give_up_after:
        return Verdict(
            GiveUp(f"it stopped {len(stops)} times within {policy.window_s:.0f}s"),
            RestartHistory(stops, streak, history.restarts),
        )
    delay = min(policy.max_delay_s, policy.first_delay_s * policy.factor ** (streak - 1))
    return Verdict(Restart(delay, streak), RestartHistory(stops, streak, history.restarts + 1))


def describe_exit(returncode: int, reason: str | None = None) -> str:
    """A child process's end in words: ``killed by SIGKILL``, ``exited with code 3: <reason>``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        said = f"killed by {name}"
    elif returncode == 0:
        said = "exited with code 0 (unasked)"
    else:
        said = f"exited with code {returncode}"
    return f"{said}: {reason}" if reason else said
