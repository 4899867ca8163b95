"""A lagging decider holds a bounded amount of fetched data, however far behind it is.

Two bounds, both set on the aiokafka consumer Faust builds for the decider:

* ``max_poll_records`` (Faust's ``broker_max_poll_records``): left at Faust's default (None), one
  poll decodes every record aiokafka prefetched into ``ConsumerRecord`` objects that stay alive
  while the agent works through them: the soak's decider held 119,489 of them at a lag of 260,407;
* ``max_partition_fetch_bytes`` (Faust's ``consumer_max_fetch_size``): what aiokafka prefetches per
  partition, compressed. At 17 MiB, the decider's RSS still grew with its lag (+13.9% in 6 minutes
  of the soak, its Python objects flat)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from schemas.config import Config
from schemas.topics import MAX_MESSAGE_BYTES, MIB
from streams.decider.app import FETCH_BYTES_PER_PARTITION, create_app
from tests.decider_config import decider_config


def config(tmp_path: Path, batch_size: int) -> Config:
    return decider_config(tmp_path, streams={"batch_size": batch_size})


def worker_consumer(cfg: Config) -> dict[str, Any]:
    """The bounds of the aiokafka consumer Faust builds for the decider (never started)."""

    async def build() -> dict[str, Any]:
        app = create_app(cfg)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            return {"poll": consumer._max_poll_records, "fetch": consumer._max_partition_fetch_bytes}
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_one_poll_of_a_lagging_decider_decodes_at_most_one_batch_of_records(tmp_path: Path) -> None:
    assert worker_consumer(config(tmp_path, batch_size=1000))["poll"] == 1000


def test_the_poll_bound_follows_the_configured_batch_size(tmp_path: Path) -> None:
    assert worker_consumer(config(tmp_path, batch_size=250))["poll"] == 250


def test_a_lagging_decider_prefetches_a_mib_per_partition_not_the_largest_message(tmp_path: Path) -> None:
    fetch = worker_consumer(config(tmp_path, batch_size=1000))["fetch"]
    assert fetch == FETCH_BYTES_PER_PARTITION == MIB
    assert fetch < MAX_MESSAGE_BYTES  # larger events still pass: test_hostile_payloads.py sends one
