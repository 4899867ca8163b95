"""A lagging decider holds a bounded number of fetched records, however far behind it is.

Faust hands ``broker_max_poll_records`` to aiokafka as ``max_poll_records``; left at Faust's default
(None) one poll decodes every record aiokafka prefetched, up to a 50 MB fetch, into
``ConsumerRecord`` objects that stay alive while the agent works through them: the soak's decider
held 119,489 of them with a lag of 260,000 events, and its RSS grew with its lag."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from schemas.config import Config
from streams.decider.app import create_app


def config(tmp_path: Path, batch_size: int) -> Config:
    # The decider's length checks load a tokenizer: a one-word one is enough to build the app.
    Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
    return Config.model_validate(
        {"model": {"base": str(tmp_path)}, "state_dir": str(tmp_path / "state"), "streams": {"batch_size": batch_size}}
    )


def worker_consumer_poll_limit(cfg: Config) -> Any:
    """The ``max_poll_records`` of the aiokafka consumer Faust builds for the decider (not started)."""

    async def build() -> Any:
        app = create_app(cfg)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            return consumer._max_poll_records
        finally:
            await consumer.stop()

    return asyncio.run(build())


def test_one_poll_of_a_lagging_decider_decodes_at_most_one_batch_of_records(tmp_path: Path) -> None:
    assert worker_consumer_poll_limit(config(tmp_path, batch_size=1000)) == 1000


def test_the_poll_bound_follows_the_configured_batch_size(tmp_path: Path) -> None:
    assert worker_consumer_poll_limit(config(tmp_path, batch_size=250)) == 250
