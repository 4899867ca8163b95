"""Training requests from pairs on hand, without the stream side: a snapshot in the artifact store and
the ``TrainingRequested`` the projector would publish for it. Used by ``samtuner train --pairs``,
the trainer benchmark and tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore
from schemas.events import DatasetRef, TrainingRequested
from schemas.ids import derived_event_id, example_id, pair_id
from schemas.snapshot import snapshot_bytes
from trainer.errors import DatasetError

REQUIRED = ("prompt", "chosen_response", "rejected_response")


def pair_rows(
    user_id: str,
    pairs: Iterable[tuple[str, str, str]],
    created_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Snapshot rows for (prompt, chosen, rejected) triples, with the pair ids the decider would give them."""
    when = created_at or datetime.now(UTC)
    return [
        {
            "pair_id": str(pair_id(user_id, p, c, r)),
            "prompt": p,
            "chosen_response": c,
            "rejected_response": r,
            "confidence_score": 1.0,
            "quality_score": 1.0,
            "training_weight": 1.0,
            "feedback_type": "correction",
            "created_at": when,
            "metadata": {},
        }
        for p, c, r in pairs
    ]


def read_pairs_file(path: Path, user_id: str) -> list[dict[str, Any]]:
    """A JSONL file of ``{"prompt", "chosen_response", "rejected_response"}`` objects -> snapshot rows."""
    triples = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not JSON: {exc}") from exc
        missing = [k for k in REQUIRED if not isinstance(obj, dict) or not str(obj.get(k) or "").strip()]
        if missing:
            raise DatasetError(f"{path}:{n}: missing or empty {', '.join(missing)}")
        triples.append((obj["prompt"], obj["chosen_response"], obj["rejected_response"]))
    if not triples:
        raise DatasetError(f"{path}: no pairs")
    return pair_rows(user_id, triples)


def example_rows(
    user_id: str,
    examples: Iterable[tuple[str, str, bool]],
    created_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """Snapshot rows for labelled examples (prompt, response, desirable), with the ids the decider would give them."""
    when = created_at or datetime.now(UTC)
    return [
        {
            "example_id": str(example_id(user_id, p, r, good)),
            "prompt": p,
            "response": r,
            "desirable": good,
            "confidence_score": 1.0,
            "created_at": when,
            "metadata": {},
        }
        for p, r, good in examples
    ]


def local_request(
    store: ArtifactStore,
    user_id: str,
    generation: int,
    rows: Sequence[dict[str, Any]],
    trigger: str = "manual",
    examples: Sequence[dict[str, Any]] = (),
) -> TrainingRequested:
    """Store ``rows`` (pairs) and ``examples`` as a content-addressed snapshot; describe the job that trains on it."""
    uri, sha = store.put_dataset(snapshot_bytes(rows, examples))
    request_id = derived_event_id("local-training-request", user_id, str(generation), sha)
    now = datetime.now(UTC)
    return TrainingRequested(
        event_id=request_id,
        user_id=user_id,
        correlation_id=request_id,
        request_id=request_id,
        generation=generation,
        trigger="manual" if trigger == "manual" else "threshold",
        triggered_at=now,
        dataset=DatasetRef(
            uri=uri,
            sha256=sha,
            rows=len(rows) + len(examples),
            pair_ids=tuple(uuid.UUID(str(r["pair_id"])) for r in rows),
            example_ids=tuple(uuid.UUID(str(e["example_id"])) for e in examples),
        ),
    )
