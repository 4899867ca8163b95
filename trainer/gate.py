"""The evaluation gate: publish a new adapter only when it is better than what the user has now.

Two checks, both pure:

* **Held-out preference.** On the user's held-out pairs (never trained on by either side), the new
  adapter's *policy preference accuracy* (the share of pairs where the model itself finds the chosen
  answer more likely than the rejected one, see trainer/evaluate.py) must reach ``min_accuracy``
  and beat that of what the user has now (the previous adapter, or the base model) by
  ``min_accuracy_gain``. The policy's own preference is what it will say, so it compares models;
  DPO's implicit-reward accuracy does not (any adapter that learned a style at all scores ~1 on it).
* **Control set.** Generic prompts are answered by the base model and by the new adapter. An answer
  *keeps its meaning* when the new answer still holds at least ``control_min_recall`` of the content
  words (lower-cased words and numbers, minus a short stop list) of the base model's answer. Adding
  words (a sign-off, a format) keeps the meaning; dropping or changing facts does not. The share of
  control prompts that keep their meaning must reach ``control_min_share``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.config import EvaluationSettings

ACCURACY = "heldout_policy_accuracy"  # what the gate compares across models

STOP_WORDS = frozenset((
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "of", "to", "and", "or", "in", "on", "at",
    "it", "its", "this", "that", "these", "those", "for", "with", "as", "by", "from", "i", "you", "he", "she", "we",
    "they", "me", "my", "your", "our", "their", "so", "do", "does", "did", "not", "no", "yes",
))
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def meaning_recall(before: str, after: str) -> float:
    """Share of ``before``'s content words (with multiplicity) that ``after`` still holds."""
    wanted = content_words(before)
    if not wanted:
        return 1.0 if not content_words(after) else 0.0
    pool: dict[str, int] = {}
    for w in content_words(after):
        pool[w] = pool.get(w, 0) + 1
    kept = 0
    for w in wanted:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            kept += 1
    return kept / len(wanted)


def keeps_meaning(before: str, after: str, min_recall: float) -> bool:
    return meaning_recall(before, after) >= min_recall


@dataclass(frozen=True)
class ControlAnswer:
    prompt: str
    before: str
    after: str
    kept: bool


def check_control(prompts: Sequence[str], before: Sequence[str], after: Sequence[str],
                  min_recall: float) -> list[ControlAnswer]:
    return [ControlAnswer(p, b, a, keeps_meaning(b, a, min_recall))
            for p, b, a in zip(prompts, before, after, strict=True)]


def control_share(answers: Sequence[ControlAnswer]) -> float:
    return sum(a.kept for a in answers) / len(answers) if answers else 1.0


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def decide(settings: EvaluationSettings, new: Mapping[str, float], current: Mapping[str, float],
           current_name: str, control: Sequence[ControlAnswer]) -> GateDecision:
    """Publish or not, with every failing reason. ``current_name`` says what the user has now."""
    if not settings.enabled:
        return GateDecision(True, ("the evaluation gate is off",))
    reasons: list[str] = []
    held = int(new.get("heldout_pairs", 0))
    if held < settings.min_heldout_pairs:
        reasons.append(f"only {held} held-out pair(s); the gate needs at least {settings.min_heldout_pairs} "
                       "(collect more pairs, or lower evaluation.min_heldout_pairs)")
    else:
        acc = new.get(ACCURACY, 0.0)
        cur = current.get(ACCURACY, 0.0)
        if acc < settings.min_accuracy:
            reasons.append(f"held-out preference accuracy {acc:.2f} is below evaluation.min_accuracy "
                           f"{settings.min_accuracy:.2f}")
        if acc < cur + settings.min_accuracy_gain - 1e-9:
            reasons.append(f"not better than {current_name}: held-out preference accuracy {acc:.2f} vs "
                           f"{cur:.2f} (needs a gain of at least {settings.min_accuracy_gain:+.2f})")
    share = control_share(control)
    if control and share < settings.control_min_share:
        lost = [a for a in control if not a.kept]
        examples = "; ".join(f"{a.prompt!r}: {a.before!r} -> {a.after!r}" for a in lost[:3])
        reasons.append(f"control answers changed: {len(lost)}/{len(control)} lost their meaning "
                       f"(kept {share:.2f} < {settings.control_min_share:.2f}), e.g. {examples}")
    return GateDecision(not reasons, tuple(reasons))
