"""Memory tracing is off unless asked for; asked for, each dump says how big the process is and
which objects it holds most of."""

from __future__ import annotations

import tracemalloc

import pytest

from samtuner import memtrace


def test_without_the_variable_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memtrace.ENV, raising=False)
    assert memtrace.start_from_env() is None
    assert not tracemalloc.is_tracing()


class Held:
    """A record a process might hold too many of (instances are tracked by the garbage collector)."""


def test_a_dump_names_the_rss_and_the_most_numerous_objects() -> None:
    held = [Held() for _ in range(300_000)]  # more objects of one type than any other type has
    line = memtrace.dump_line(None)
    assert line["rss_mib"] > 0
    assert tuple(line["types"][0]) == ("Held", len(held))
    assert "growth" not in line  # tracemalloc off: no traced figures


def test_with_tracing_a_dump_shows_what_grew_since_the_baseline() -> None:
    tracemalloc.start(1)
    try:
        base = tracemalloc.take_snapshot()
        grown = [bytearray(1024) for _ in range(2000)]  # ~2 MiB from one line
        line = memtrace.dump_line(base)
    finally:
        tracemalloc.stop()
    top = line["growth"][0]
    assert top["where"][0].endswith(f"test_memtrace.py:{grown_line()}")
    assert top["kib"] >= 2000 and top["blocks"] >= len(grown)


def grown_line() -> int:
    import inspect

    source, start = inspect.getsourcelines(test_with_tracing_a_dump_shows_what_grew_since_the_baseline)
    return start + next(i for i, text in enumerate(source) if "bytearray(1024)" in text)
