"""The demo's users: measurable styles (one of form, one of content) applied to SAM's own answers."""

from __future__ import annotations

from samtuner.demo_plan import REAL_MODEL_PLAN, DemoPlan, DemoUser, feedback_lines
from samtuner.demo_styles import (
    ADDS_CAVEAT,
    CAVEAT,
    CLOSES_WITH_LINE,
    ONE_SENTENCE,
    sentences,
    style_rate,
    without_fragment,
)
from samtuner.fixtures import parse_line

CUT_OFF = (
    "Plants make their own food through a process called photosynthesis. This process involves light, "
    "water, and carbon dioxide. During photosynthesis, plants use energy from"
)


def test_sentences_ignore_a_cut_off_fragment_and_decimal_points() -> None:
    assert sentences(CUT_OFF) == [
        "Plants make their own food through a process called photosynthesis.",
        "This process involves light, water, and carbon dioxide.",
    ]
    assert sentences("Water boils at 100°C (212°F). Mostly.") == ["Water boils at 100°C (212°F).", "Mostly."]
    assert sentences("It is 3.5 meters long") == []
    assert without_fragment(CUT_OFF).endswith("carbon dioxide.")


def test_the_form_style_trims_to_the_first_sentence_and_leaves_one_sentence_alone() -> None:
    assert ONE_SENTENCE.kind == "form"
    assert ONE_SENTENCE.correct(CUT_OFF) == "Plants make their own food through a process called photosynthesis."
    assert ONE_SENTENCE.correct("The capital of Peru is Lima.") is None
    assert ONE_SENTENCE.correct("no full stop anywhere") is None
    assert ONE_SENTENCE.shows("The capital of Peru is Lima.")
    assert not ONE_SENTENCE.shows(CUT_OFF)
    assert not ONE_SENTENCE.shows("Lima. It is big.")


def test_the_content_style_adds_a_caveat_once_after_complete_sentences() -> None:
    assert ADDS_CAVEAT.kind == "content"
    corrected = ADDS_CAVEAT.correct(CUT_OFF)
    assert corrected == f"{without_fragment(CUT_OFF)} {CAVEAT}"
    assert ADDS_CAVEAT.shows(corrected) and not ADDS_CAVEAT.shows(CUT_OFF)
    assert ADDS_CAVEAT.correct(corrected) is None
    assert ADDS_CAVEAT.correct("no sentence end") == f"no sentence end. {CAVEAT}"


def test_the_closing_line_style() -> None:
    corrected = CLOSES_WITH_LINE.correct("Lima is the capital. It is")
    assert corrected == "Lima is the capital. Hope this helps!"
    assert CLOSES_WITH_LINE.shows(corrected) and not CLOSES_WITH_LINE.shows("Lima is the capital.")


def test_style_rates_count_answers_that_follow_the_style() -> None:
    assert style_rate(ONE_SENTENCE, ["One.", "One. Two.", "Three."]) == 0.6667
    assert style_rate(ONE_SENTENCE, []) == 0.0


def test_the_real_plan_has_a_form_and_a_content_user_and_held_out_prompts_nobody_trains_on() -> None:
    kinds = {u.style.kind for u in REAL_MODEL_PLAN.users}
    assert kinds == {"form", "content"}
    trained = {p for u in REAL_MODEL_PLAN.users for p in u.prompts}
    for user in REAL_MODEL_PLAN.users:
        assert len(user.heldout) >= 5
        assert not set(user.heldout) & trained
        assert len(user.prompts) == len(set(user.prompts))


def test_feedback_lines_carry_the_original_answers_and_the_bad_data() -> None:
    plan = DemoPlan(
        users=(
            DemoUser("alice", ONE_SENTENCE, tuple(f"Explain thing {i}?" for i in range(20)), ("Held out?",)),
            DemoUser("bob", ADDS_CAVEAT, tuple(f"Fact {i}?" for i in range(20)), ("Other?",)),
        )
    )
    originals = {
        p: (f"Answer {i}. More detail {i}. Cut" if p.startswith("Explain") else f"Fact answer {i}.")
        for i, p in enumerate(plan.prompts())
    }
    originals["Explain thing 7?"] = "Already one sentence."  # nothing for alice to trim: no correction

    lines, sent = feedback_lines(plan, originals)

    assert sent == {"alice": 19, "bob": 20}
    parsed = [parse_line(line, "test") for line in lines]
    corrections = [
        line["value"]
        for line in lines
        if isinstance(line["value"], dict)
        and line["value"].get("feedback_type") == "correction"
        and "prompt" in line["value"]
    ]
    by_prompt: dict[str, dict] = {}
    for c in corrections:
        by_prompt.setdefault(c["prompt"], c)  # the first: later ones are the planted repeat / bad copies
    assert by_prompt["Explain thing 0?"]["original_response"] == originals["Explain thing 0?"]  # on-policy
    assert by_prompt["Explain thing 0?"]["corrected_response"] == "Answer 0."
    assert by_prompt["Fact 3?"]["corrected_response"].endswith(CAVEAT)
    assert "Explain thing 7?" not in by_prompt
    assert sum(1 for line in lines if isinstance(line["value"], str)) == 1  # raw bytes, not JSON
    assert any(isinstance(line["value"], dict) and line["value"].get("feedback_type") == "thumbs_up" for line in lines)
    assert len(parsed) == len(lines)
