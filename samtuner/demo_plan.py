"""Who does what in ``make demo``: the users, their prompts and styles, and the feedback they send.

SAM's original answers are the base model's own greedy answers (``samtuner/demo_answers.py``), so
every correction is on-policy, as in production. ``feedback_lines`` turns the plan and those answers
into replay lines (``samtuner/fixtures.py``), with the bad data a real stream carries: a repeated
correction, a no-op edit, malformed messages and thumbs without a correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from samtuner.demo_styles import ADDS_CAVEAT, ONE_SENTENCE, Style
from samtuner.fixtures import feedback_line
from schemas.events import FeedbackType

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    style: Style
    prompts: tuple[str, ...]  # what the user asks and corrects (trained on)
    heldout: tuple[str, ...]  # asked before and after training, never corrected


@dataclass(frozen=True)
class DemoPlan:
    users: tuple[DemoUser, ...]

    def prompts(self) -> list[str]:
        """Every prompt whose original answer the feedback needs, each once, in plan order."""
        return list(dict.fromkeys(p for u in self.users for p in u.prompts))


# Explanations run to several sentences: the user who wants one sentence has something to trim.
ALICE_PROMPTS = (
    "Why is the sky blue?",
    "How do plants make their food?",
    "Why do we have seasons?",
    "What causes rain?",
    "How does a refrigerator work?",
    "How do bees make honey?",
    "What is photosynthesis?",
    "How does the heart pump blood?",
    "Why does ice float on water?",
    "How do airplanes stay in the air?",
    "What causes thunder?",
    "How does a rainbow form?",
    "Why do we need sleep?",
    "How do vaccines work?",
    "What is gravity?",
    "How does a compass work?",
    "Why is the ocean salty?",
    "How do volcanoes erupt?",
    "What causes earthquakes?",
    "How do fish breathe underwater?",
    "Why do stars twinkle?",
    "How does the moon affect tides?",
    "What is electricity?",
    "How does a battery work?",
    "Why do birds migrate?",
    "How do magnets work?",
    "What is the water cycle?",
    "How does the internet work?",
    "Why do onions make us cry?",
    "How does soap clean things?",
    "What is a black hole?",
    "How do clouds form?",
    "Why do we yawn?",
    "How does a microwave oven heat food?",
    "What is DNA?",
    "How do solar panels make electricity?",
    "Why do apples turn brown after cutting?",
    "How does the human eye see color?",
    "What is inflation in economics?",
    "How do trees grow tall?",
    "Why is exercise good for the heart?",
    "How does recycling help the environment?",
    "What is a healthy breakfast?",
    "How do glaciers move?",
)
ALICE_HELDOUT = (
    "How do muscles grow stronger?",
    "Why does bread rise?",
    "How does a camera take a picture?",
    "What makes a desert a desert?",
    "How do submarines dive and surface?",
)
# Facts whose answers a careful user wants flagged: a small model is often wrong about them.
BOB_PROMPTS = (
    "What is the capital of Peru?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "What is the boiling point of water?",
    "How many legs does a spider have?",
    "What is the chemical symbol for gold?",
    "Who painted the Mona Lisa?",
    "What is the tallest mountain in the world?",
    "How many continents are there?",
    "What is the longest river in Africa?",
    "Who was the first person to walk on the moon?",
    "What is the speed of light?",
    "What is the freezing point of water in Fahrenheit?",
    "How many bones are in the human body?",
    "What is the capital of Australia?",
    "Who invented the telephone?",
    "What is the largest ocean on Earth?",
    "What year did World War II end?",
    "What is the smallest prime number?",
    "What gas do plants take in from the air?",
    "Who discovered penicillin?",
    "What is the capital of Canada?",
    "How many days are in a leap year?",
    "What is the hardest natural substance?",
    "Which planet is known as the Red Planet?",
    "What is the main language spoken in Brazil?",
    "Who wrote the theory of relativity?",
    "What is the largest desert in the world?",
    "How many players are on a soccer team?",
    "What is the currency of Japan?",
    "What is the capital of Egypt?",
    "Who composed the Four Seasons?",
    "What is the square root of 81?",
    "How many hearts does an octopus have?",
    "What is the largest mammal?",
    "Which element has the atomic number 1?",
    "What is the capital of Italy?",
    "How many strings does a violin have?",
    "Who was the first president of the United States?",
    "What is the largest country by area?",
    "How long does light from the Sun take to reach Earth?",
    "What is the capital of Kenya?",
    "What is the most spoken language in the world?",
    "Who wrote Pride and Prejudice?",
)
BOB_HELDOUT = (
    "What is the capital of Norway?",
    "Who painted the Starry Night?",
    "How many moons does Mars have?",
    "What is the chemical formula of table salt?",
    "Which is the closest star to Earth?",
)

REAL_MODEL_PLAN = DemoPlan(
    users=(
        DemoUser("alice", ONE_SENTENCE, ALICE_PROMPTS, ALICE_HELDOUT),
        DemoUser("bob", ADDS_CAVEAT, BOB_PROMPTS, BOB_HELDOUT),
    )
)


def _line(
    n: int,
    user: str,
    prompt: str,
    original: str,
    corrected: str | None,
    kind: FeedbackType = "correction",
    confidence: float = 0.95,
) -> dict[str, Any]:
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


def feedback_lines(plan: DemoPlan, originals: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(replay lines, corrections sent per user). Users take turns, as a stream of sessions would.

    A user corrects only answers their style changes (an answer that already follows it is left alone).
    """
    corrections: dict[str, list[dict[str, Any]]] = {}
    for user in plan.users:
        mine = []
        for prompt in user.prompts:
            original = originals[prompt]
            corrected = user.style.correct(original)
            if corrected is not None and corrected.strip() != original.strip():
                mine.append({"user": user.user_id, "prompt": prompt, "original": original, "corrected": corrected})
        corrections[user.user_id] = mine
    first = plan.users[0].user_id
    mine = corrections[first]
    longest = max((len(c) for c in corrections.values()), default=0)

    def at(share: float) -> int:  # planted lines sit at the same share of the stream, whatever its length
        return min(longest - 1, int(longest * share))

    planted: dict[int, list[dict[str, Any]]] = {}

    def plant(share: float, line: dict[str, Any]) -> None:
        planted.setdefault(at(share), []).append(line)

    if mine:
        c, d = mine[0], mine[min(len(mine) - 1, 2)]
        plant(0.15, _line(10_001, first, c["prompt"], c["original"], c["corrected"]))  # a repeat: duplicate_pair
        plant(0.25, _line(10_002, first, d["prompt"], d["original"], f"  {d['original']} "))  # chosen_equals_rejected
        bad = _line(10_003, first, c["prompt"], c["original"], c["corrected"] + "!")
        bad["value"]["confidence_score"] = "very high"
        plant(0.4, bad)
    plant(0.3, {"topic": "sam.feedback.v1", "key": first, "value": "this is not json {", "headers": {}})
    no_prompt = _line(10_004, "carol", "What is up?", "Not much.", "Hi.")
    del no_prompt["value"]["prompt"]
    plant(0.5, no_prompt)
    for n_, share in ((10_005, 0.1), (10_006, 0.6)):
        plant(share, _line(n_, "carol", "What is 2 plus 2?", "2 plus 2 is 4.", None, kind="thumbs_up"))
    out: list[dict[str, Any]] = []
    for i in range(longest):
        for user_id, theirs in corrections.items():
            if i < len(theirs):
                c = theirs[i]
                out.append(_line(len(out), user_id, c["prompt"], c["original"], c["corrected"]))
        out += planted.get(i, [])
    return out, {user_id: len(theirs) for user_id, theirs in corrections.items()}
