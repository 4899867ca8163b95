"""make bench-decider: the decider's batch path in one process, no Kafka, no Faust: microseconds per event.

The events are bench-streams' mix (``benchmarks/bench_streams.py``: 500 users, ~10% duplicates, ~5%
malformed), spread over 6 partitions by user and cut into batches of ``streams.batch_size`` in arrival
order, as the agent takes them. Each batch goes through what the agent does around Faust: the fence's
ticket and check, ``BatchDecider.decide`` (decode, decide, MinHash/LSH, ids, encode), the fence's stamps,
and the journal writes (``streams/decider/changelog.py``: each write encoded as its changelog message and
handed to a producer that only counts, then applied to a dict, the table's store faked as the unit tests
fake it: ``journal_us``). ``journal_writes_per_event`` is how many writes (changelog messages) a batch
makes per event. The producers' own cost (librdkafka) is left out: bench-streams measures it under Faust.
Times are CPU time of the process (``time.process_time``), so a busy machine inflates them less than wall
time.

Environment: BENCH_N (default 20000), BENCH_BATCH_SIZE (default the config's), BENCH_REPEAT (3: the median
is reported), BENCH_CPROFILE (a path: write cProfile stats of one more run there). The last stdout line is
one JSON object.
"""

from __future__ import annotations

import cProfile
import json
import os
import random
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_streams import feedback_values  # noqa: E402
from infra.kafka import RawMessage  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from streams.decider.app import _decide_settings  # noqa: E402
from streams.decider.batch import BatchDecider  # noqa: E402
from streams.decider.changelog import TableChangelog  # noqa: E402
from streams.decider.fence import PartitionFence, stamped  # noqa: E402
from streams.decider.journal import DeciderMemory, StateLimits  # noqa: E402
from streams.decider.similarity import MinHasher, UserIndexes  # noqa: E402

PARTITIONS = 6


def say(msg: str) -> None:
    print(f"[bench-decider] {msg}", file=sys.stderr, flush=True)


class CountingProducer:
    """A producer that takes the changelog's messages and only counts their bytes."""

    def __init__(self) -> None:
        self.sent = 0

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        self.sent += len(key or b"") + len(value or b"")

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def messages(cfg: Config, n: int) -> list[RawMessage]:
    topic = Topics(cfg.kafka.topic_prefix).feedback
    offsets = [0] * PARTITIONS
    out = []
    for key, value in feedback_values(n, users=500, rng=random.Random(42)):
        partition = zlib.crc32(key) % PARTITIONS
        out.append(RawMessage(topic, partition, offsets[partition], key, value, (), 0))
        offsets[partition] += 1
    return out


def no_log(topic: str, partition: int, start: int, end: int) -> list[RawMessage]:
    raise AssertionError(f"{topic}[{partition}] {start}..{end}: every offset is delivered in order")


def run(cfg: Config, batches: list[list[RawMessage]]) -> dict[str, float]:
    """One pass over the batches with fresh state; seconds per stage."""
    journal: dict[str, Any] = {}
    changelog = TableChangelog("decider-journal-changelog", journal, CountingProducer())
    limits = cfg.streams.state
    memory = DeciderMemory(journal, StateLimits(limits.max_sightings_per_user, limits.max_signatures_per_user))
    hasher = MinHasher(cfg.quality.minhash_num_perm, cfg.quality.shingle_words)
    decider = BatchDecider(
        _decide_settings(cfg),
        memory,
        Topics(cfg.kafka.topic_prefix),
        hasher,
        UserIndexes(hasher, cfg.quality.near_duplicate_jaccard),
        lambda topic, partition: (-1, -1),
        no_log,
        lambda topic, partition: 0,  # the partitions start at offset 0
    )
    fence = PartitionFence("bench")
    fence.assigned(range(PARTITIONS), 1)
    took = {"decide_s": 0.0, "fence_s": 0.0, "journal_s": 0.0, "outputs": 0.0, "writes": 0.0}
    for batch in batches:
        t0 = time.process_time()
        result = decider.decide(batch)
        t1 = time.process_time()
        ticket = fence.ticket({m.partition for m in batch}, range(PARTITIONS), 1)
        assert not fence.lost(ticket)
        outgoing = stamped(result.outgoing, fence.worker, ticket)
        t2 = time.process_time()
        changelog.send(result.journal)
        changelog.apply(result.journal)
        t3 = time.process_time()
        took["decide_s"] += t1 - t0
        took["fence_s"] += t2 - t1
        took["journal_s"] += t3 - t2
        took["outputs"] += len(outgoing)
        took["writes"] += sum(len(w) for w in result.journal.values())
    return took


def main() -> None:
    n = int(os.environ.get("BENCH_N", "20000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    streams: dict[str, Any] = {}
    if os.environ.get("BENCH_BATCH_SIZE"):
        streams["batch_size"] = int(os.environ["BENCH_BATCH_SIZE"])
    cfg = Config.model_validate({"model": {"base": str(model)}, "streams": streams})
    msgs = messages(cfg, n)
    size = cfg.streams.batch_size
    batches = [msgs[i : i + size] for i in range(0, len(msgs), size)]
    say(f"{n} events in {len(batches)} batches of up to {size}; {repeat} runs")
    runs = [run(cfg, batches) for _ in range(repeat)]
    if os.environ.get("BENCH_CPROFILE"):
        profiler = cProfile.Profile()
        profiler.runcall(run, cfg, batches)
        profiler.dump_stats(os.environ["BENCH_CPROFILE"])
        say(f"cProfile stats in {os.environ['BENCH_CPROFILE']}")

    def us(stage: str) -> float:
        return round(statistics.median(r[stage] for r in runs) / n * 1e6, 1)

    result = {
        "events": n,
        "batch_size": size,
        "runs": repeat,
        "outputs": int(runs[0]["outputs"]),
        "journal_writes_per_event": round(runs[0]["writes"] / n, 3),
        "decide_us": us("decide_s"),
        "fence_us": us("fence_s"),
        "journal_us": us("journal_s"),
        "us_per_event": round(statistics.median(sum(r[k] for k in r if k.endswith("_s")) for r in runs) / n * 1e6, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
