"""Output marks: the last output per source partition, read from the tail of the pairs topic in
batches that never wait for messages the tail does not hold (consume() waits for num_messages or
its timeout: asking for more than is left cost a restore 10 s per partition)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.decider import output_marks as M
from streams.decider.output_marks import NONE, OutputMarks, source_headers


@dataclass
class FakeMessage:
    at: int
    head: list[tuple[str, bytes]]

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self.at

    def headers(self) -> list[tuple[str, bytes]]:
        return self.head


@dataclass
class FakeConsumer:
    """A partition's log; consume() refuses to be asked for more than the log has past its position
    (the real one would wait its whole timeout for them)."""

    log: list[FakeMessage]
    position: int = 0
    asked: list[int] = field(default_factory=list)
    closed: bool = False

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, len(self.log)

    def assign(self, tps: list[Any]) -> None:
        self.position = tps[0].offset

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.asked.append(num_messages)
        left = len(self.log) - self.position
        if num_messages > left:
            raise AssertionError(f"asked for {num_messages} messages with {left} left: it would wait {timeout} s")
        batch = self.log[self.position : self.position + num_messages]
        self.position += len(batch)
        return batch

    def close(self) -> None:
        self.closed = True


def outputs(n: int) -> list[FakeMessage]:
    # Source offsets 10, 11, ... of feedback partition 2; every third event has a second output.
    log: list[FakeMessage] = []
    for i in range(n):
        log.append(FakeMessage(len(log), source_headers("sam.feedback.v1", 2, 10 + i, 0)))
        if i % 3 == 0:
            log.append(FakeMessage(len(log), source_headers("sam.feedback.v1", 2, 10 + i, 1)))
    log.append(FakeMessage(len(log), [("other", b"x")]))  # an output without source headers
    return log


@pytest.mark.parametrize("n", [1, 7, 2500])
def test_the_mark_is_the_last_output_and_no_read_waits_past_the_tail(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    consumer = FakeConsumer(outputs(n))
    monkeypatch.setattr(M, "new_consumer", lambda *a, **k: consumer)
    marks = OutputMarks(connection=None, output_topic="sam.pairs.v1", scan=100_000)  # type: ignore[arg-type]
    last = 10 + n - 1
    assert marks("sam.feedback.v1", 2) == (last, 1 if (n - 1) % 3 == 0 else 0)
    assert marks("sam.control.v1", 2) == NONE
    assert consumer.closed and consumer.position == len(consumer.log)
    assert max(consumer.asked) <= 1000


def test_only_the_last_scan_messages_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(outputs(50))
    monkeypatch.setattr(M, "new_consumer", lambda *a, **k: consumer)
    marks = OutputMarks(connection=None, output_topic="sam.pairs.v1", scan=5)  # type: ignore[arg-type]
    assert marks("sam.feedback.v1", 2) == (59, 0)
    assert sum(consumer.asked) == 5
