"""Polling until something holds: the tests' shared poll-until loop, instead of a fixed sleep for a state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.25) -> T:
    """Call ``probe`` every ``every_s`` until it returns something truthy, and return that; fail the
    test, naming ``what``, if ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
