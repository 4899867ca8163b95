"""ClickHouse through clickhouse-connect: the embedded chDB engine by default, a server by DSN.

One ``ClickHouseStore`` per process wraps one client: every call is serialized by a lock (chDB is
one engine per process and its client is synchronous; async callers use ``run_in_executor``), and
every driver error is translated into :class:`infra.errors.StoreError` here, once.

Analysts' queries (:meth:`ClickHouseStore.query_read_only`) run on a second client of their own whose
session is ``readonly=1``, and each query carries ``readonly=1`` too: ClickHouse refuses anything that
writes. The session matters on chDB: it runs ``SELECT 1; DROP TABLE t; SELECT 2`` as three statements
and puts a per-query setting on the last one only, and a refused write leaves ``readonly`` set on the
session it was tried on (so never on the projector's). A failed query closes that client (chDB leaves
the rest of a failed multi-statement query pending on it); the next one opens a fresh one.

Rebuilds (``streams/projector/rebuild.py``) use :func:`fresh_database_name`, :meth:`ClickHouseStore.swap_tables`
and :meth:`ClickHouseStore.drop_database`: tables are built in a database of their own, then swapped
in with ``EXCHANGE TABLES`` (Atomic databases: chDB's default and a server's), or by renames where the
engine has no exchange (Ordinary databases).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import clickhouse_connect

from infra.credentials import read_secret
from infra.errors import QueryFailed, QueryRefused, StoreError, StoreLocked, StoreUnreachable, SwapIncomplete
from schemas.config import Config
from schemas.ddl import MIGRATIONS, Migration
from schemas.secrets import Masker, redact_url

# clickhouse-connect sets urllib3's logger to WARNING on import, so each failed connection would print
# a raw retry line; our errors say what failed, once (StoreUnreachable).
logging.getLogger("urllib3").setLevel(logging.ERROR)

MAX_RESULT_ROWS = 100_000
# Order matters: ClickHouse applies settings one by one and refuses every change after readonly=1.
# 'break' stops reading past the row limit (a block or so more arrives) instead of failing the query.
READ_ONLY_SESSION = {
    "max_execution_time": 30,
    "max_result_rows": MAX_RESULT_ROWS + 1,
    "result_overflow_mode": "break",
    "readonly": 1,
}
READ_ONLY_QUERY = {"readonly": 1}
READONLY_ERROR_CODE = 164  # READONLY: "Cannot execute query in readonly mode", "Cannot modify ... setting"


@dataclass(frozen=True)
class ReadOnlyResult:
    columns: tuple[str, ...]
    types: tuple[str, ...]  # ClickHouse type names
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than max_rows: the rest were not read


def _is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def embedded_holder(dsn: str) -> int | None:
    """The pid of another process holding this embedded store (-1 if unknown), or None.

    chDB flocks ``<data dir>/status`` and writes its pid there; a second process cannot open the
    directory. Probing the lock first spares a caller chDB's failed start (and its noise on stderr).
    Our own process's lock is no obstacle: chDB lets one process open its directory many times.
    """
    if not _is_chdb(dsn):
        return None
    status = Path(dsn[len("chdb://") :]) / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            found = re.search(r"^PID: (\d+)", status.read_text(errors="replace"), re.MULTILINE)
            pid = int(found.group(1)) if found else -1
            return None if pid == os.getpid() else pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _locked_error(dsn: str, pid: int, detail: str = "") -> StoreLocked:
    who = f"process {pid}" if pid > 0 else "another process"
    return StoreLocked(
        f"the embedded ClickHouse at {redact_url(dsn)} is open in {who} (one chDB data directory can be open in one "
        f"process only; run every role in one process with 'samtuner run', or use a ClickHouse server DSN)"
        + (f": {detail}" if detail else "")
    )


def _error_code(exc: Exception) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"Code: (\d+)", str(exc))
    return int(found.group(1)) if found else None


def _cause(text: str, exc: Exception) -> str:
    """The short cause in a driver's long message ('[Errno 111] Connection refused'), or its first line."""
    found = re.search(r"\[Errno -?\d+\] [^\"')\]]+", text)
    if found:
        return found.group(0).strip()
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


