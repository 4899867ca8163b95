"""The evaluation gate: publish a new adapter only when it is better than what the user has now.

Two checks, both pure:

* **Held-out preference.** On the user's held-out pairs (never trained on by either side, and not
  used to stop training or choose the checkpoint), the new adapter's *policy preference accuracy*
  (the share of pairs where the model itself finds the chosen answer more likely than the rejected
  one, per token, see trainer/evaluate.py) must reach ``min_accuracy`` and beat that of what the
  user has now (the previous adapter, or the base model) by ``min_accuracy_gain``; its mean margin
  (nats per token) must exceed ``min_margin``. The policy's own preference is what it will say, so
  it compares models; DPO's implicit-reward accuracy does not (any adapter that learned a style at
  all scores ~1 on it). Per token, because a summed log-probability favours the shorter answer.
  A thumbs-only user's job (KTO, no held-out pairs) is judged the same way on its held-out labelled
  examples: the share moved the way their label says against the base model, and the mean move.
* **Control set.** Generic prompts with reference answers (``evaluation.controls``) are answered
  greedily by the base model and by the new adapter. An answer is *correct* when it mentions one of
  the prompt's references as a whole word or phrase (case aside). A control is *broken* only when
  the base model answered it correctly and the adapter no longer does: a real model's own answers
  are often wrong or rambling, and an adapter cannot lose a fact the base model never had. The
  share of the controls the base model answered correctly that the adapter still answers correctly
  must reach ``control_min_share`` (1.0 when the base model answered none: the check then has
  nothing to protect, and ``control_base_correct`` says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.config import ControlCase, EvaluationSettings

ACCURACY = "heldout_policy_accuracy"  # what the gate compares across models (per-token, trainer/evaluate.py)
MARGIN = "heldout_policy_margin"
# A job with held-out labelled examples and no held-out pairs (a thumbs-only user, KTO) is judged on those.
LABEL_ACCURACY = "heldout_label_accuracy"
LABEL_MARGIN = "heldout_label_margin"


def judged_on(metrics: Mapping[str, float]) -> tuple[str, str, str, str]:
    """(count key, accuracy key, margin key, what they are): held-out pairs, else held-out labelled examples."""
    if metrics.get("heldout_pairs", 0) or not metrics.get("heldout_examples", 0):
        return "heldout_pairs", ACCURACY, MARGIN, "pair"
    return "heldout_examples", LABEL_ACCURACY, LABEL_MARGIN, "labelled example"


def _pattern(reference: str) -> re.Pattern[str]:
    words = reference.split()
    body = r"\s+".join(re.escape(w) for w in words)
    # Whole words: "12" is not found in "120", "cold" not in "scold"; a decimal point does not end a number.
    return re.compile(rf"(?<![\w.]){body}(?!\w|\.\d)", re.IGNORECASE)


def mentions(answer: str, reference: str) -> bool:
    return bool(reference.strip()) and _pattern(reference.strip()).search(answer) is not None


def is_correct(answer: str, references: Sequence[str]) -> bool:
    """Whether ``answer`` mentions one of ``references`` as a whole word or phrase (case aside)."""
    return any(mentions(answer, ref) for ref in references)


@dataclass(frozen=True)
class ControlAnswer:
    prompt: str
    before: str
    after: str
    base_correct: bool
    adapter_correct: bool

    @property
    def broken(self) -> bool:
        return self.base_correct and not self.adapter_correct

    @property
    def kept(self) -> bool:
        return not self.broken


def check_control(controls: Sequence[ControlCase], before: Sequence[str], after: Sequence[str]) -> list[ControlAnswer]:
    return [
        ControlAnswer(c.prompt, b, a, is_correct(b, c.references), is_correct(a, c.references))
        for c, b, a in zip(controls, before, after, strict=True)
    ]


def control_share(answers: Sequence[ControlAnswer]) -> float:
    """Share of the controls the base model answered correctly that the adapter still answers correctly."""
    judged = [a for a in answers if a.base_correct]
    return sum(a.adapter_correct for a in judged) / len(judged) if judged else 1.0


def control_metrics(answers: Sequence[ControlAnswer]) -> dict[str, float]:
    return {
        "control_unchanged": round(control_share(answers), 4),
        "control_prompts": float(len(answers)),
        "control_base_correct": float(sum(a.base_correct for a in answers)),
        "control_adapter_correct": float(sum(a.adapter_correct for a in answers)),
        "control_broken": float(sum(a.broken for a in answers)),
    }


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def decide(
    settings: EvaluationSettings,
    new: Mapping[str, float],
    current: Mapping[str, float],
    current_name: str,
    control: Sequence[ControlAnswer],
) -> GateDecision:
    """Publish or not, with every failing reason. ``current_name`` says what the user has now."""
    if not settings.enabled:
        return GateDecision(True, ("the evaluation gate is off",))
    reasons: list[str] = []
    count_key, acc_key, margin_key, what = judged_on(new)
    held = int(new.get(count_key, 0))
    if held < settings.min_heldout_pairs:
        reasons.append(
            f"only {held} held-out {what}(s); the gate needs at least {settings.min_heldout_pairs} "
            f"(collect more, or lower evaluation.min_heldout_pairs)"
        )
    else:
        acc = new.get(acc_key, 0.0)
        cur = current.get(acc_key, 0.0)
        margin = new.get(margin_key, 0.0)
        if acc < settings.min_accuracy:
            reasons.append(
                f"held-out preference accuracy {acc:.2f} is below evaluation.min_accuracy {settings.min_accuracy:.2f}"
            )
        if acc < cur + settings.min_accuracy_gain - 1e-9:
            reasons.append(
                f"not better than {current_name}: held-out preference accuracy {acc:.2f} vs "
                f"{cur:.2f} (needs a gain of at least {settings.min_accuracy_gain:+.2f})"
            )
        if margin <= settings.min_margin:
            reasons.append(
                f"held-out preference margin {margin:.3f} nats/token is not above evaluation.min_margin "
                f"{settings.min_margin:.3f}"
            )
    share = control_share(control)
    if control and share < settings.control_min_share:
        broken = [a for a in control if a.broken]
        judged = sum(a.base_correct for a in control)
        examples = "; ".join(f"{a.prompt!r}: {a.before!r} -> {a.after!r}" for a in broken[:3])
        reasons.append(
            f"control answers broken: {len(broken)} of the {judged} the base model answers correctly "
            f"are wrong now (kept {share:.2f} < {settings.control_min_share:.2f}), e.g. {examples}"
        )
    return GateDecision(not reasons, tuple(reasons))
