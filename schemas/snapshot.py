"""Dataset snapshots: a user's active pairs and labelled examples as deterministic Parquet bytes.

Same rows -> same bytes -> same sha256. One table, one row per pair (``kind = 'pair'``) or per
labelled example (``kind = 'example'``: a thumbs up/down without a correction, for KTO); the
columns of the other kind are null. Snapshots written before labelled examples were included have
no ``kind`` column: every row is a pair (``row_kind``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# The pairs' columns, as the projector reads them from preference_pairs.
SNAPSHOT_COLUMNS = (
    "pair_id",
    "prompt",
    "chosen_response",
    "rejected_response",
    "confidence_score",
    "quality_score",
    "training_weight",
    "feedback_type",
    "created_at",
    "metadata",
)
# The labelled examples' columns, as the projector reads them from labelled_examples.
EXAMPLE_COLUMNS = ("example_id", "prompt", "response", "desirable", "confidence_score", "created_at", "metadata")

SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("pair_id", pa.string()),
        ("example_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen_response", pa.string()),
        ("rejected_response", pa.string()),
        ("response", pa.string()),
        ("desirable", pa.bool_()),
        ("confidence_score", pa.float64()),
        ("quality_score", pa.float64()),
        ("training_weight", pa.float64()),
        ("feedback_type", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
        ("metadata", pa.string()),
    ]
)


def snapshot_bytes(pairs: Sequence[dict[str, Any]], examples: Sequence[dict[str, Any]] = ()) -> bytes:
    """Rows (any order) -> Parquet bytes: pairs sorted by pair_id, then examples by example_id."""
    ordered = [{**r, "kind": "pair"} for r in sorted(pairs, key=lambda r: str(r["pair_id"]))]
    ordered += [
        {
            **e,
            "kind": "example",
            "training_weight": 1.0,
            "feedback_type": "thumbs_up" if e["desirable"] else "thumbs_down",
        }
        for e in sorted(examples, key=lambda e: str(e["example_id"]))
    ]
    columns = {name: [_cell(name, r.get(name)) for r in ordered] for name in SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=SCHEMA).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=False, store_schema=False)
    return sink.getvalue()


def _cell(name: str, value: Any) -> Any:
    if name in ("pair_id", "example_id") and value is not None:
        return str(value)
    if name == "metadata" and not isinstance(value, str):
        return json.dumps(value or {}, sort_keys=True)
    return value


def read_snapshot(data: bytes) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(data)).to_pylist()


def row_kind(row: dict[str, Any]) -> str:
    """'pair' or 'example' (rows of snapshots without a kind column are pairs)."""
    return str(row.get("kind") or "pair")
