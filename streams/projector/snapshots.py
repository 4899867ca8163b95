"""A user's dataset at a threshold's log position: the stored rows, overlaid with the batch's rows before it.

The projector cuts the thresholds of a batch together, with one read of the store for all their
users, *before* it writes the batch's rows (one insert per table). The store then holds the log up
to the batch; each threshold adds the rows of its user that the batch holds before it, with the
store's own replacing rule (a later row of a key replaces an earlier one: ``preference_pairs`` is a
``ReplacingMergeTree(version)`` whose version is the pairs-topic offset, and the batch's offsets of
one user are increasing; ``labelled_examples`` keeps the last row). So a snapshot holds exactly the
log before its threshold, as if the rows before it had been written and read back, which
``tests/unit/test_projector_snapshots.py`` checks against a real chDB store.

Values are those a round trip through the store gives: ``DateTime64(3)`` keeps milliseconds
(clickhouse-connect truncates), ``Float64`` and ``String`` are exact, ``metadata`` is the stored JSON text.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.snapshot import EXAMPLE_COLUMNS as SNAPSHOT_EXAMPLE_COLUMNS
from schemas.snapshot import SNAPSHOT_COLUMNS
from streams.projector import rows as R

_PAIR_AT = {name: R.PAIR_COLUMNS.index(name) for name in (*SNAPSHOT_COLUMNS, "is_active")}
_EXAMPLE_AT = {name: R.EXAMPLE_COLUMNS.index(name) for name in SNAPSHOT_EXAMPLE_COLUMNS}


def stored_ms(at: datetime) -> datetime:
    """A datetime as ``DateTime64(3, 'UTC')`` gives it back: UTC, milliseconds (truncated)."""
    at = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _pair_record(row: Sequence[Any]) -> dict[str, Any]:
    record = {name: row[i] for name, i in _PAIR_AT.items()}
    record["created_at"] = stored_ms(record["created_at"])
    return record


def _example_record(row: Sequence[Any]) -> dict[str, Any]:
    record = {name: row[i] for name, i in _EXAMPLE_AT.items()}
    record["created_at"] = stored_ms(record["created_at"])
    return record


def active_pairs_at(stored: Sequence[dict[str, Any]], before: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The active pairs: ``stored`` (the store's active pairs of the user) replaced, key by key, by
    ``before`` (the batch's ``preference_pairs`` rows of the user before the threshold, in log order).
    Sorted by pair id (as text), as the snapshot's rows are."""
    by_id: dict[str, dict[str, Any]] = {str(r["pair_id"]): r for r in stored}
    for row in before:
        record = _pair_record(row)
        by_id[str(record["pair_id"])] = record
    active = [r for r in by_id.values() if r.get("is_active", True)]
    return sorted(active, key=lambda r: str(r["pair_id"]))


def examples_at(stored: Sequence[dict[str, Any]], before: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The labelled examples: ``stored`` with the batch's rows before the threshold (the last row of an id wins)."""
    by_id: dict[str, dict[str, Any]] = {str(r["example_id"]): r for r in stored}
    for row in before:
        record = _example_record(row)
        by_id[str(record["example_id"])] = record
    return sorted(by_id.values(), key=lambda r: str(r["example_id"]))


def ids(rows: Sequence[dict[str, Any]], column: str) -> tuple[uuid.UUID, ...]:
    return tuple(uuid.UUID(str(r[column])) for r in rows)
