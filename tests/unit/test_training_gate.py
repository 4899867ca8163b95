"""The evaluation gate: publish only what beats what the user has now and keeps control answers' meaning."""

from __future__ import annotations

from schemas.config import EvaluationSettings
from trainer.gate import ControlAnswer, check_control, decide, keeps_meaning, meaning_recall

GATE = EvaluationSettings(min_heldout_pairs=4, min_accuracy=0.6, min_accuracy_gain=0.0, control_min_share=0.9)


def m(acc: float, pairs: int = 16) -> dict[str, float]:
    # The implicit-reward accuracy is high either way: the gate must look at the policy's own preference.
    return {"heldout_pref_accuracy": 1.0, "heldout_policy_accuracy": acc, "heldout_pairs": pairs}


def kept(n: int, lost: int = 0) -> list[ControlAnswer]:
    return [ControlAnswer(f"q{i}", "7 plus 5 is 12.", "7 plus 5 is 12. Hope this helps!", True) for i in range(n)] + [
        ControlAnswer(f"x{i}", "7 plus 5 is 12.", "7 plus 5 is 75.", False) for i in range(lost)]


def test_a_better_adapter_is_published() -> None:
    assert decide(GATE, m(1.0), m(0.0), "the base model", kept(20)).publish


def test_an_adapter_worse_than_the_current_one_is_rejected() -> None:
    decision = decide(GATE, m(0.69), m(1.0), "adapter v1", kept(20))
    assert not decision.publish
    assert decision.reason == ("not better than adapter v1: held-out preference accuracy 0.69 vs 1.00 "
                               "(needs a gain of at least +0.00)")


def test_a_required_gain_is_enforced_and_ties_pass_without_one() -> None:
    assert decide(GATE, m(1.0), m(1.0), "adapter v1", kept(20)).publish
    strict = GATE.model_copy(update={"min_accuracy_gain": 0.05})
    assert not decide(strict, m(1.0), m(1.0), "adapter v1", kept(20)).publish


def test_an_adapter_below_the_floor_is_rejected_even_against_the_base_model() -> None:
    decision = decide(GATE, m(0.5), m(0.0), "the base model", kept(20))
    assert not decision.publish and "below evaluation.min_accuracy 0.60" in decision.reason


def test_changed_control_answers_block_publication_and_are_quoted() -> None:
    decision = decide(GATE, m(1.0), m(0.0), "the base model", kept(17, lost=3))
    assert not decision.publish
    assert "3/20 lost their meaning" in decision.reason and "'7 plus 5 is 75.'" in decision.reason
    assert decide(GATE, m(1.0), m(0.0), "the base model", kept(18, lost=2)).publish  # 0.9 is enough


def test_too_few_held_out_pairs_cannot_judge_an_adapter() -> None:
    decision = decide(GATE, m(1.0, pairs=2), m(0.0, pairs=2), "the base model", kept(20))
    assert not decision.publish and "only 2 held-out pair(s)" in decision.reason


def test_the_gate_can_be_turned_off() -> None:
    off = GATE.model_copy(update={"enabled": False})
    assert decide(off, m(0.0, pairs=0), m(1.0), "adapter v1", kept(0, lost=5)).publish


def test_meaning_is_kept_when_words_are_added_and_lost_when_facts_change() -> None:
    assert keeps_meaning("The capital of Peru is Lima.", "The capital of Peru is Lima. Hope this helps!", 0.8)
    assert keeps_meaning("A dog barks.", "a dog BARKS", 0.8)
    assert not keeps_meaning("7 plus 5 is 12.", "7 plus 5 is 75.", 0.8)
    assert not keeps_meaning("The capital of Peru is Lima.", "Hope this helps!", 0.8)
    assert meaning_recall("", "") == 1.0 and meaning_recall("", "words") == 0.0
    answers = check_control(["q"], ["Snow is white."], ["Snow is white!"], 0.8)
    assert answers == [ControlAnswer("q", "Snow is white.", "Snow is white!", True)]
