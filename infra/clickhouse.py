"""ClickHouse through clickhouse-connect: the embedded chDB engine by default, a server by DSN.

One ``ClickHouseStore`` per process wraps one client: every call is serialized by a lock (chDB is
one engine per process and its client is synchronous; async callers use ``run_in_executor``), and
every driver error is translated into :class:`infra.errors.StoreError` here, once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import clickhouse_connect

from infra.errors import StoreError
from schemas.ddl import MIGRATIONS, Migration


def _is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


class ClickHouseStore:
    def __init__(self, dsn: str, database: str = "sam") -> None:
        self.dsn = dsn
        self.database = database
        self._lock = threading.RLock()
        try:
            if _is_chdb(dsn):
                path = dsn[len("chdb://"):]
                if path and path != "memory" and not path.startswith(":memory:"):
                    Path(path).mkdir(parents=True, exist_ok=True)
            self._client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            text = str(exc)
            if "Cannot lock file" in text or "lock" in text.lower():
                raise StoreError(
                    f"the embedded ClickHouse at {dsn} is open in another process (one chDB data directory "
                    f"can be open in one process only; run every role in one process with 'samtuner run', "
                    f"or use a ClickHouse server DSN): {text}"
                ) from exc
            raise StoreError(f"cannot open ClickHouse at {dsn}: {text}") from exc

    @property
    def embedded(self) -> bool:
        return _is_chdb(self.dsn)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._client.command(sql, parameters=parameters)
            except Exception as exc:
                raise StoreError(f"ClickHouse command failed: {exc}") from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return [tuple(row) for row in self._client.query(sql, parameters=parameters).result_rows]
            except Exception as exc:
                raise StoreError(f"ClickHouse query failed: {exc}") from exc

    def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            try:
                result = self._client.query(sql, parameters=parameters)
                names = result.column_names
                return [dict(zip(names, row, strict=True)) for row in result.result_rows]
            except Exception as exc:
                raise StoreError(f"ClickHouse query failed: {exc}") from exc

    def raw_query(self, sql: str, parameters: dict[str, Any] | None = None, fmt: str = "JSONEachRow",
                  settings: dict[str, Any] | None = None) -> bytes:
        """The result as ClickHouse formats it (``JSONEachRow``, ``Parquet``, ...): no Python rows."""
        with self._lock:
            try:
                return bytes(self._client.raw_query(sql, parameters=parameters, fmt=fmt, settings=settings))
            except Exception as exc:
                raise StoreError(f"ClickHouse query failed: {exc}") from exc

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
                raise StoreError(f"insert into {table} ({len(rows)} rows) failed: {exc}") from exc

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
