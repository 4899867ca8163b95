"""Quality checks of feedback: pure functions, each returning the reasons it finds.

Reason codes are stable strings (stored in ``rejected_feedback.reason_codes`` and queried); the
README lists every code with its threshold. The quality score of a pair is::

    quality = confidence * (0.6 + 0.4 * distinctness) * (0.5 + 0.5 * substance)

    distinctness = min(1, (1 - similarity) / 0.3)   # similarity: word overlap of chosen vs rejected
    substance    = min(1, words(chosen) / 4)         # a one-word correction carries little preference

so a correction that changes at least 30% of the words and has four words or more scores its
confidence; a near-identical edit keeps at least 60% of it (it is flagged, not rejected); a one-word
correction keeps 62.5%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from schemas.config import QualitySettings
from schemas.events import FeedbackReceived, RejectionReason
from schemas.ids import normalize_text

TokenCounter = Callable[[str], int]


def reason(code: str, detail: str) -> RejectionReason:
    return RejectionReason(code=code, detail=detail)


def required_texts(fb: FeedbackReceived) -> list[RejectionReason]:
    out = []
    if not fb.prompt.strip():
        out.append(reason("empty_prompt", "the prompt is empty or whitespace"))
    if not fb.original_response.strip():
        out.append(reason("empty_rejected", "the original answer is empty or whitespace"))
    if fb.feedback_type == "correction" and fb.corrected_response is None:
        out.append(reason("missing_correction", "a correction needs corrected_response"))
    elif fb.corrected_response is not None and not fb.corrected_response.strip():
        out.append(reason("empty_chosen", "the correction is empty or whitespace"))
    return out


def _length(
    field: str, text: str, chars: tuple[int, int], tokens: tuple[int, int], count_tokens: TokenCounter
) -> list[RejectionReason]:
    n = len(text)
    if n > chars[1]:
        return [reason(f"{field}_too_long", f"{n} characters > {chars[1]}")]
    if n < chars[0]:
        return [reason(f"{field}_too_short", f"{n} characters < {chars[0]}")]
    # Byte-level tokenizers never make more tokens than bytes: count only when the limit can bind.
    if len(text.encode("utf-8")) > tokens[1] or tokens[0] > 1:
        t = count_tokens(text)
        if t > tokens[1]:
            return [reason(f"{field}_too_long", f"{t} tokens > {tokens[1]}")]
        if t < tokens[0]:
            return [reason(f"{field}_too_short", f"{t} tokens < {tokens[0]}")]
    return []


def lengths(fb: FeedbackReceived, s: QualitySettings, count_tokens: TokenCounter) -> list[RejectionReason]:
    out = []
    if fb.prompt.strip():
        out += _length("prompt", fb.prompt, s.prompt_chars, s.prompt_tokens, count_tokens)
    if fb.original_response.strip():
        out += _length("rejected", fb.original_response, s.response_chars, s.response_tokens, count_tokens)
    if fb.corrected_response is not None and fb.corrected_response.strip():
        out += _length("chosen", fb.corrected_response, s.response_chars, s.response_tokens, count_tokens)
    return out


def confidence(fb: FeedbackReceived, s: QualitySettings) -> list[RejectionReason]:
    if fb.confidence_score < s.min_confidence:
        return [reason("low_confidence", f"confidence {fb.confidence_score:.3f} < {s.min_confidence}")]
    return []


def similarity(chosen: str, rejected: str) -> float:
    """Word overlap in [0, 1] of two answers: 2 * |common words (with multiplicity)| / (|a| + |b|).

    The token-overlap form of difflib's ratio (its ``quick_ratio``): linear time, which matters at
    stream rates; word order does not count.
    """
    a, b = chosen.split(), rejected.split()
    if not a and not b:
        return 1.0
    # The size of the multiset intersection, without building it (``Counter.__and__`` loops in Python).
    ca = Counter(a)
    common = sum(min(n, ca[w]) for w, n in Counter(b).items() if w in ca)
    return 2.0 * common / (len(a) + len(b))


def difference(chosen: str, rejected: str) -> list[RejectionReason]:
    """Identical answers, or answers that differ only in whitespace or letter case, are no preference."""
    a, b = normalize_text(chosen), normalize_text(rejected)
    if a == b:
        return [reason("chosen_equals_rejected", "the correction equals the original answer (whitespace aside)")]
    if a.casefold() == b.casefold():
        return [reason("case_only_edit", "the correction only changes letter case")]
    return []


def quality_score(confidence_score: float, sim: float, chosen: str) -> float:
    distinctness = min(1.0, (1.0 - sim) / 0.3)
    substance = min(1.0, len(chosen.split()) / 4)
    return round(confidence_score * (0.6 + 0.4 * distinctness) * (0.5 + 0.5 * substance), 4)


@dataclass(frozen=True)
class PairAssessment:
    """Stateless checks of a correction: the reasons found, and (when the texts allow) score and flags."""

    reasons: tuple[RejectionReason, ...]
    quality: float | None = None
    similarity: float | None = None
    near_identical: bool = False


def assess_pair(fb: FeedbackReceived, s: QualitySettings, count_tokens: TokenCounter) -> PairAssessment:
    reasons = required_texts(fb) + lengths(fb, s, count_tokens) + confidence(fb, s)
    chosen = fb.corrected_response
    if chosen is None or not chosen.strip() or not fb.original_response.strip():
        return PairAssessment(tuple(reasons))
    reasons += difference(chosen, fb.original_response)
    if any(r.code.endswith("_too_long") for r in reasons):
        return PairAssessment(tuple(reasons))  # do not compare huge texts
    sim = similarity(chosen, fb.original_response)
    score = quality_score(fb.confidence_score, sim, chosen)
    if score < s.min_quality:
        reasons.append(reason("low_quality", f"quality {score:.3f} < {s.min_quality}"))
    return PairAssessment(tuple(reasons), score, round(sim, 4), sim >= s.near_identical_similarity)


def assess_example(fb: FeedbackReceived, s: QualitySettings, count_tokens: TokenCounter) -> list[RejectionReason]:
    """Checks of a thumbs up/down without a correction (an unpaired labelled example)."""
    return required_texts(fb) + lengths(fb, s, count_tokens) + confidence(fb, s)
