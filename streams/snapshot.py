"""Dataset snapshots: a user's active pairs as deterministic Parquet bytes (same pairs -> same sha256)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SNAPSHOT_COLUMNS = (
    "pair_id", "prompt", "chosen_response", "rejected_response", "confidence_score", "quality_score",
    "training_weight", "feedback_type", "created_at", "metadata",
)

SCHEMA = pa.schema([
    ("pair_id", pa.string()),
    ("prompt", pa.string()),
    ("chosen_response", pa.string()),
    ("rejected_response", pa.string()),
    ("confidence_score", pa.float64()),
    ("quality_score", pa.float64()),
    ("training_weight", pa.float64()),
    ("feedback_type", pa.string()),
    ("created_at", pa.timestamp("ms", tz="UTC")),
    ("metadata", pa.string()),
])


def snapshot_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """Rows (any order) -> Parquet bytes, sorted by pair_id, with no writer-dependent metadata."""
    ordered = sorted(rows, key=lambda r: str(r["pair_id"]))
    columns = {name: [_cell(name, r[name]) for r in ordered] for name in SNAPSHOT_COLUMNS}
    table = pa.Table.from_pydict(columns, schema=SCHEMA).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=False, store_schema=False)
    return sink.getvalue()


def _cell(name: str, value: Any) -> Any:
    if name == "pair_id":
        return str(value)
    if name == "metadata" and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value


def read_snapshot(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()
