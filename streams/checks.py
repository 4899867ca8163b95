"""Validation of feedback into pairs: pure functions, each returning the reasons it finds.

Reason codes are stable strings (they are stored and queried); the README lists them all.
"""

from __future__ import annotations

from schemas.events import FeedbackReceived, RejectionReason
from schemas.ids import normalize_text


def required_text(fb: FeedbackReceived) -> list[RejectionReason]:
    reasons = []
    if not fb.prompt.strip():
        reasons.append(RejectionReason(code="empty_prompt", detail="the prompt is empty or whitespace"))
    if not fb.original_response.strip():
        reasons.append(RejectionReason(code="empty_rejected", detail="the original answer is empty"))
    if fb.feedback_type == "correction":
        if fb.corrected_response is None:
            reasons.append(RejectionReason(code="missing_correction", detail="a correction needs corrected_response"))
        elif not fb.corrected_response.strip():
            reasons.append(RejectionReason(code="empty_chosen", detail="the correction is empty or whitespace"))
    return reasons


def chosen_differs(fb: FeedbackReceived) -> list[RejectionReason]:
    if fb.corrected_response is None or not fb.corrected_response.strip():
        return []
    if normalize_text(fb.corrected_response) == normalize_text(fb.original_response):
        return [RejectionReason(code="chosen_equals_rejected",
                                detail="the correction equals the original answer (after whitespace normalization)")]
    return []


def is_correction(fb: FeedbackReceived) -> list[RejectionReason]:
    if fb.feedback_type != "correction":
        return [RejectionReason(code="unpaired_feedback",
                                detail=f"{fb.feedback_type} without a correction is not a preference pair")]
    return []


def basic_checks(fb: FeedbackReceived) -> list[RejectionReason]:
    return is_correction(fb) + required_text(fb) + chosen_differs(fb)
