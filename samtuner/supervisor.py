"""``samtuner run`` keeps its roles alive without letting one take another down.

* The decider runs as a child process (``samtuner/decider_process.py``): its stall watchdog stops
  its own process, and a crash or ``kill -9`` ends only it. The supervisor starts it again, with the
  backoff of ``samtuner/restarts.py``, and logs why it ended (exit code or signal, and the reason the
  worker gave). The child dies with its parent (``PR_SET_PDEATHSIG``), so a ``kill -9`` of
  ``samtuner run`` leaves no orphan consuming in the group.
* The projector and the trainer stay threads (the projector owns the embedded chDB store, which can
  be open in one process only). A thread that ends unasked is started again alone, with the same
  backoff; if it keeps failing (``THREAD_POLICY``), the supervisor stops the whole process with a
  non-zero exit and a line naming the role: a role failing in a loop inside a shared process may
  have left that process broken, and an outer supervisor (systemd, Kubernetes) restarting all of it
  is then the honest answer.

The supervisor's loop runs in the main thread (which starts every child: ``PR_SET_PDEATHSIG``
follows the thread that forked), until ``stop`` is set.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from samtuner.errors import RoleFailed
from samtuner.restarts import GiveUp, RestartHistory, RestartPolicy, after_stop, describe_exit
from schemas.config import Config

log = logging.getLogger("samtuner.supervisor")

DECIDER_POLICY = RestartPolicy(first_delay_s=1.0, max_delay_s=30.0, healthy_after_s=60.0, give_up_after=None)
THREAD_POLICY = RestartPolicy(
    first_delay_s=1.0, max_delay_s=30.0, healthy_after_s=60.0, give_up_after=5, window_s=600.0
)


class Role(Protocol):
    name: str

    def start(self) -> None: ...

    def ended(self) -> str | None:
        """None while it runs; once it ended, how (in words)."""

    def stop(self, timeout_s: float) -> None: ...


class ThreadRole:
    """A role run by ``target(stop)`` in a thread of this process; each start is a new thread."""

    def __init__(self, name: str, target: Callable[[threading.Event], None], stop: threading.Event) -> None:
        self.name = name
        self.target = target
        self.stop_event = stop
        self.thread: threading.Thread | None = None
        self.cause: str | None = None

    def start(self) -> None:
        self.cause = None
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.target(self.stop_event)
        except Exception as exc:  # the supervisor decides what follows; the traceback is logged once, here
            self.cause = f"raised {exc!r}"
            log.exception("the %s role raised", self.name)

    def ended(self) -> str | None:
        if self.thread is None or self.thread.is_alive():
            return None
        return self.cause or "returned (unasked)"

    def stop(self, timeout_s: float) -> None:
        if self.thread is not None:  # the shared stop event asks it to end
            self.thread.join(timeout=timeout_s)


class DeciderProcess:
    """The decider as ``python -m samtuner.decider_process``: the config goes in on stdin (it holds no
    secret: passwords are read from the environment), the reason of a crash comes back on a pipe."""

    name = "decider"

    def __init__(self, cfg: Config, faust_loglevel: str) -> None:
        self.cfg = cfg
        self.faust_loglevel = faust_loglevel
        self.proc: subprocess.Popen[bytes] | None = None
        self._status: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "samtuner.decider_process",
                    "--parent",
                    str(os.getpid()),
                    "--status-fd",
                    str(write_fd),
                    "--log-level",
                    str(level),
                    "--faust-log-level",
                    self.faust_loglevel,
                ],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                process_group=0,  # a terminal's Ctrl-C reaches the parent only; it stops the child in order
            )
        finally:
            os.close(write_fd)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._status = read_fd
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(self.cfg.model_dump_json().encode())
            self.proc.stdin.close()
        except BrokenPipeError:  # it died at once: ended() reports how
            pass
        log.info("decider process started (pid %d)", self.proc.pid)

    def _reason(self) -> str | None:
        if self._status is None:
            return None
        chunks = []
        try:
            while chunk := os.read(self._status, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        finally:
            os.close(self._status)
            self._status = None
        return b"".join(chunks).decode(errors="replace").strip() or None

    def ended(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"pid {self.proc.pid} " + describe_exit(self.proc.returncode, self._reason())

    def stop(self, timeout_s: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("the decider (pid %d) did not stop within %.0fs; killing it", self.proc.pid, timeout_s)
            self.proc.kill()
            self.proc.wait()
        self._reason()


@dataclass
class _Supervised:
    role: Role
    policy: RestartPolicy
    history: RestartHistory = field(default_factory=RestartHistory)
    started_at: float = 0.0
    restart_at: float | None = None  # waiting for a restart until then


class Supervisor:
    """Starts roles, restarts the ones that end unasked, gives up as each role's policy says."""

    def __init__(self, stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self.stop = stop
        self.clock = clock
        self._roles: list[_Supervised] = []

    def add(self, role: Role, policy: RestartPolicy) -> None:
        self._roles.append(_Supervised(role, policy))

    def start(self) -> None:
        for s in self._roles:
            s.role.start()
            s.started_at = self.clock()

    def restarts(self) -> dict[str, int]:
        """Restarts per role so far (``/v1/stats`` shows them as ``restarts_<role>``)."""
        return {s.role.name: s.history.restarts for s in self._roles}

    def run(self, every_s: float = 0.5) -> None:
        """Until ``stop`` is set; raises :class:`RoleFailed` when a role's policy gives up on it."""
        while not self.stop.wait(every_s):
            self.check()

    def check(self) -> None:
        now = self.clock()
        for s in self._roles:
            if s.restart_at is not None:
                if now >= s.restart_at and not self.stop.is_set():
                    s.restart_at = None
                    s.role.start()
                    s.started_at = self.clock()
                continue
            how = s.role.ended()
            if how is None or self.stop.is_set():
                continue
            verdict = after_stop(s.policy, s.history, s.started_at, now)
            s.history = verdict.history
            if isinstance(verdict.action, GiveUp):
                log.critical(
                    "the %s role ended (%s) and is not restarted: %s; stopping every role",
                    s.role.name,
                    how,
                    verdict.action.reason,
                )
                raise RoleFailed(f"the {s.role.name} role {how}; {verdict.action.reason}")
            log.error(
                "the %s role ended: %s; restart %d in %.1fs (restarts so far: %d)",
                s.role.name,
                how,
                verdict.action.attempt,
                verdict.action.delay_s,
                s.history.restarts,
            )
            s.restart_at = now + verdict.action.delay_s

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop every role (``stop`` must be set already: thread roles watch it)."""
        for s in reversed(self._roles):
            try:
                s.role.stop(timeout_s)
            except Exception:  # one role's stop must not keep the others running
                log.exception("stopping the %s role failed", s.role.name)


def die_with_parent(parent: int) -> None:
    """In a child: be killed (SIGKILL, as the parent was, if it was) when the parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
