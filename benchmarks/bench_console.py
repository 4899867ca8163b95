"""Benchmark of the console (``make bench-console``); the last stdout line is one JSON object.

* ``pairs_page_ms_p50`` / ``_p99`` (and ``_max``): one filtered page (50 rows) over 100,000 stored
  pairs, through the console's HTTP server (uvicorn + httpx on loopback), over a mix of filters and
  deep pages; the pairs are inserted straight into the embedded store (the pipeline's own
  benchmark covers how pairs get there).
* ``export_rows_per_s``: the whole 100,000-pair table exported as JSONL over HTTP (and Parquet).
* ``progress_event_to_browser_ms_p99``: from producing a ``TrainingProgressed`` event to a real broker
  until Debian's Chromium, showing that job's page, has drawn its point (the page's own clock; the
  same machine); through the console's training-topic tail and its server-sent events.
* ``sql_query_ms_p50``: a per-user aggregate (``count``, mean quality, active pairs with ``FINAL``)
  through the store client. (``samtuner sql`` and its endpoint are the analytics branch's.)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from console.app import console_app  # noqa: E402
from console.wiring import build_console  # noqa: E402
from infra.broker import Broker, free_port  # noqa: E402
from infra.clickhouse import ClickHouseStore  # noqa: E402
from infra.kafka import KafkaEventPublisher  # noqa: E402
from infra.topics import ensure_topics  # noqa: E402
from schemas.config import Config  # noqa: E402
from schemas.events import TrainingProgressed  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from tests.browser import browser_page  # noqa: E402
from tests.console_data import insert_pairs, pair_rows  # noqa: E402

PAIRS = 100_000
USERS = 500
PAGE_ROUNDS = 12
PROGRESS_EVENTS = 80


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def serve(cfg: Config, store: ClickHouseStore, stop: threading.Event) -> tuple[Any, list[threading.Thread], str]:
    import uvicorn

    threads: list[threading.Thread] = []
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers, client_id="bench-console")
    deps = build_console(cfg, stop, threads, store, lambda c: publisher.publish(Topics().control, c))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(console_app(deps), host="127.0.0.1", port=port, log_level="warning"))
    threads.append(threading.Thread(target=server.run, daemon=True))
    for t in threads:
        t.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/whoami", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    return server, threads, url


def page_latencies(url: str) -> list[float]:
    filters = [
        {},
        {"user": "user-0042"},
        {"feedback_type": "correction", "quality_min": 0.3, "quality_max": 0.8},
        {"since": "2026-11-20T00:00:00Z", "until": "2026-12-10T00:00:00Z", "active": "true"},
        {"near_identical": "true"},
        {"feedback_type": "correction", "page": 400},  # a deep page
    ]
    out: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/api/v1/pairs")  # warm up
        for _ in range(PAGE_ROUNDS):
            for f in filters:
                started = time.perf_counter()
                r = client.get("/api/v1/pairs", params={"size": 50, **f})
                out.append((time.perf_counter() - started) * 1000)
                r.raise_for_status()
                assert r.json()["rows"], f
    return out


def export_rate(url: str, fmt: str) -> float:
    started = time.perf_counter()
    with httpx.stream("GET", f"{url}/api/v1/pairs/export", params={"format": fmt}, timeout=600) as r:
        r.raise_for_status()
        size = sum(len(chunk) for chunk in r.iter_bytes())
    seconds = time.perf_counter() - started
    if fmt == "jsonl":
        assert size > PAIRS * 50
    return PAIRS / seconds


def sql_latencies(store: ClickHouseStore) -> list[float]:
    out = []
    for i in range(30):
        started = time.perf_counter()
        store.query(
            "SELECT user_id, count(), avg(quality_score), countIf(is_active) FROM sam.preference_pairs FINAL "
            "WHERE user_id = {u:String} GROUP BY user_id",
            {"u": f"user-{i * 7 % USERS:04d}"},
        )
        out.append((time.perf_counter() - started) * 1000)
    return out


def progress_latencies(cfg: Config, url: str) -> tuple[list[float], float]:
    rid = uuid.uuid4()
    topic = Topics(cfg.kafka.topic_prefix).training
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers, client_id="bench-progress")
    produced: dict[str, float] = {}
    with browser_page() as page:
        page.goto(f"{url}/console/")  # a first visit: the page, its assets, the first page of 100k pairs
        page.wait_for_selector("#pairs tbody tr")
        ready_ms = float(page.evaluate("performance.now()"))  # since this navigation started
        page.goto(f"{url}/console/#training/{rid}")
        page.wait_for_selector("body[data-live=open]")
        page.wait_for_selector("#job-view:not([hidden])")
        time.sleep(1.0)  # the tail is assigned at the topic's end before the first event
        for step in range(1, PROGRESS_EVENTS + 1):
            event = TrainingProgressed(
                event_id=uuid.uuid4(),
                user_id="bench",
                correlation_id=rid,
                request_id=rid,
                step=step,
                total_steps=PROGRESS_EVENTS,
                loss=1.0 / step,
                eta_s=1.0,
                metrics={"rewards/accuracies": 0.5, "rewards/margins": step / 10},
            )
            produced[str(event.event_id)] = time.time() * 1000
            publisher.publish(topic, event)
            publisher.flush(timeout_s=10)
            time.sleep(0.1)  # ~10 points a second, as a fast job reports
        page.wait_for_function(f"window.__console.drawn.length >= {PROGRESS_EVENTS}", timeout=30_000)
        drawn = page.evaluate("window.__console.drawn")
    return [d["at"] - produced[d["event_id"]] for d in drawn if d["event_id"] in produced], ready_ms


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    broker = Broker(home=work / "kafka", port=free_port(), controller_port=free_port())
    stop = threading.Event()
    store = None
    server = None
    try:
        say("starting a broker ...")
        broker.start()
        cfg = Config.model_validate(
            {
                "state_dir": str(work / "state"),
                "kafka": {"bootstrap_servers": broker.bootstrap, "topic_prefix": "bench.", "partitions": 3},
            }
        )
        ensure_topics(cfg.kafka)
        store = ClickHouseStore(f"chdb://{work / 'ch'}", "sam")
        store.migrate()
        say(f"inserting {PAIRS} pairs of {USERS} users ...")
        started = time.perf_counter()
        insert_pairs(store, pair_rows(PAIRS, USERS))
        say(f"  {time.perf_counter() - started:.1f}s")
        server, _, url = serve(cfg, store, stop)

        say("pages ...")
        pages = page_latencies(url)
        say("export ...")
        jsonl = [export_rate(url, "jsonl") for _ in range(2)]
        parquet = export_rate(url, "parquet")
        say("sql ...")
        sql = sql_latencies(store)
        say("progress to browser ...")
        progress, ready_ms = progress_latencies(cfg, url)
        result = {
            "pairs": PAIRS,
            "pairs_page_ms_p50": round(statistics.median(pages), 1),
            "pairs_page_ms_p99": round(pct(pages, 0.99), 1),
            "pairs_page_ms_max": round(max(pages), 1),
            "pairs_page_requests": len(pages),
            "export_rows_per_s": round(max(jsonl)),
            "export_rows_per_s_parquet": round(parquet),
            "progress_event_to_browser_ms_p50": round(statistics.median(progress), 1),
            "progress_event_to_browser_ms_p99": round(pct(progress, 0.99), 1),
            "progress_event_to_browser_ms_max": round(max(progress), 1),
            "progress_points": len(progress),
            "page_ready_ms": round(ready_ms, 1),
            "sql_query_ms_p50": round(statistics.median(sql), 2),
            "sql_query_ms_p99": round(pct(sql, 0.99), 2),
        }
        print(json.dumps(result))
    finally:
        stop.set()
        if server is not None:
            server.should_exit = True
        if store is not None:
            store.close()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
