"""The caller's handle on an answer being generated: its text pieces as they come, then the answer or the error.

The scheduler thread produces (``push``, ``finish``, ``fail``); callers consume from any thread
(:meth:`PendingAnswer.pieces`, :meth:`PendingAnswer.result`) or from an event loop
(:meth:`PendingAnswer.apieces`, :meth:`PendingAnswer.aresult`) without holding a thread while they wait.
``cancel`` asks the scheduler to drop the row at its next step (a client that went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.response import PersonalizedResponse


class PendingAnswer:
    def __init__(self, answer_id: uuid.UUID, head: dict[str, Any] | None = None) -> None:
        self.answer_id = answer_id
        self.head = head or {}  # what is known before the first token: who answers, and why
        self._cond = threading.Condition()
        self._pieces: list[str] = []
        self._done = False
        self._answer: PersonalizedResponse | None = None
        self._error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.cancelled = threading.Event()

    # -- producer side (the scheduler) ---------------------------------------------------------

    def push(self, piece: str) -> None:
        if piece:
            with self._cond:
                self._pieces.append(piece)
                self._wake()

    def finish(self, answer: PersonalizedResponse) -> None:
        with self._cond:
            if not self._done:
                self._answer, self._done = answer, True
                self._wake()

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if not self._done:
                self._error, self._done = error, True
                self._wake()

    def _wake(self) -> None:  # with the condition held
        self._cond.notify_all()
        for loop, event in self._waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its consumer is gone
                loop.call_soon_threadsafe(event.set)
        self._waiters.clear()

    # -- consumer side -------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        with self._cond:
            return self._done

    def cancel(self) -> None:
        self.cancelled.set()

    def result(self, timeout: float | None = None) -> PersonalizedResponse:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"no answer within {timeout} s")
            return self._outcome()

    def pieces(self) -> Iterator[str]:
        """The text pieces in order, blocking until each comes; ends when the answer is done."""
        sent = 0
        while True:
            with self._cond:
                while not self._done and len(self._pieces) <= sent:
                    self._cond.wait()
                new, done = self._pieces[sent:], self._done
            sent += len(new)
            yield from new
            if done and not new:
                return

    async def apieces(self) -> AsyncIterator[str]:
        sent = 0
        while True:
            event = asyncio.Event()
            with self._cond:
                new, done = self._pieces[sent:], self._done
                if not new and not done:
                    self._waiters.append((asyncio.get_running_loop(), event))
            if new:
                sent += len(new)
                for piece in new:
                    yield piece
                continue
            if done:
                return
            await event.wait()

    async def aresult(self) -> PersonalizedResponse:
        async for _ in self.apieces():
            pass
        with self._cond:
            return self._outcome()

    def _outcome(self) -> PersonalizedResponse:  # with the condition held, once done
        if self._error is not None:
            raise self._error
        assert self._answer is not None
        return self._answer
