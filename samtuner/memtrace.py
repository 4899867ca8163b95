"""Memory tracing of a long-running role, off by default: ``SAMTUNER_TRACEMALLOC=<path>``.

When set, ``tracemalloc`` starts (``SAMTUNER_TRACEMALLOC_FRAMES`` frames per traceback, default 3:
each one costs time on every allocation, so the role runs slower while traced; 0 leaves it off and
dumps RSS and object counts only, at full speed) and a daemon thread
appends to ``<path>`` every ``SAMTUNER_TRACEMALLOC_EVERY_S`` seconds (default 60) one JSON line:
the RSS, the memory tracemalloc sees, the 20 tracebacks that grew most since the baseline (a
snapshot taken ``SAMTUNER_TRACEMALLOC_BASE_S`` seconds after the start, default 60: after a
warm-up), and the 15 object types most numerous among those the garbage collector tracks. Traced memory flat
while the RSS grows points at the allocator or native code (librdkafka), not at Python objects.
``samtuner.decider_process`` calls :func:`start_from_env`; it inherits the variable from
``samtuner run``'s environment (``SAMTUNER_TRACEMALLOC=/tmp/decider.jsonl make soak``).
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ENV = "SAMTUNER_TRACEMALLOC"
FRAMES_ENV, EVERY_ENV, BASE_ENV = (f"{ENV}_FRAMES", f"{ENV}_EVERY_S", f"{ENV}_BASE_S")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dump_line(base: tracemalloc.Snapshot | None, top: int = 20) -> dict[str, Any]:
    """One sample: RSS, traced memory, the top growth by traceback since ``base``, object counts."""
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    line: dict[str, Any] = {"t": round(time.time(), 1), "rss_mib": round(_rss_mib(), 1), "types": types.most_common(15)}
    if base is None:
        return line
    now = tracemalloc.take_snapshot()
    line["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
    line["growth"] = [
        {
            "kib": round(s.size_diff / 1024, 1),
            "blocks": s.count_diff,
            "where": [f"{f.filename}:{f.lineno}" for f in s.traceback],
        }
        for s in now.compare_to(base, "traceback")[:top]
    ]
    return line


def start_from_env() -> threading.Thread | None:
    """Start tracing if ``SAMTUNER_TRACEMALLOC`` names a file; returns the dumping thread."""
    path = os.environ.get(ENV)
    if not path:
        return None
    frames = int(os.environ.get(FRAMES_ENV, "3"))
    if frames:
        tracemalloc.start(frames)
    every = float(os.environ.get(EVERY_ENV, "60"))
    base_after = float(os.environ.get(BASE_ENV, "60"))
    out = Path(path)

    def loop() -> None:
        time.sleep(base_after)
        base = tracemalloc.take_snapshot() if frames else None
        while True:
            time.sleep(every)
            line = dump_line(base)
            with out.open("a") as f:
                f.write(json.dumps(line) + "\n")

    thread = threading.Thread(target=loop, name="memtrace", daemon=True)
    thread.start()
    return thread
