"""Logging set-up for the CLI and the roles: text or JSON lines (``logging.format``), the event's
``correlation_id`` on every line about one, secrets masked, third-party libraries quiet."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from infra.logcontext import current
from schemas.secrets import Masker


class _Context(logging.Filter):
    """Adds ``correlation_id`` (None when the line is about no event) to every record, and masks secrets
    in the message before any handler sees it (logging's own error report prints the raw arguments)."""

    def __init__(self, mask: Masker) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = current()
        with contextlib.suppress(Exception):  # a broken format string is logging's to report, as usual
            record.msg, record.args = self.mask(record.getMessage()), None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, mask: Masker) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        cid = getattr(record, "correlation_id", None)
        return self.mask(line if cid is None else f"{line} [correlation_id={cid}]")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, correlation_id (when about an event), exc."""

    def __init__(self, mask: Masker) -> None:
        super().__init__()
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.mask(record.getMessage()),
        }
        cid = getattr(record, "correlation_id", None)
        if cid is not None:
            out["correlation_id"] = cid
        if record.exc_info:
            out["exc"] = self.mask(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """``secrets``: values to mask wherever they occur (passwords resolved from the environment)."""
    mask = Masker(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(mask) if fmt == "json" else TextFormatter(mask))
    handler.addFilter(_Context(mask))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    for noisy in ("aiokafka", "faust", "mode", "httpx", "uvicorn.access", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Their failures are translated once, with the cause, by our code (infra/): their own lines would
    # only repeat them in raw form.
    for client in ("clickhouse_connect", "urllib3"):
        logging.getLogger(client).setLevel(logging.CRITICAL)


def process_secrets(cfg: Any) -> list[str]:
    """The secrets a process of this config resolves (for masking): Kafka's and ClickHouse's passwords."""
    from infra.credentials import read_secret
    from infra.errors import InfraError

    found = []
    for env, file in (
        (cfg.kafka.security.password_env, cfg.kafka.security.password_file),
        (cfg.clickhouse.password_env, cfg.clickhouse.password_file),
    ):
        try:
            value = read_secret(env, file, "log masking")
        except InfraError:
            continue  # reported where the secret is used
        if value:
            found.append(value)
    return found
