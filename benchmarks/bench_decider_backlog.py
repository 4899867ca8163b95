"""make bench-decider-backlog: a real decider working through a backlog: does its RSS follow its lag?

What only the real process has, apart from the state that ``bench_decider_memory.py`` measures in
process: Faust's consumer and aiokafka's prefetch. A broker of its own; BENCH_BACKLOG (200,000)
feedback events of the soak's mix (``benchmarks/soak.py`` ``Feedback``) over BENCH_USERS (500: their
rings are full after ~40,000 events) are produced first, so the decider starts with its largest lag;
then one `samtuner streams --role decider` works through them. Every BENCH_SAMPLE_S (10) seconds:
the decider's RSS and its group's lag. The last stdout line is one JSON object: the series, the RSS
once the rings are full (from BENCH_FULL_AT events consumed, 60,000) at its peak and at the end, and
the peak's excess over the end (what the lag held).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_restore import Decider, produce  # noqa: E402
from benchmarks.soak import Feedback  # noqa: E402
from infra.broker import Broker, free_port  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from schemas.config import Config, default_cache_dir  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from tests.integration.harness import group_lag  # noqa: E402


def say(msg: str) -> None:
    print(f"[bench-decider-backlog] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    backlog = int(os.environ.get("BENCH_BACKLOG", "200000"))
    users = int(os.environ.get("BENCH_USERS", "500"))
    every = float(os.environ.get("BENCH_SAMPLE_S", "10"))
    full_at = int(os.environ.get("BENCH_FULL_AT", "60000"))
    work = Path(tempfile.mkdtemp(prefix="bench-backlog-"))
    broker = Broker(home=work / "kafka", port=free_port(), controller_port=free_port())
    model = default_cache_dir() / "models" / "tiny"
    if not (model / "tokenizer.json").exists():
        from infra.demo_model import build_model

        build_model(model, "tiny")
    raw: dict[str, Any] = {
        "state_dir": str(work / "state"),
        "model": {"base": str(model)},
        "kafka": {"bootstrap_servers": "", "topic_prefix": "backlog.", "partitions": 6},
        "trigger": {"min_new_pairs": 1500},
        "streams": {"session_timeout_s": 10},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
    }
    decider: Decider | None = None
    try:
        broker.start()
        raw["kafka"]["bootstrap_servers"] = broker.bootstrap
        cfg = Config.model_validate(raw)
        (work / "state").mkdir()
        cfg_path = work / "samtuner.yaml"
        cfg_path.write_text(yaml.safe_dump(raw))
        ensure_topics(cfg.kafka)
        t = Topics(cfg.kafka.topic_prefix)
        mix = Feedback(users, 3, 0.04, random.Random(7))
        say(f"producing a backlog of {backlog} events from {users} users")
        produce(broker.bootstrap, t.feedback, [mix.next() for _ in range(backlog)])
        decider = Decider(cfg_path, work / "decider.log")
        proc = psutil.Process(decider.proc.pid)
        samples: list[dict[str, Any]] = []
        start = time.monotonic()
        while True:
            time.sleep(every)
            if decider.proc.poll() is not None:
                raise RuntimeError(f"the decider exited; see {work / 'decider.log'}")
            try:
                lag = group_lag(cfg, cfg.streams.app_id, [t.feedback, t.control])
            except Exception:  # the group is forming: no committed offsets yet
                lag = None
            sample = {
                "s": round(time.monotonic() - start),
                "rss_mib": round(proc.memory_info().rss / 2**20, 1),
                "lag": lag,
            }
            samples.append(sample)
            say(json.dumps(sample))
            if lag == 0 or time.monotonic() - start > 1800:
                break
        full = [s for s in samples if s["lag"] is not None and backlog - s["lag"] >= full_at]
        peak = max((s["rss_mib"] for s in full), default=None)
        end = full[-1]["rss_mib"] if full else None
        result = {
            "backlog": backlog,
            "users": users,
            "drained_s": samples[-1]["s"] if samples[-1]["lag"] == 0 else None,
            "samples": samples,
            "rss_full_peak_mib": peak,
            "rss_full_end_mib": end,
            "peak_over_end_mib": round(peak - end, 1) if peak is not None and end is not None else None,
        }
        print(json.dumps(result))
        shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        say(f"failed; logs kept in {work}")
        raise
    finally:
        if decider is not None:
            decider.stop()
        broker.stop()


if __name__ == "__main__":
    main()
