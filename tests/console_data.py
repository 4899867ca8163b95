"""Synthetic projection rows for console tests and the console benchmark, written straight into the
store (the pipeline's own tests cover how rows get there; these exercise what the console reads)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.ids import feedback_event_id, pair_id
from streams.projector.rows import PAIR_COLUMNS, REJECTED_COLUMNS

BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
WORDS = (
    "capital",
    "river",
    "answer",
    "please",
    "thanks",
    "short",
    "clear",
    "exact",
    "kindly",
    "number",
    "city",
    "north",
    "south",
    "large",
    "small",
    "quick",
    "bright",
    "quiet",
    "Hope",
    "this",
    "helps!",
)


def pair_rows(n: int, users: int, seed: int = 0, start_offset: int = 0) -> list[list[Any]]:
    """``n`` pairs over ``users`` users, a day apart per 1000 pairs; ~10% near-identical, 3 feedback types."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        user = f"user-{i % users:04d}"
        prompt = f"Question {i}: what is the {rng.choice(WORDS)} of {rng.choice(WORDS)}?"
        rejected = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        near = rng.random() < 0.1
        chosen = rejected + (" ok" if near else " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))))
        kind = rng.choice(("correction", "correction", "correction", "thumbs_down"))
        fid = feedback_event_id(user, f"fb-{seed}-{i}")
        created = BASE_TIME + timedelta(seconds=i * 86.4)
        meta = {"near_identical": near, "similarity": 0.95 if near else round(rng.random() * 0.6, 3)}
        rows.append(
            [
                pair_id(user, prompt, chosen, rejected),
                user,
                prompt,
                chosen,
                rejected,
                round(0.5 + rng.random() / 2, 3),
                round(rng.random(), 4),
                kind,
                created,
                True,
                1.0,
                json.dumps(meta, sort_keys=True),
                fid,
                fid,
                "sam.feedback.v1",
                i % 6,
                start_offset + i,
                start_offset + i,
                created,
            ]
        )
    return rows


def rejected_rows(n: int, seed: int = 0) -> list[list[Any]]:
    rng = random.Random(seed)
    codes = ("low_quality", "near_duplicate", "chosen_equals_rejected", "low_confidence")
    rows = []
    for i in range(n):
        user = f"user-{i % 7:04d}"
        fid = feedback_event_id(user, f"rej-{seed}-{i}")
        code = codes[i % len(codes)]
        rows.append(
            [
                fid,
                user,
                "correction",
                [code],
                [f"detail of {code}"],
                round(rng.random() / 2, 3),
                f"Rejected question {i}?",
                "same answer",
                "same answer",
                BASE_TIME + timedelta(minutes=i),
                fid,
                "sam.feedback.v1",
                0,
                100_000 + i,
            ]
        )
    return rows


def insert_pairs(store: Any, rows: list[list[Any]], batch: int = 20_000) -> None:
    for start in range(0, len(rows), batch):
        store.insert(
            "preference_pairs", rows[start : start + batch], PAIR_COLUMNS, dedup_token=f"console-data-{uuid.uuid4()}"
        )


def insert_rejected(store: Any, rows: list[list[Any]]) -> None:
    store.insert("rejected_feedback", rows, REJECTED_COLUMNS, dedup_token=f"console-data-{uuid.uuid4()}")
