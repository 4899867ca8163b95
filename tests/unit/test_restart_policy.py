"""When a supervised role that ended on its own is started again, and when the supervisor gives up."""

from __future__ import annotations

import signal
import threading

import pytest

from samtuner.errors import RoleFailed
from samtuner.restarts import GiveUp, Restart, RestartHistory, RestartPolicy, after_stop, describe_exit
from samtuner.supervisor import Supervisor, ThreadRole

POLICY = RestartPolicy(first_delay_s=1.0, max_delay_s=8.0, factor=2.0, healthy_after_s=60.0)


def crash_loop(policy: RestartPolicy, times: int, run_s: float = 1.0) -> list[Restart | GiveUp]:
    """A role that ends ``run_s`` after every start, ``times`` times; each restart waits as told."""
    history, now, actions = RestartHistory(), 0.0, []
    for _ in range(times):
        started = now
        now += run_s
        verdict = after_stop(policy, history, started, now)
        history = verdict.history
        actions.append(verdict.action)
        if isinstance(verdict.action, Restart):
            now += verdict.action.delay_s
    return actions


def test_quick_failures_in_a_row_back_off_exponentially_up_to_the_cap() -> None:
    actions = crash_loop(POLICY, 6)
    assert [a.delay_s for a in actions if isinstance(a, Restart)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert [a.attempt for a in actions if isinstance(a, Restart)] == [1, 2, 3, 4, 5, 6]


def test_a_healthy_run_starts_the_backoff_over() -> None:
    history = after_stop(POLICY, RestartHistory(), 0.0, 1.0).history
    history = after_stop(POLICY, history, 2.0, 3.0).history
    assert history.streak == 2
    verdict = after_stop(POLICY, history, 10.0, 10.0 + 61.0)  # it ran for a minute: healthy
    assert verdict.action == Restart(delay_s=1.0, attempt=1)
    assert verdict.history.restarts == 3


def test_without_a_give_up_rule_a_role_is_restarted_forever() -> None:
    actions = crash_loop(POLICY, 50)
    assert all(isinstance(a, Restart) for a in actions)


def test_too_many_stops_within_the_window_give_up_and_say_so() -> None:
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=1.0, give_up_after=3, window_s=100.0)
    actions = crash_loop(policy, 3)
    assert isinstance(actions[0], Restart) and isinstance(actions[1], Restart)
    assert actions[2] == GiveUp("it stopped 3 times within 100s")


def test_stops_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=1.0, give_up_after=3, window_s=100.0)
    # One stop every 60 s: never three within 100 s.
    actions = crash_loop(policy, 20, run_s=59.0)
    assert all(isinstance(a, Restart) for a in actions)


@pytest.mark.parametrize(
    "bad", [dict(first_delay_s=0), dict(first_delay_s=5, max_delay_s=1), dict(factor=0.5), dict(give_up_after=0)]
)
def test_a_policy_that_makes_no_sense_is_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**bad)


def test_an_exit_is_described_by_its_signal_or_code_and_the_reason_given() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3, "the decider made no progress") == "exited with code 3: the decider made no progress"
    assert describe_exit(0) == "exited with code 0 (unasked)"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_thread_role_that_raises_is_restarted_alone_after_its_backoff() -> None:
    stop, clock = threading.Event(), Clock()
    runs: list[str] = []
    healthy_ran = threading.Event()

    def flaky(stop: threading.Event) -> None:
        runs.append("flaky")
        if len(runs) == 1:
            raise RuntimeError("store unreachable")
        stop.wait()

    def steady(stop: threading.Event) -> None:
        healthy_ran.set()
        stop.wait()

    supervisor = Supervisor(stop, clock=clock)
    flaky_role, steady_role = ThreadRole("projector", flaky, stop), ThreadRole("trainer", steady, stop)
    supervisor.add(flaky_role, POLICY)
    supervisor.add(steady_role, POLICY)
    supervisor.start()
    assert flaky_role.thread is not None
    flaky_role.thread.join(5)
    steady_thread = steady_role.thread
    supervisor.check()  # it ended: a restart is due in 1 s
    assert flaky_role.ended() == "raised RuntimeError('store unreachable')" and runs == ["flaky"]
    clock.now = 0.5
    supervisor.check()
    assert runs == ["flaky"]
    clock.now = 1.0
    supervisor.check()
    assert flaky_role.ended() is None and supervisor.restarts() == {"projector": 1, "trainer": 0}
    assert steady_role.thread is steady_thread and healthy_ran.is_set()  # the other role was left alone
    stop.set()
    supervisor.shutdown(timeout_s=5)
    assert flaky_role.thread is not None and not flaky_role.thread.is_alive()


def test_a_thread_role_that_keeps_failing_stops_the_supervisor_naming_the_role() -> None:
    stop, clock = threading.Event(), Clock()
    supervisor = Supervisor(stop, clock=clock)

    def broken(stop: threading.Event) -> None:
        raise RuntimeError("schema mismatch")

    role = ThreadRole("projector", broken, stop)
    supervisor.add(role, RestartPolicy(first_delay_s=1.0, max_delay_s=1.0, give_up_after=2, window_s=60.0))
    supervisor.start()
    assert role.thread is not None
    role.thread.join(5)
    supervisor.check()
    clock.now = 1.0
    supervisor.check()  # restarted
    assert role.thread is not None
    role.thread.join(5)
    clock.now = 2.0
    with pytest.raises(
        RoleFailed,
        match=r"the projector role raised RuntimeError\('schema mismatch'\); "
        r"it stopped 2 times within 60s",
    ):
        supervisor.check()


def test_nothing_is_restarted_once_stop_is_set() -> None:
    stop, clock = threading.Event(), Clock()
    supervisor = Supervisor(stop, clock=clock)

    def wait_for_stop(stop: threading.Event) -> None:
        stop.wait()

    role = ThreadRole("trainer", wait_for_stop, stop)
    supervisor.add(role, POLICY)
    supervisor.start()
    stop.set()
    assert role.thread is not None
    role.thread.join(5)
    clock.now = 100.0
    supervisor.check()
    assert supervisor.restarts() == {"trainer": 0}
