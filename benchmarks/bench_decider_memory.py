"""make bench-decider-memory: does the decider's memory plateau once every user's rings are full?

In process, no broker: the decider's batch path (``streams/decider/batch.py`` ``BatchDecider`` over a
dict standing in for its Faust table, as the unit tests build it, writes applied as the agent
applies them) is fed the soak's event mix (``benchmarks/soak.py`` ``Feedback``: distinct
corrections, redeliveries, malformed events, a few hot users) over BENCH_USERS (2,000) users, on 6
partitions, in batches of BENCH_BATCH (200: what 1,000 events/s fills in Faust's 0.2 s window).

Every BENCH_SAMPLE events (25,000) it samples the RSS, the sizes of the decider's structures (table
keys, in-memory sightings, users, cached LSH indexes) and, from BENCH_WARMUP events (200,000: by then
the rings of every user are full) on, a ``tracemalloc`` snapshot (the first one is the baseline;
tracing starts there, so warm-up allocations are not traced). At the end it prints the top
allocation differences by traceback (stderr) and, as the last stdout line, one JSON object: the
series, the RSS and traced-memory drift after warm-up (percent of the first sample after it), the
top differences, and ``flat`` (RSS within ±10% after warm-up).

Environment: BENCH_EVENTS (500,000), BENCH_USERS, BENCH_WARMUP, BENCH_SAMPLE, BENCH_BATCH,
BENCH_TRACE_FRAMES (8; 0 turns tracemalloc off).
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import Feedback  # noqa: E402
from infra.kafka import RawMessage  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from streams.decider.app import _decide_settings  # noqa: E402
from streams.decider.batch import BatchDecider  # noqa: E402
from streams.decider.journal import DeciderMemory, StateLimits, apply_writes  # noqa: E402
from streams.decider.similarity import MinHasher, UserIndexes  # noqa: E402

PARTITIONS = 6
FLAT_PCT = 10.0


def say(msg: str) -> None:
    print(f"[bench-decider-memory] {msg}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def drift(series: list[float]) -> dict[str, float | None]:
    if len(series) < 2 or not series[0]:
        return {"last_pct": None, "max_abs_pct": None}
    base = series[0]
    return {
        "last_pct": round((series[-1] - base) / base * 100, 1),
        "max_abs_pct": round(max(abs(v - base) for v in series) / base * 100, 1),
    }


def top_differences(base: tracemalloc.Snapshot, now: tracemalloc.Snapshot, n: int = 10) -> list[dict[str, Any]]:
    out = []
    for stat in now.compare_to(base, "traceback")[:n]:
        frames = [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}" for f in stat.traceback]
        out.append({"size_diff_kib": round(stat.size_diff / 1024, 1), "count_diff": stat.count_diff, "where": frames})
    return out


def main() -> None:
    events = int(os.environ.get("BENCH_EVENTS", "500000"))
    users = int(os.environ.get("BENCH_USERS", "2000"))
    warmup = int(os.environ.get("BENCH_WARMUP", "200000"))
    every = int(os.environ.get("BENCH_SAMPLE", "25000"))
    batch_size = int(os.environ.get("BENCH_BATCH", "200"))
    frames = int(os.environ.get("BENCH_TRACE_FRAMES", "8"))
    # The soak's settings (benchmarks/soak.py): its trigger, the default quality checks and bounds.
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    cfg = Config.model_validate({"model": {"base": str(model)}, "trigger": {"min_new_pairs": 1500}})
    topics = Topics(cfg.kafka.topic_prefix)
    limits = cfg.streams.state
    journal: dict[str, Any] = {}
    memory = DeciderMemory(journal, StateLimits(limits.max_sightings_per_user, limits.max_signatures_per_user))
    hasher = MinHasher(cfg.quality.minhash_num_perm, cfg.quality.shingle_words)
    indexes = UserIndexes(hasher, cfg.quality.near_duplicate_jaccard)
    decider = BatchDecider(
        _decide_settings(cfg),
        memory,
        topics,
        hasher,
        indexes,
        lambda topic, partition: (-1, -1),
        lambda topic, partition, start, end: [],  # every offset is delivered in order here
        lambda topic, partition: 0,
    )
    feedback = Feedback(users, 3, 0.04, random.Random(7))
    offsets = [0] * PARTITIONS
    samples: list[dict[str, Any]] = []
    base: tracemalloc.Snapshot | None = None
    last: tracemalloc.Snapshot | None = None
    outputs = 0
    started = time.perf_counter()
    done = 0
    while done < events:
        batch = []
        for _ in range(batch_size):
            key, value = feedback.next()
            p = zlib.crc32(key) % PARTITIONS
            batch.append(RawMessage(topics.feedback, p, offsets[p], key, value, (), 0))
            offsets[p] += 1
        result = decider.decide(batch)
        outputs += len(result.outgoing)
        for writes in result.journal.values():
            apply_writes(journal, writes)
        before, done = done, done + len(batch)
        if done // every == before // every:
            continue
        gc.collect()
        parts = [memory.partition(p) for p in range(PARTITIONS)]
        sample: dict[str, Any] = {
            "events": done,
            "rss_mib": rss_mib(),
            "table_keys": len(journal),
            "users": sum(len(s.users) for s in parts),
            "sightings": sum(len(s.sightings) for s in parts),
            "indexes_cached": len(indexes._cache),
            "feedback_earlier": len(feedback.earlier),
            "outputs": outputs,
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        if frames and done >= warmup:
            if base is None:
                tracemalloc.start(frames)
                base = tracemalloc.take_snapshot()
            else:
                last = tracemalloc.take_snapshot()
                sample["traced_mib"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
        samples.append(sample)
        say(json.dumps(sample))
    after = [s for s in samples if s["events"] >= warmup]
    top = top_differences(base, last) if base is not None and last is not None else []
    for t in top:
        say(f"{t['size_diff_kib']:+.1f} KiB ({t['count_diff']:+d} blocks): {' <- '.join(reversed(t['where']))}")
    rss = drift([s["rss_mib"] for s in after])
    result = {
        "events": done,
        "users": users,
        "warmup_events": warmup,
        "events_per_s": round(done / (time.perf_counter() - started), 1),
        "samples": samples,
        "rss_drift_pct": rss,
        "traced_mib_after_warmup": [s["traced_mib"] for s in after if "traced_mib" in s],
        "top_differences": top,
        "flat": rss["max_abs_pct"] is not None and rss["max_abs_pct"] <= FLAT_PCT,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
