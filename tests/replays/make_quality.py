"""Writes tests/replays/quality.jsonl and quality.expected.json: every reason code, every feedback
kind, every dead-letter reason and every data-management command, with what each line must produce.

The expectations are declared here, line by line, by hand: they are not computed by running the
pipeline. Lines carry a ``fixture.phase`` header: the test replays phase 1 (feedback), then phase 2
(commands: Kafka orders a user's events within one topic, not across the feedback and control
topics), then phase 3 (feedback after an erasure). Config the expectations assume: QUALITY_CONFIG.

Run: python tests/replays/make_quality.py
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.events import FeedbackType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from samtuner.fixtures import feedback_line
from schemas.commands import DeactivatePair, EraseUser, RequestTraining, ReweightPair
from schemas.events import PairAccepted, SourceRef
from schemas.ids import pair_id

HERE = Path(__file__).parent
START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
QUALITY_CONFIG = {
    "trigger": {"min_new_pairs": 3},
    "quality": {"prompt_chars": [5, 300], "response_chars": [2, 400], "response_tokens": [1, 64]},
}
RARE = " ".join(f"zq{i}xv{i * 7}kj" for i in range(30))  # < 400 characters, far more than 64 tokens


class Fixture:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.pairs: dict[str, dict[str, Any]] = {}  # pair id -> expected row
        self.rejected: dict[str, list[str]] = {}  # feedback id -> reason codes
        self.examples: list[tuple[str, str, bool]] = []
        self.dead: list[tuple[str, str]] = []  # (reason, stage)
        self.requests: list[tuple[str, int, str, int]] = []  # (user, generation, trigger, rows)
        self.command_rejections: list[str] = []
        self.n = 0

    def _add(self, line: dict[str, Any], phase: int) -> None:
        line.setdefault("headers", {})["fixture.phase"] = str(phase)
        self.lines.append(line)
        self.n += 1

    def feedback(
        self,
        user: str,
        prompt: str,
        original: str,
        corrected: str | None,
        *,
        kind: FeedbackType = "correction",
        confidence: float = 0.95,
        expect: str | list[str],
        phase: int = 1,
        fid: str | None = None,
    ) -> str:
        fid = fid or f"{user}-{self.n:03d}"
        self._add(
            feedback_line(
                user,
                fid,
                prompt,
                original,
                corrected,
                START + timedelta(seconds=self.n),
                feedback_type=kind,
                confidence=confidence,
            ),
            phase,
        )
        if expect == "pair":
            assert corrected is not None
            pid = str(pair_id(user, prompt, corrected, original))
            self.pairs[pid] = {
                "user_id": user,
                "feedback_id": fid,
                "feedback_type": kind,
                "is_active": True,
                "training_weight": 1.0,
            }
            return pid
        if expect in ("up", "down"):
            self.examples.append((user, prompt, expect == "up"))
        elif expect != "nothing":
            self.rejected[fid] = list(expect)
        return fid

    def raw(
        self, value: Any, reason: str, key: str | None = "qa-alice", phase: int = 1, topic: str = "sam.feedback.v1"
    ) -> None:
        line: dict[str, Any] = {"topic": topic, "key": key}
        if isinstance(value, bytes):
            line["value_b64"] = base64.b64encode(value).decode()
        else:
            line["value"] = value
        self._add(line, phase)
        self.dead.append((reason, "decider"))

    def command(self, command: Any, phase: int = 2) -> None:
        self._add(
            {"topic": "sam.control.v1", "key": command.user_id, "value": json.loads(command.model_dump_json())}, phase
        )


def build() -> Fixture:
    f = Fixture()
    q = "What is the capital of {}?"
    a = "The capital of {} is {}."
    sign = " Hope this helps!"
    # alice: three good corrections cross her threshold (3) -> training request, generation 1.
    p1 = f.feedback(
        "qa-alice", q.format("Peru"), a.format("Peru", "Lima"), a.format("Peru", "Lima") + sign, expect="pair"
    )
    p2 = f.feedback(
        "qa-alice",
        q.format("Chile"),
        a.format("Chile", "Santiago"),
        a.format("Chile", "Santiago") + sign,
        expect="pair",
    )
    f.feedback(
        "qa-alice",
        q.format("Cuba"),
        "It is Havana.",
        "The capital of Cuba is Havana, a city by the sea.",
        expect="pair",
    )
    f.requests.append(("qa-alice", 1, "threshold", 3))
    # ... then every reason a correction can be rejected for.
    f.feedback(
        "qa-alice",
        q.format("Peru"),
        a.format("Peru", "Lima"),
        a.format("Peru", "Lima") + sign,
        expect=["duplicate_pair"],
    )
    f.feedback(
        "qa-alice",
        q.format("Chile") + " ",
        a.format("Chile", "Santiago"),
        a.format("Chile", "Santiago") + "  Hope this helps !",
        expect=["near_duplicate"],
    )
    f.feedback(
        "qa-alice",
        q.format("Cuba"),
        "The capital of Cuba is Havana, a city by the sea.",
        "It is Havana.",
        expect=["contradiction"],
    )
    f.feedback(
        "qa-alice",
        q.format("Kenya"),
        a.format("Kenya", "Nairobi"),
        "  The capital of Kenya is  Nairobi. ",
        expect=["chosen_equals_rejected"],
    )
    f.feedback(
        "qa-alice",
        q.format("Kenya"),
        a.format("Kenya", "Nairobi"),
        "THE CAPITAL OF KENYA IS NAIROBI.",
        expect=["case_only_edit"],
    )
    f.feedback("qa-alice", "   ", a.format("Iran", "Tehran"), " ", expect=["empty_prompt", "empty_chosen"])
    f.feedback("qa-alice", q.format("Iraq"), "  ", "The capital of Iraq is Baghdad.", expect=["empty_rejected"])
    f.feedback("qa-alice", q.format("Egypt"), a.format("Egypt", "Cairo"), None, expect=["missing_correction"])
    f.feedback("qa-alice", "Hi?", "Hello there.", "Hello there, how are you?", expect=["prompt_too_short"])
    f.feedback("qa-alice", "Why " + "really " * 60 + "?", "Because.", "Because it is so.", expect=["prompt_too_long"])
    f.feedback("qa-alice", q.format("Japan"), a.format("Japan", "Tokyo"), "T", expect=["chosen_too_short"])
    f.feedback("qa-alice", q.format("China"), "B", a.format("China", "Beijing"), expect=["rejected_too_short"])
    f.feedback(
        "qa-alice", q.format("India"), a.format("India", "New Delhi"), "New Delhi. " * 50, expect=["chosen_too_long"]
    )
    f.feedback("qa-alice", q.format("Spain"), a.format("Spain", "Madrid"), RARE, expect=["chosen_too_long"])
    f.feedback("qa-alice", q.format("Italy"), "Rome. " * 80, a.format("Italy", "Rome"), expect=["rejected_too_long"])
    f.feedback(
        "qa-alice",
        q.format("Greece"),
        a.format("Greece", "Athens"),
        a.format("Greece", "Athens") + sign,
        confidence=0.2,
        expect=["low_confidence", "low_quality"],
    )
    f.feedback(
        "qa-alice",
        q.format("Norway"),
        "The capital of Norway is Bergen.",
        "Oslo.",
        confidence=0.6,
        expect=["low_quality"],
    )
    # A small edit of a long answer: accepted, flagged near-identical in its metadata.
    long_answer = "Berlin is the capital and the largest city of Germany, on the river Spree in the north east."
    f.feedback("qa-alice", q.format("Germany"), long_answer, long_answer.replace("largest", "biggest"), expect="pair")
    # carol: thumbs are labelled examples; a thumbs down with a correction is a pair.
    f.feedback("qa-carol", "What color is snow?", "Snow is white.", None, kind="thumbs_up", expect="up")
    f.feedback("qa-carol", "What color is coal?", "Coal is green.", None, kind="thumbs_down", expect="down")
    f.feedback(
        "qa-carol", "What color is snow?", "Snow is white.", None, kind="thumbs_up", expect=["duplicate_example"]
    )
    f.feedback(
        "qa-carol",
        "What color is grass?",
        "Grass is blue.",
        "Grass is green, thanks to chlorophyll.",
        kind="thumbs_down",
        expect="pair",
    )
    f.feedback(
        "qa-carol",
        "What color is milk?",
        "Milk is white.",
        None,
        kind="thumbs_up",
        confidence=0.1,
        expect=["low_confidence"],
    )
    # dave: one pair, then a manual training request (phase 2).
    f.feedback("qa-dave", "What is 2 plus 2?", "2 plus 2 is 5.", "2 plus 2 is 4, of course.", expect="pair")
    # bob: two pairs, erased in phase 2, the same correction accepted again in phase 3.
    f.feedback("qa-bob", "What sound does a dog make?", "A dog meows.", "A dog barks, loudly.", expect="pair")
    f.feedback("qa-bob", "What sound does a cow make?", "A cow barks.", "A cow moos, softly.", expect="pair")
    # Bytes that are not a feedback event: dead letters with their reason.
    f.raw(b"\xff\xfe\x00 not utf-8", "invalid_utf8")
    f.raw("this is not json {", "invalid_json")
    f.raw([1, 2, 3], "not_an_object")
    f.raw({"user_id": "qa-alice", "prompt": "no type"}, "missing_event_type")
    bad = feedback_line("qa-alice", "bad-type", "Question?", "Answer.", "Better answer.", START)
    bad["value"]["confidence_score"] = "very high"
    f.raw(bad["value"], "invalid_event")
    other = PairAccepted(
        event_id=uuid.UUID(int=1),
        correlation_id=uuid.UUID(int=1),
        user_id="qa-alice",
        pair_id=uuid.UUID(int=2),
        feedback_event_id=uuid.UUID(int=3),
        prompt="p",
        chosen_response="c",
        rejected_response="r",
        confidence_score=1,
        quality_score=1,
        feedback_type="correction",
        created_at=START,
        source=SourceRef(topic="x", partition=0, offset=0),
    )
    f.raw(json.loads(other.model_dump_json()), "unexpected_event_type")
    f.raw(None, "empty_message")
    # Phase 2: commands.
    cid = lambda n: uuid.UUID(int=1000 + n)  # noqa: E731  (fixed ids: a replayed command is the same command)
    f.command(DeactivatePair(command_id=cid(1), issued_at=START, user_id="qa-alice", pair_id=uuid.UUID(p1)))
    f.pairs[p1]["is_active"] = False
    f.command(
        ReweightPair(command_id=cid(2), issued_at=START, user_id="qa-alice", pair_id=uuid.UUID(p2), training_weight=0.5)
    )
    f.pairs[p2]["training_weight"] = 0.5
    f.command(DeactivatePair(command_id=cid(3), issued_at=START, user_id="qa-alice", pair_id=uuid.UUID(int=99)))
    f.command_rejections.append(str(cid(3)))
    f.command(RequestTraining(command_id=cid(4), issued_at=START, user_id="qa-dave"))
    f.requests.append(("qa-dave", 1, "manual", 1))
    f.command(EraseUser(command_id=cid(5), issued_at=START, user_id="qa-bob"))
    for pid in [k for k, v in f.pairs.items() if v["user_id"] == "qa-bob"]:
        del f.pairs[pid]
    f.raw("not a command", "invalid_command", key="qa-alice", phase=2, topic="sam.control.v1")
    # Phase 3: after the erasure, bob's first correction is new again.
    f.feedback(
        "qa-bob",
        "What sound does a dog make?",
        "A dog meows.",
        "A dog barks, loudly.",
        expect="pair",
        phase=3,
        fid="qa-bob-again",
    )
    return f


def expected(f: Fixture) -> dict[str, Any]:
    return {
        "config": QUALITY_CONFIG,
        "pairs": dict(sorted(f.pairs.items())),
        "rejected": dict(sorted(f.rejected.items())),
        "examples": sorted([u, p, d] for u, p, d in f.examples),
        "dead_letters": sorted([r, s] for r, s in f.dead),
        "training_requests": sorted([u, g, t, n] for u, g, t, n in f.requests),
        "command_rejections": f.command_rejections,
        "lines": len(f.lines),
    }


if __name__ == "__main__":
    fixture = build()
    (HERE / "quality.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in fixture.lines))
    (HERE / "quality.expected.json").write_text(json.dumps(expected(fixture), indent=2) + "\n")
    print(
        f"wrote {len(fixture.lines)} lines; {len(fixture.pairs)} pairs, {len(fixture.rejected)} rejections, "
        f"{len(fixture.dead)} dead letters"
    )
