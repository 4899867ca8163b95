"""The worker's jobs: queued in arrival order, at most one running, and cancels that came first.

Its lock and condition guard this state only. Nothing is published or flushed while they are held:
every method returns what changed, and the worker (``trainer/worker.py``) publishes the outcomes
after. Each method is one atomic step, so a cancel and an offer of the same request from two threads
meet in exactly one of them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from uuid import UUID

from schemas.commands import CancelTraining
from schemas.events import TrainingRequested

Position = tuple[str, int, int]  # topic, partition, offset of the request's message
Partition = tuple[str, int]


@dataclass
class QueuedJob:
    request: TrainingRequested
    position: Position | None

    @property
    def request_id(self) -> str:
        return str(self.request.request_id)

    def on(self, partitions: Collection[Partition]) -> bool:
        return self.position is not None and (self.position[0], self.position[1]) in partitions


@dataclass
class RunningJob:
    item: QueuedJob
    stop_reason: str | None = None
    aborted: bool = False  # stopped for another owner to resume: no outcome is published
    command_id: UUID | None = None
    erase: bool = False  # its user was erased: remove its files once it stopped
    done: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> str | None:
        """Why the job should stop (the runner polls it), or None to go on."""
        return self.stop_reason

    def ask_to_stop(self, reason: str, command_id: UUID | None = None, erase: bool = False) -> bool:
        """The first reason wins; True when this call set it."""
        if self.stop_reason is not None:
            return False
        self.stop_reason, self.command_id, self.erase = reason, command_id, erase
        return True


class JobQueue:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._items: deque[QueuedJob] = deque()
        self._running: RunningJob | None = None
        self._cancels: dict[str, CancelTraining] = {}  # for requests not seen yet
        self._closed = False

    def holds(self, rid: str) -> bool:
        with self._lock:
            return self._holds(rid)

    def ahead(self) -> int:
        """Jobs a new one would wait behind (the running one included)."""
        with self._lock:
            return len(self._items) + (1 if self._running else 0)

    def take_cancel(self, rid: str) -> CancelTraining | None:
        """A cancel that arrived before its request (then the request is not queued at all)."""
        with self._lock:
            return self._cancels.pop(rid, None)

    def add(self, item: QueuedJob) -> CancelTraining | None:
        """Queue ``item``, unless a cancel for it arrived meanwhile: that cancel is returned instead."""
        with self._lock:
            command = self._cancels.pop(item.request_id, None)
            if command is None:
                self._items.append(item)
                self._wake.notify_all()
            return command

    def cancel(self, command: CancelTraining) -> QueuedJob | RunningJob | None:
        """Withdraw the queued job (returned), ask the running one to stop (returned), or remember the
        cancel for a request that has not arrived (None)."""
        rid = str(command.request_id)
        with self._lock:
            for item in self._items:
                if item.request_id == rid:
                    self._items.remove(item)
                    return item
            running = self._running
            if running is not None and running.item.request_id == rid:
                running.ask_to_stop(f"cancelled by {command.issued_by}", command.command_id)
                return running
            self._cancels[rid] = command
            return None

    def withdraw(
        self, rids: Collection[str], reason: str, command_id: UUID | None, erase: bool
    ) -> tuple[list[QueuedJob], RunningJob | None]:
        """Withdraw the queued jobs of ``rids`` and ask the running one among them to stop."""
        with self._lock:
            queued = [item for item in self._items if item.request_id in rids]
            for item in queued:
                self._items.remove(item)
            running = self._running if self._running is not None and self._running.item.request_id in rids else None
            if running is not None:
                running.ask_to_stop(reason, command_id, erase)
            return queued, running

    def release(self, partitions: Collection[Partition], reason: str) -> RunningJob | None:
        """Drop the queued jobs of ``partitions``; abort the running one among them (returned)."""
        with self._lock:
            self._items = deque(item for item in self._items if not item.on(partitions))
            running = self._running if self._running is not None and self._running.item.on(partitions) else None
            if running is not None:
                running.aborted, running.stop_reason = True, reason
            return running

    def close(self, reason: str) -> None:
        """No job starts any more; the running one is aborted (its next owner resumes it)."""
        with self._lock:
            self._closed = True
            if self._running is not None:
                self._running.aborted, self._running.stop_reason = True, reason
            self._wake.notify_all()

    def next(self, stop: threading.Event, ready: Callable[[], bool]) -> RunningJob | None:
        """Block until a job can start (then it is the running one), or None once stopped or closed."""
        with self._lock:
            while not (self._items and ready()) and not (stop.is_set() or self._closed):
                self._wake.wait(0.25)
            if stop.is_set() or self._closed:
                return None
            return self._start()

    def start_now(self) -> RunningJob:
        """The next job, started at once (the caller just queued it)."""
        with self._lock:
            return self._start()

    def finished(self, running: RunningJob) -> None:
        with self._lock:
            if self._running is running:
                self._running = None
        running.done.set()

    def ids(self) -> list[str]:
        with self._lock:
            return [item.request_id for item in self._items]

    def _start(self) -> RunningJob:
        running = self._running = RunningJob(self._items.popleft())
        return running

    def _holds(self, rid: str) -> bool:
        running = self._running is not None and self._running.item.request_id == rid
        return running or any(item.request_id == rid for item in self._items)
