"""Export active pairs in TRL's preference format (``prompt`` / ``chosen`` / ``rejected``), as JSONL
or Parquet, from the projection store or, when another process holds the embedded store, by folding
the pairs topic (the same events the projection is made of)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from infra.clickhouse import ClickHouseStore
from infra.kafka import RawMessage, events_in
from schemas.events import (
    PairAccepted,
    PairDeactivated,
    PairReweighted,
    PairsDeactivated,
    PairsReweighted,
    UserErased,
    UserForgotten,
)

Format = Literal["jsonl", "parquet"]
EXPORT_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "pair_id",
    "user_id",
    "training_weight",
    "quality_score",
    "confidence_score",
    "feedback_type",
    "created_at",
)


def from_store(store: ClickHouseStore, user_id: str | None) -> list[dict[str, Any]]:
    where = "is_active" + (" AND user_id = {user:String}" if user_id is not None else "")
    rows = store.query_dicts(
        "SELECT prompt, chosen_response AS chosen, rejected_response AS rejected, toString(pair_id) AS pair_id, "
        "user_id, training_weight, quality_score, confidence_score, feedback_type, created_at "
        f"FROM {store.database}.preference_pairs FINAL WHERE {where} ORDER BY user_id, pair_id",
        {"user": user_id} if user_id is not None else None,
    )
    return rows


def from_log(messages: Iterable[RawMessage], user_id: str | None) -> list[dict[str, Any]]:
    """Fold PairAccepted / PairDeactivated / PairReweighted / UserForgotten into the active pairs."""
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for event in events_in(messages):
        if user_id is not None and event.user_id != user_id:
            continue
        if isinstance(event, PairAccepted):
            pairs.setdefault(
                (event.user_id, str(event.pair_id)),
                {
                    "prompt": event.prompt,
                    "chosen": event.chosen_response,
                    "rejected": event.rejected_response,
                    "pair_id": str(event.pair_id),
                    "user_id": event.user_id,
                    "training_weight": event.training_weight,
                    "quality_score": event.quality_score,
                    "confidence_score": event.confidence_score,
                    "feedback_type": event.feedback_type,
                    "created_at": event.created_at,
                    "active": True,
                },
            )
        elif isinstance(event, PairDeactivated) and (row := pairs.get((event.user_id, str(event.pair_id)))):
            row["active"] = False
        elif isinstance(event, PairReweighted) and (row := pairs.get((event.user_id, str(event.pair_id)))):
            row["training_weight"] = event.training_weight
        elif isinstance(event, PairsDeactivated | PairsReweighted):
            for pid in event.pair_ids:
                if row := pairs.get((event.user_id, str(pid))):
                    if isinstance(event, PairsDeactivated):
                        row["active"] = False
                    else:
                        row["training_weight"] = event.training_weight
        elif isinstance(event, UserForgotten | UserErased):
            for key in [k for k in pairs if k[0] == event.user_id]:
                del pairs[key]
    active = [{k: v for k, v in row.items() if k != "active"} for row in pairs.values() if row["active"]]
    return sorted(active, key=lambda r: (r["user_id"], r["pair_id"]))


def write(rows: list[dict[str, Any]], out: Path, fmt: Format) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as fh:
            for row in _ordered(rows):
                fh.write(jsonl_line(row))
    else:
        out.write_bytes(parquet_bytes(rows))
    return len(rows)


def jsonl_line(row: dict[str, Any]) -> str:
    """One exported pair as a JSONL line (TRL's columns first, in order)."""
    return json.dumps({k: row[k] for k in EXPORT_COLUMNS}, ensure_ascii=False, default=str) + "\n"


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(list(_ordered(rows)), schema=_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _ordered(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield {k: row[k] for k in EXPORT_COLUMNS}


_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("pair_id", pa.string()),
        ("user_id", pa.string()),
        ("training_weight", pa.float64()),
        ("quality_score", pa.float64()),
        ("confidence_score", pa.float64()),
        ("feedback_type", pa.string()),
        ("created_at", pa.timestamp("ms", tz="UTC")),
    ]
)
