"""The evaluation gate: publish only what beats what the user has now and breaks no control the base model knew."""

from __future__ import annotations

from schemas.config import DEFAULT_CONTROLS, ControlCase, EvaluationSettings
from trainer.gate import ControlAnswer, check_control, control_metrics, control_share, decide, is_correct

GATE = EvaluationSettings(min_heldout_pairs=4, min_accuracy=0.6, min_accuracy_gain=0.0, control_min_share=0.9)


def m(acc: float, pairs: int = 16, margin: float = 0.5) -> dict[str, float]:
    # The implicit-reward accuracy is high either way: the gate must look at the policy's own preference.
    return {
        "heldout_pref_accuracy": 1.0,
        "heldout_policy_accuracy": acc,
        "heldout_policy_margin": margin,
        "heldout_pairs": pairs,
    }


def kept(n: int, broken: int = 0, base_wrong: int = 0) -> list[ControlAnswer]:
    return (
        [ControlAnswer(f"q{i}", "7 plus 5 is 12.", "7 plus 5 is 12. Hope this helps!", True, True) for i in range(n)]
        + [ControlAnswer(f"x{i}", "7 plus 5 is 12.", "7 plus 5 is 75.", True, False) for i in range(broken)]
        + [ControlAnswer(f"w{i}", "The answer is 27.", "It is 13.", False, False) for i in range(base_wrong)]
    )


def test_a_better_adapter_is_published() -> None:
    assert decide(GATE, m(1.0), m(0.0), "the base model", kept(20)).publish


def test_an_adapter_worse_than_the_current_one_is_rejected() -> None:
    decision = decide(GATE, m(0.69), m(1.0), "adapter v1", kept(20))
    assert not decision.publish
    assert decision.reason == (
        "not better than adapter v1: held-out preference accuracy 0.69 vs 1.00 (needs a gain of at least +0.00)"
    )


def test_a_required_gain_is_enforced_and_ties_pass_without_one() -> None:
    assert decide(GATE, m(1.0), m(1.0), "adapter v1", kept(20)).publish
    strict = GATE.model_copy(update={"min_accuracy_gain": 0.05})
    assert not decide(strict, m(1.0), m(1.0), "adapter v1", kept(20)).publish


def test_an_adapter_below_the_floor_is_rejected_even_against_the_base_model() -> None:
    decision = decide(GATE, m(0.5), m(0.0), "the base model", kept(20))
    assert not decision.publish and "below evaluation.min_accuracy 0.60" in decision.reason


def test_an_adapter_whose_mean_margin_is_not_positive_is_rejected() -> None:
    decision = decide(GATE, m(0.75, margin=-0.02), m(0.0), "the base model", kept(20))
    assert not decision.publish
    assert decision.reason == ("held-out preference margin -0.020 nats/token is not above evaluation.min_margin 0.000")


def test_broken_controls_block_publication_and_are_quoted() -> None:
    decision = decide(GATE, m(1.0), m(0.0), "the base model", kept(17, broken=3))
    assert not decision.publish
    assert "3 of the 20 the base model answers correctly are wrong now" in decision.reason
    assert "'7 plus 5 is 75.'" in decision.reason
    assert decide(GATE, m(1.0), m(0.0), "the base model", kept(18, broken=2)).publish  # 0.9 is enough


def test_a_control_the_base_model_got_wrong_cannot_be_broken() -> None:
    # A real model is often wrong on its own: 10 right, 10 wrong, the adapter keeps the 10 -> 1.0.
    answers = kept(10, base_wrong=10)
    assert control_share(answers) == 1.0 and decide(GATE, m(1.0), m(0.0), "the base model", answers).publish
    assert control_metrics(answers) == {
        "control_unchanged": 1.0,
        "control_prompts": 20.0,
        "control_base_correct": 10.0,
        "control_adapter_correct": 10.0,
        "control_broken": 0.0,
    }
    assert control_share(kept(0, base_wrong=3)) == 1.0  # nothing to protect


def test_too_few_held_out_pairs_cannot_judge_an_adapter() -> None:
    decision = decide(GATE, m(1.0, pairs=2), m(0.0, pairs=2), "the base model", kept(20))
    assert not decision.publish and "only 2 held-out pair(s)" in decision.reason


def test_a_thumbs_only_job_is_judged_on_its_held_out_labelled_examples() -> None:
    new = {"heldout_pairs": 0.0, "heldout_examples": 12.0, "heldout_label_accuracy": 0.9, "heldout_label_margin": 0.3}
    base = {"heldout_pairs": 0.0, "heldout_examples": 12.0, "heldout_label_accuracy": 0.0, "heldout_label_margin": 0.0}
    assert decide(GATE, new, base, "the base model", kept(20)).publish
    worse = {**new, "heldout_label_accuracy": 0.5}
    assert "held-out preference accuracy 0.50 is below" in decide(GATE, worse, base, "the base model", kept(20)).reason
    few = {**new, "heldout_examples": 2.0}
    assert "only 2 held-out labelled example(s)" in decide(GATE, few, base, "the base model", kept(20)).reason


def test_the_gate_can_be_turned_off() -> None:
    off = GATE.model_copy(update={"enabled": False})
    assert decide(off, m(0.0, pairs=0), m(1.0), "adapter v1", kept(0, broken=5)).publish


def test_an_answer_is_correct_when_it_mentions_a_reference_as_a_whole_word() -> None:
    assert is_correct("The capital of Peru is Lima.", ["Lima"])
    assert is_correct("12 + 12 = 24.", ["24", "twenty-four"])
    assert is_correct("It is TWELVE. Cheers, Sam.", ["12", "twelve"])
    assert not is_correct("The answer is 27.", ["12", "twelve"])
    assert not is_correct("7 plus 5 is 120.", ["12"])  # a number inside another is not it
    assert not is_correct("It costs 12.5 dollars", ["12"])
    assert not is_correct("The opposite of hot is scolding.", ["cold"])
    assert is_correct("A cow goes moo!", ["moo", "moos"])
    assert is_correct("Two words: carbon   dioxide.", ["carbon dioxide"])


def test_the_shipped_references_never_occur_in_their_own_question() -> None:
    # Otherwise an answer that only repeats the question would count as correct.
    for case in DEFAULT_CONTROLS:
        assert not is_correct(case.prompt, case.references), case.prompt


def test_controls_are_scored_against_references_not_against_the_base_answer() -> None:
    controls = [
        ControlCase(prompt="What is 3 plus 9?", references=("12", "twelve")),
        ControlCase(prompt="What is the capital of France?", references=("Paris",)),
    ]
    answers = check_control(
        controls,
        ["The answer is 27.", "The capital of France is Paris."],
        ["3 plus 9 is 12. Cheers, Sam.", "It is Lyon. Cheers, Sam."],
    )
    assert [(a.base_correct, a.adapter_correct, a.broken) for a in answers] == [
        (False, True, False),
        (True, False, True),
    ]
    assert control_share(answers) == 0.0
