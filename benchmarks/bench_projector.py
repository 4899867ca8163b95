"""make bench-projector: the projector's own cost per event, in process, with no Kafka.

The messages are built like `make bench-streams` makes them reach the projector (500 users keyed
onto BENCH_PARTITIONS partitions of every topic):
- every feedback event on the feedback topic (the projector reads them all and skips most): ~85%
  distinct corrections, ~10% duplicates, ~5% malformed; ~1% of the valid ones name a served answer;
- the decider's outputs on the pairs topic: PairAccepted per distinct correction, PairRejected per
  duplicate, TrainingThresholdReached each time a user has BENCH_MIN_PAIRS new pairs (default 20:
  ~34 pairs per user at the default N, so thresholds fire inside the run, as in bench-streams);
- a dead letter on the dlq topic per malformed event;
- AnswerServed on the inference topic (BENCH_ANSWERS of N, default 2%);
- the TrainingRequested the projector itself publishes, read back from the training topic in a
  later batch (as in the product).
Batches of BENCH_BATCH_SIZE (default 1000, the config's streams.batch_size) take up to 200
messages of each topic-partition in turn, as a consumer's fetches do; `Projector.project()` writes
them into a real chDB store in a temporary folder.

us_per_event = the projector's CPU time (process time: chDB runs in process) / N feedback events,
the unit of bench-streams' projector_cpu_us_per_event; us_per_message divides by every message it
read. Runs BENCH_REPEAT times (default 3, each on a fresh store) and reports medians.
BENCH_PROFILE=1: one more run under cProfile; its top list (by cumulative and by own time) goes to
stderr. The last stdout line is one JSON object.
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.artifacts import ArtifactStore  # noqa: E402
from infra.clickhouse import ClickHouseStore  # noqa: E402
from infra.kafka import RawMessage  # noqa: E402
from schemas.codec import encode_headers, encode_value  # noqa: E402
from schemas.dead_letters import dead_letter_headers  # noqa: E402
from schemas.events import (  # noqa: E402
    AnswerServed,
    Event,
    FeedbackReceived,
    PairAccepted,
    PairRejected,
    RejectionReason,
    SourceRef,
    TrainingThresholdReached,
)
from schemas.ids import derived_event_id, threshold_event_id  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from streams.projector.projection import ClickHouseSink, Projector  # noqa: E402
from tests.fakes import FakePublisher  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(2000)]
TOPICS = Topics("bench.")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def say(msg: str) -> None:
    print(f"[bench-projector] {msg}", file=sys.stderr, flush=True)


class Log:
    """Topic-partitions as append-only lists, keyed by user like the product's producers key them."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.parts: dict[tuple[str, int], list[RawMessage]] = defaultdict(list)

    def partition_of(self, key: bytes) -> int:
        return zlib.crc32(key) % self.partitions

    def append(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> SourceRef:
        partition = self.partition_of(key)
        part = self.parts[(topic, partition)]
        offset = len(part)
        part.append(RawMessage(topic, partition, offset, key, value, tuple(headers), 0))
        return SourceRef(topic=topic, partition=partition, offset=offset)


def build_log(n: int, users: int, min_pairs: int, answers: float, partitions: int, rng: random.Random) -> Log:
    log = Log(partitions)
    earlier: list[tuple[str, str, str, str]] = []
    seen: set[tuple[str, str, str, str]] = set()
    new_pairs: dict[str, int] = defaultdict(int)
    generation: dict[str, int] = defaultdict(int)
    served: list[tuple[str, uuid.UUID]] = []
    for i in range(n):
        user = f"user-{rng.randrange(users):05d}"
        key = user.encode()
        at = T0 + timedelta(milliseconds=i)
        roll = rng.random()
        if roll < 0.05:
            bad = rng.choice([b"not json", b'{"event_type": "FeedbackReceived"}', b"\xff\xfe"])
            src = log.append(TOPICS.feedback, key, bad)
            msg = log.parts[(src.topic, src.partition)][src.offset]
            headers = dead_letter_headers(msg, "decider", "invalid_json", "bench")
            log.append(TOPICS.dlq, key, bad, headers)
            continue
        if rng.random() < answers:
            answer = uuid.uuid4()
            served.append((user, answer))
            event: Event = AnswerServed(
                event_id=answer,
                user_id=user,
                correlation_id=answer,
                occurred_at=at,
                answer_id=answer,
                node_id="node-1",
                arm="base",
                latency_ms=12.5,
                completion_tokens=40,
            )
            log.append(TOPICS.inference, key, encode_value(event), encode_headers(event))
        if roll < 0.15 and earlier:
            user, prompt, original, corrected = rng.choice(earlier)
            key = user.encode()
        else:
            prompt = "What about " + " ".join(rng.choices(WORDS, k=8)) + "?"
            original = "It is " + " ".join(rng.choices(WORDS, k=10)) + "."
            corrected = original[:-1] + ", " + " ".join(rng.choices(WORDS, k=6)) + ". Thanks!"
            earlier.append((user, prompt, original, corrected))
        eid = uuid.uuid4()
        context = {}
        if served and rng.random() < 0.01:
            context = {"answer_id": str(served[-1][1])}
        fb = FeedbackReceived(
            event_id=eid,
            correlation_id=eid,
            user_id=user,
            feedback_id=str(eid),
            occurred_at=at,
            prompt=prompt,
            original_response=original,
            corrected_response=corrected,
            confidence_score=0.9,
            context=context,
        )
        source = log.append(TOPICS.feedback, key, encode_value(fb), encode_headers(fb))
        sample = (user, prompt, original, corrected)
        out: list[Event] = []
        if sample in seen:
            out.append(
                PairRejected(
                    event_id=derived_event_id("pair-rejected", str(eid)),
                    occurred_at=at,
                    user_id=user,
                    correlation_id=eid,
                    feedback_event_id=eid,
                    feedback_type="correction",
                    reasons=(RejectionReason(code="duplicate_pair", detail="seen before"),),
                    quality_score=0.8,
                    prompt=prompt,
                    chosen_response=corrected,
                    rejected_response=original,
                    created_at=at,
                    source=source,
                )
            )
        else:
            seen.add(sample)
            out.append(
                PairAccepted(
                    event_id=derived_event_id("pair-accepted", str(eid)),
                    occurred_at=at,
                    user_id=user,
                    correlation_id=eid,
                    pair_id=uuid.uuid5(uuid.NAMESPACE_OID, "|".join(sample)),
                    feedback_event_id=eid,
                    prompt=prompt,
                    chosen_response=corrected,
                    rejected_response=original,
                    confidence_score=0.9,
                    quality_score=0.8,
                    feedback_type="correction",
                    created_at=at,
                    metadata={"edit_ratio": 0.31, "length_ratio": 1.4},
                    source=source,
                )
            )
            new_pairs[user] += 1
            if new_pairs[user] >= min_pairs:
                generation[user] += 1
                out.append(
                    TrainingThresholdReached(
                        event_id=threshold_event_id(user, generation[user]),
                        occurred_at=at,
                        user_id=user,
                        correlation_id=eid,
                        generation=generation[user],
                        new_pairs=new_pairs[user],
                        triggered_at=at,
                        through=source,
                    )
                )
                new_pairs[user] = 0
        for e in out:
            log.append(TOPICS.pairs, key, encode_value(e), encode_headers(e))
    return log


def batches(log: Log, batch_size: int, publisher: FakePublisher, fetch: int = 200) -> Any:
    """Batches as a consumer hands them out: up to ``fetch`` messages of each topic-partition in turn.
    What the projector published to the training topic since the last batch is appended to that topic."""
    queues = {tp: deque(msgs) for tp, msgs in sorted(log.parts.items())}
    read_back = 0
    while True:
        for topic, key, value, headers in publisher.sent[read_back:]:
            if topic == TOPICS.training and key is not None and value is not None:
                log.append(topic, key, value, headers)
                tp = (topic, log.partition_of(key))
                queues.setdefault(tp, deque()).append(log.parts[tp][-1])
        read_back = len(publisher.sent)
        batch: list[RawMessage] = []
        while len(batch) < batch_size and any(queues.values()):
            for q in queues.values():
                for _ in range(min(fetch, len(q), batch_size - len(batch))):
                    batch.append(q.popleft())
        if not batch:
            return
        yield batch


def one_run(log_args: tuple[int, int, int, float, int], batch_size: int, profile: bool) -> dict[str, Any]:
    log = build_log(*log_args, rng=random.Random(42))
    work = Path(tempfile.mkdtemp(prefix="bench-projector-"))
    store = ClickHouseStore(f"chdb://{work / 'chdb'}", "sam")
    try:
        store.migrate()
        publisher = FakePublisher()
        projector = Projector(ClickHouseSink(store), ArtifactStore(work / "artifacts"), publisher, TOPICS)
        messages = n_batches = 0
        datasets: list[str] = []
        profiler = cProfile.Profile() if profile else None
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for batch in batches(log, batch_size, publisher):
            if profiler is not None:
                profiler.enable()
            result = projector.project(batch)
            if profiler is not None:
                profiler.disable()
            messages += len(batch)
            n_batches += 1
            datasets += [
                f"{r.request_id}:{r.dataset.sha256}:{sorted(map(str, r.dataset.pair_ids))}"
                for r in result.training_requests
            ]
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        pairs = int(store.query("SELECT count() FROM sam.preference_pairs FINAL")[0][0])
        if profiler is not None:
            for key in ("cumulative", "tottime"):
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(30)
                say(f"cProfile, top 30 by {key}:\n{text.getvalue()}")
        return {
            "cpu_s": cpu,
            "wall_s": wall,
            "messages": messages,
            "batches": n_batches,
            "training_requests": len(datasets),
            # What the snapshots held: equal digests mean equal datasets (to compare two versions of the code).
            "datasets_sha256": hashlib.sha256("\n".join(sorted(datasets)).encode()).hexdigest(),
            "pairs": pairs,
        }
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    n = int(os.environ.get("BENCH_N", "20000"))
    users = int(os.environ.get("BENCH_USERS", "500"))
    min_pairs = int(os.environ.get("BENCH_MIN_PAIRS", "20"))
    answers = float(os.environ.get("BENCH_ANSWERS", "0.02"))
    partitions = int(os.environ.get("BENCH_PARTITIONS", "6"))
    batch_size = int(os.environ.get("BENCH_BATCH_SIZE", "1000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    log_args = (n, users, min_pairs, answers, partitions)
    runs = []
    for i in range(repeat):
        run = one_run(log_args, batch_size, profile=False)
        say(
            f"run {i + 1}/{repeat}: {run['cpu_s'] / n * 1e6:,.0f} us of CPU per event, "
            f"{n / run['wall_s']:,.0f} events/s, {run['batches']} batches, {run['training_requests']} requests"
        )
        runs.append(run)
    if os.environ.get("BENCH_PROFILE"):
        one_run(log_args, batch_size, profile=True)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    wall = statistics.median(r["wall_s"] for r in runs)
    last = runs[-1]
    print(
        json.dumps(
            {
                "events": n,
                "messages": last["messages"],
                "batches": last["batches"],
                "training_requests": last["training_requests"],
                "datasets_sha256": last["datasets_sha256"],
                "pairs": last["pairs"],
                "us_per_event": round(cpu / n * 1e6, 1),
                "us_per_message": round(cpu / last["messages"] * 1e6, 1),
                "events_per_s": round(n / wall, 1),
                "cpu_s_runs": [round(r["cpu_s"], 3) for r in runs],
                "batch_size": batch_size,
                "min_pairs": min_pairs,
            }
        )
    )


if __name__ == "__main__":
    main()
