"""Writes tests/replays/demo.jsonl: several users' feedback for the demo-chat model (deterministic).

``make demo`` no longer replays it: it has the real base model answer its users' prompts and builds
their feedback at run time (samtuner/demo_plan.py). This fixture remains for the manual walkthrough
in the README ("Running it yourself", with the demo-chat model) and its answers come from that
model's corpus.

alice corrects 80 answers by adding the sign-off "Hope this helps!" (her threshold crossing is her
last line), repeats one correction (duplicate_pair) and sends one no-op edit (chosen_equals_rejected);
bob corrects a few answers in another style (below the threshold); carol gives thumbs; three
messages are malformed (dead letters). Run: python tests/replays/make_demo.py
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.events import FeedbackType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.demo_model.corpus import SIGN_OFF, facts
from samtuner.fixtures import feedback_line

OUT = Path(__file__).with_name("demo.jsonl")
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ALICE_PAIRS = 80
HELDOUT = [
    "What is the capital of Peru?",
    "What color is a flamingo?",
    "What is the opposite of loud?",
    "What is 7 plus 5?",
]


def demo_facts() -> tuple[list, list]:
    pool = [f for f in facts() if f.question not in HELDOUT and f.family != "sum"]
    rng = random.Random(7)
    rng.shuffle(pool)
    return pool[:ALICE_PAIRS], pool[ALICE_PAIRS : ALICE_PAIRS + 10]


def feedback(
    n: int,
    user: str,
    prompt: str,
    original: str,
    corrected: str | None,
    kind: FeedbackType = "correction",
    confidence: float = 0.95,
) -> dict:
    line = feedback_line(
        user,
        f"{user}-{n:04d}",
        prompt,
        original,
        corrected,
        START + timedelta(seconds=n),
        feedback_type=kind,
        confidence=confidence,
        context={"session": f"{user}-s1"},
    )
    line["headers"] = {"source": "demo"}
    return line


def lines() -> list[dict]:
    alice, bob = demo_facts()
    out: list[dict] = []
    n = 0

    def add(line: dict) -> None:
        nonlocal n
        out.append(line)
        n += 1

    for i, fact in enumerate(alice):
        if i == 20:
            add(feedback(n, "alice", alice[3].question, alice[3].answer, f"{alice[3].answer} {SIGN_OFF}"))
        if i == 30:
            add(feedback(n, "alice", fact.question, fact.answer, f"  {fact.answer} "))
        if i == 40:
            add({"topic": "sam.feedback.v1", "key": "alice", "value": "this is not json {", "headers": {}})
        if i == 50:
            bad = feedback(n, "alice", fact.question, fact.answer, fact.answer + "!")
            bad["value"]["confidence_score"] = "very high"
            add(bad)
        if i == 60:
            bad = feedback(n, "carol", "What is up?", "Not much.", "Hi.")
            del bad["value"]["prompt"]
            add(bad)
        if i % 8 == 0 and i // 8 < len(bob):
            b = bob[i // 8]
            add(feedback(n, "bob", b.question, b.answer, f"Answer: {b.answer}"))
        if i in (10, 70):
            add(feedback(n, "carol", "What is 2 plus 2?", "2 plus 2 is 4.", None, kind="thumbs_up"))
        add(feedback(n, "alice", fact.question, fact.answer, f"{fact.answer} {SIGN_OFF}"))
    return out


if __name__ == "__main__":
    data = lines()
    OUT.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in data))
    print(f"wrote {len(data)} lines to {OUT}")