NOT_IMPLEMENTED = 48  # e.g. EXCHANGE TABLES in an Ordinary database


def fresh_database_name(existing: set[str], base: str) -> str:
    """``<base>_rebuild_<n>``, the first ``n`` not taken."""
    n = 1
    while f"{base}_rebuild_{n}" in existing:
        n += 1
    return f"{base}_rebuild_{n}"


def open_store(cfg: Config, database: str | None = None) -> ClickHouseStore:
    """The store of a config: its DSN, with the password from clickhouse.password_env/_file if set;
    on ``database`` instead of the config's where given (a rebuild's own)."""
    ch = cfg.clickhouse
    password = read_secret(ch.password_env, ch.password_file, "clickhouse")
    return ClickHouseStore(
        cfg.clickhouse_dsn, database or ch.database, password=password, connect_timeout_s=ch.connect_timeout_s
    )


class ClickHouseStore:
    def __init__(
        self, dsn: str, database: str = "sam", password: str | None = None, connect_timeout_s: float = 5.0
    ) -> None:
        self.dsn = dsn
        self.database = database
        self._lock = threading.RLock()
        # Errors echo what the driver says, which can hold the DSN: never its password.
        self._password = password
        self._mask = Masker([password] if password else [])
        where = redact_url(dsn)
        self._read_only_client: Any = None
        # chDB is one engine: the analysts' client waits for the store's lock. A server needs no such wait.
        self._read_only_lock = self._lock if _is_chdb(dsn) else threading.RLock()
        holder = embedded_holder(dsn)
        if holder is not None:
            raise _locked_error(dsn, holder)
        try:
            if _is_chdb(dsn):
                path = dsn[len("chdb://") :]
                if path and path != "memory" and not path.startswith(":memory:"):
                    Path(path).mkdir(parents=True, exist_ok=True)
                self._client = clickhouse_connect.get_client(dsn=dsn)
            else:
                extra: dict[str, Any] = {"password": password} if password is not None else {}
                self._client = clickhouse_connect.get_client(
                    dsn=dsn,
                    connect_timeout=connect_timeout_s,
                    send_receive_timeout=max(30.0, connect_timeout_s),
                    **extra,
                )
        except Exception as exc:
            text = self._mask(str(exc))
            holder = embedded_holder(dsn)  # taken meanwhile? chDB's own error does not always say so
            if holder is not None or "Cannot lock file" in text:
                raise _locked_error(dsn, holder or -1, text) from exc
            if not _is_chdb(dsn):
                raise StoreUnreachable(
                    f"cannot reach ClickHouse at {where}: {_cause(text, exc)}; start the ClickHouse server, or "
                    "remove clickhouse.dsn to use the embedded engine"
                ) from exc
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

    def query_read_only(
        self, sql: str, parameters: dict[str, Any] | None = None, max_rows: int = 10_000
    ) -> ReadOnlyResult:
        """Run an analyst's query under ``readonly=1``; at most ``max_rows`` rows (and ``MAX_RESULT_ROWS``).

        Raises :class:`QueryRefused` when it writes, :class:`QueryFailed` (with ClickHouse's message)
        when ClickHouse rejects it otherwise.
        """
        with self._read_only_lock:
            try:
                client = self._read_only()
                result = client.query(sql, parameters=parameters, settings=READ_ONLY_QUERY)
                names, types = tuple(result.column_names), tuple(t.name for t in result.column_types)
                rows = [tuple(row) for row in result.result_rows]
                if not names:  # chDB sends no header for an empty result: ask for the columns alone
                    names, types = self._columns_of(client, sql, parameters)
            except Exception as exc:
                # chDB leaves a handle whose multi-statement query failed half way with the rest of it
                # pending (the next result would start with it): a failed query costs the client.
                self._drop_read_only()
                code = _error_code(exc)
                if code == READONLY_ERROR_CODE:
                    raise QueryRefused(self._mask(str(exc))) from exc
                if code is not None:
                    raise QueryFailed(self._mask(str(exc))) from exc
                raise StoreError(self._mask(f"ClickHouse query failed: {exc}")) from exc
        return ReadOnlyResult(names, types, rows[:max_rows], truncated=len(rows) > max_rows)

    @staticmethod
    def _columns_of(
        client: Any, sql: str, parameters: dict[str, Any] | None
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        raw = client.raw_query(sql, parameters=parameters, settings=READ_ONLY_QUERY, fmt="JSONCompact")
        meta = json.loads(raw).get("meta", []) if raw.strip() else []
        return tuple(m["name"] for m in meta), tuple(m["type"] for m in meta)

    def _drop_read_only(self) -> None:
        client, self._read_only_client = self._read_only_client, None
        if client is not None:
            with contextlib.suppress(Exception):  # it failed already; closing is best effort
                client.close()

    def _read_only(self) -> Any:
        if self._read_only_client is None:
            try:
                extra: dict[str, Any] = {"password": self._password} if self._password is not None else {}
                self._read_only_client = clickhouse_connect.get_client(
                    dsn=self.dsn, settings=READ_ONLY_SESSION, **extra
                )
            except Exception as exc:
                raise StoreError(
                    self._mask(f"cannot open a read-only client on ClickHouse at {redact_url(self.dsn)}: {exc}")
                ) from exc
        return self._read_only_client

    def raw_query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        fmt: str = "JSONEachRow",
        settings: dict[str, Any] | None = None,
    ) -> bytes:
        """The result as ClickHouse formats it (``JSONEachRow``, ``Parquet``, ...): no Python rows."""
        with self._lock:
            try:
                return bytes(self._client.raw_query(sql, parameters=parameters, fmt=fmt, settings=settings))
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

    def databases(self) -> set[str]:
        return {str(row[0]) for row in self.query("SELECT name FROM system.databases")}

    def tables(self, database: str) -> dict[str, str]:
        """The tables of a database: name -> engine (views included, engine 'View')."""
        rows = self.query("SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": database})
        return {str(name): str(engine) for name, engine in rows}

    def swap_tables(self, live: str, rebuilt: str, tables: Sequence[str]) -> str:
        """Put ``rebuilt.t`` in place of ``live.t`` for each table, and ``live.t`` in ``rebuilt``.

        Each table is swapped in one statement; if one fails, the ones already swapped are swapped back
        (the live database is as it was) and the error is raised. Returns how: 'exchange' or 'rename'.
        """
        done: list[str] = []
        how = "exchange"
        try:
            for table in tables:
                try:
                    if how == "exchange":
                        self.command(f"EXCHANGE TABLES {live}.{table} AND {rebuilt}.{table}")
                    else:
                        self._rename_swap(live, rebuilt, table)
                except StoreError as exc:
                    if how != "exchange" or _error_code(exc) != NOT_IMPLEMENTED:
                        raise
                    how = "rename"  # an Ordinary database: three renames in one statement instead
                    self._rename_swap(live, rebuilt, table)
                done.append(table)
        except StoreError as exc:
            stuck = []
            for table in reversed(done):
                try:
                    if how == "exchange":
                        self.command(f"EXCHANGE TABLES {live}.{table} AND {rebuilt}.{table}")
                    else:
                        self._rename_swap(live, rebuilt, table)
                except StoreError:
                    stuck.append(table)
            if stuck:
                raise SwapIncomplete(
                    f"swapping {rebuilt} into {live} failed ({exc}) and swapping back failed for {', '.join(stuck)}: "
                    f"the old {', '.join(stuck)} are in {rebuilt} (keep it; EXCHANGE TABLES them back)"
                ) from exc
            raise
        return how

    def _rename_swap(self, a: str, b: str, table: str) -> None:
        self.command(
            f"RENAME TABLE {a}.{table} TO {b}.{table}__swap, {b}.{table} TO {a}.{table}, "
            f"{b}.{table}__swap TO {b}.{table}"
        )

    def drop_database(self, name: str) -> None:
        if name == self.database:
            raise StoreError(f"refusing to drop {name}: it is this store's own database")
        self.command(f"DROP DATABASE IF EXISTS {name} SYNC")

    def close(self) -> None:
        with self._lock:  # closing is best effort; nothing to recover
            self._drop_read_only()
            with contextlib.suppress(Exception):
                self._client.close()
