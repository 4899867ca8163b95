"""The time `samtuner projections rebuild` takes: N pairs (500 users) on the pairs topic and N feedback
events on the feedback topic of a broker of its own, then a rebuild of every table into an empty chDB.

messages_per_s = messages replayed / the rebuild's wall time (fresh database, migrations, replay,
swap, catch-up); rows = rows written. The last stdout line is one JSON object. Environment: BENCH_N
(default 20000).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.broker import Broker, free_port  # noqa: E402
from infra.clickhouse import open_store  # noqa: E402
from infra.kafka import KafkaEventPublisher  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from schemas.config import Config  # noqa: E402
from schemas.events import FeedbackReceived, PairAccepted, SourceRef  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from streams.projector.rebuild import RebuildProgress, rebuild  # noqa: E402


def main() -> None:
    n = int(os.environ.get("BENCH_N", "20000"))
    home = Path(tempfile.mkdtemp(prefix="bench-rebuild-"))
    broker = Broker(home=home / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    try:
        cfg = Config.model_validate(
            {
                "state_dir": str(home / "state"),
                "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": "bench.", "partitions": 3},
            }
        )
        ensure_topics(cfg.kafka)
        store = open_store(cfg)
        store.migrate()
        store.close()
        topics = Topics(cfg.kafka.topic_prefix)
        publisher = KafkaEventPublisher(cfg.kafka)
        now = datetime.now(UTC)
        for i in range(n):
            user, eid = f"user-{i % 500}", uuid.uuid4()
            publisher.publish(
                topics.feedback,
                FeedbackReceived(
                    event_id=eid,
                    correlation_id=eid,
                    user_id=user,
                    feedback_id=f"f{i}",
                    occurred_at=now,
                    feedback_type="correction",
                    prompt=f"Question {i}?",
                    original_response=f"Answer {i}.",
                    corrected_response=f"The answer to question {i}.",
                    confidence_score=0.9,
                ),
            )
            publisher.publish(
                topics.pairs,
                PairAccepted(
                    event_id=uuid.uuid4(),
                    correlation_id=eid,
                    user_id=user,
                    pair_id=uuid.uuid4(),
                    feedback_event_id=eid,
                    prompt=f"Question {i}?",
                    chosen_response=f"The answer to question {i}.",
                    rejected_response=f"Answer {i}.",
                    confidence_score=0.9,
                    quality_score=0.8,
                    feedback_type="correction",
                    created_at=now,
                    source=SourceRef(topic=topics.feedback, partition=0, offset=i),
                ),
            )
        publisher.flush()
        lines: list[str] = []

        def show(progress: RebuildProgress) -> None:
            lines.append(progress.line())
            print(progress.line(), file=sys.stderr)

        started = time.perf_counter()
        report = rebuild(cfg, on_progress=show)
        seconds = time.perf_counter() - started
        messages = sum(report.messages.values())
        store = open_store(cfg)
        pairs = int(store.query(f"SELECT count() FROM {cfg.clickhouse.database}.preference_pairs FINAL")[0][0])
        store.close()
        print(
            json.dumps(
                {
                    "messages": messages,
                    "pairs": pairs,
                    "rows": sum(report.rows.values()),
                    "seconds": round(seconds, 2),
                    "messages_per_s": round(messages / seconds),
                    "progress_lines": len(lines),
                }
            )
        )
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
