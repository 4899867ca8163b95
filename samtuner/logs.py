"""Logging set-up for the CLI and the roles (one format, quiet third-party libraries)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("aiokafka", "faust", "mode", "httpx", "uvicorn.access", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Their failures are translated once, with the cause, by our code (infra/): their own lines would
    # only repeat them in raw form.
    for client in ("clickhouse_connect", "urllib3"):
        logging.getLogger(client).setLevel(logging.CRITICAL)
