"""ClickHouse through clickhouse-connect: the embedded chDB engine by default, a server by DSN.

One ``ClickHouseStore`` per process wraps one client: every call is serialized by a lock (chDB is
one engine per process and its client is synchronous; async callers use ``run_in_executor``), and
every driver error is translated into :class:`infra.errors.StoreError` here, once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import clickhouse_connect

from infra.credentials import read_secret
from infra.errors import StoreError, StoreUnreachable
from schemas.config import Config
from schemas.ddl import MIGRATIONS, Migration
from schemas.secrets import Masker, redact_url

# clickhouse-connect sets urllib3's logger to WARNING on import, so each failed connection would print
# a raw retry line; our errors say what failed, once (StoreUnreachable).
logging.getLogger("urllib3").setLevel(logging.ERROR)


def _is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def _cause(text: str, exc: Exception) -> str:
    """The short cause in a driver's long message ('[Errno 111] Connection refused'), or its first line."""
    found = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)
    if found:
        return found.group(0).strip()
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def open_store(cfg: Config) -> ClickHouseStore:
    """The store of a config: its DSN, with the password from clickhouse.password_env/_file if set."""
    ch = cfg.clickhouse
    password = read_secret(ch.password_env, ch.password_file, "clickhouse")
    return ClickHouseStore(cfg.clickhouse_dsn, ch.database, password=password, connect_timeout_s=ch.connect_timeout_s)


class ClickHouseStore:
    def __init__(self, dsn: str, database: str = "sam", password: str | None = None,
                 connect_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.database = database
        self._lock = threading.RLock()
        # Errors echo what the driver says, which can hold the DSN: never its password.
        self._mask = Masker([password] if password else [])
        where = redact_url(dsn)
        try:
            if _is_chdb(dsn):
                path = dsn[len("chdb://"):]
                if path and path != "memory" and not path.startswith(":memory:"):
                    Path(path).mkdir(parents=True, exist_ok=True)
                self._client = clickhouse_connect.get_client(dsn=dsn)
            else:
                extra: dict[str, Any] = {"password": password} if password is not None else {}
                self._client = clickhouse_connect.get_client(dsn=dsn, connect_timeout=connect_timeout_s,
                                                             send_receive_timeout=max(30.0, connect_timeout_s), **extra)
        except Exception as exc:
            text = self._mask(str(exc))
            if "Cannot lock file" in text or "lock" in text.lower():
                raise StoreError(
                    f"the embedded ClickHouse at {where} is open in another process (one chDB data directory "
                    f"can be open in one process only; run every role in one process with 'samtuner run', "
                    f"or use a ClickHouse server DSN): {text}"
                ) from exc
            if not _is_chdb(dsn):
                raise StoreUnreachable(
                    f"cannot reach ClickHouse at {where}: {_cause(text, exc)}; start the ClickHouse server, or "
                    "remove clickhouse.dsn to use the embedded engine") from exc
            raise StoreError(f"cannot open ClickHouse at {where}: {text}") from exc

    @property
    def embedded(self) -> bool:
        return _is_chdb(self.dsn)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._client.command(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(self._mask(f"ClickHouse command failed: {exc}")) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]
            except Exception as exc:
                raise StoreError(self._mask(f"ClickHouse query failed: {exc}")) from exc

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            try:
                result = self._client.query(sql, parameters=parameters)
                names = result.column_names
                return [dict(zip(names, row, strict=True)) for row in result.result_rows]
            except Exception as exc:
                raise StoreError(self._mask(f"ClickHouse query failed: {exc}")) from exc

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None:
        """Insert rows in one block; a repeated ``dedup_token`` makes the insert a no-op."""
        if not rows:
            return
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        with self._lock:
            try:
                self._client.insert(
                    f"{self.database}.{table}", cast(Any, rows), column_names=list(columns), settings=settings
                )
            except Exception as exc:
                raise StoreError(self._mask(f"insert into {table} ({len(rows)} rows) failed: {exc}")) from exc

    def migrate(self, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
        """Create the database and apply pending migrations; returns the ids applied now."""
        self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.command(
            f"CREATE TABLE IF NOT EXISTS {self.database}.schema_migrations "
            "(id String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY id"
        )
        done = {row[0] for row in self.query(f"SELECT id FROM {self.database}.schema_migrations FINAL")}
        applied = []
        for migration in migrations:
            if migration.id in done:
                continue
            self.command(migration.sql.format(db=self.database))
            self.insert("schema_migrations", [[migration.id]], ["id"])
            applied.append(migration.id)
        return applied

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):  # closing is best effort; nothing to recover
            self._client.close()
