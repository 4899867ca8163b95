"""What a personalized answer says about itself: which adapter answered, or why the base model did."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["adapter", "base"]


@dataclass(frozen=True)
class PersonalizedResponse:
    """One answer. ``adapter_version`` is None exactly when the base model answered; then
    ``fallback_reason`` is a stable code (``no_adapter``, ``deactivated``, ``revoked``, ``anonymous``,
    ``ab_control``, or an adapter rejection such as ``checksum_mismatch``) and ``fallback_detail`` says
    more. A rejected new version answered by the previous one has both a version and a reason."""

    text: str
    user_id: str | None
    source: Source
    adapter_version: int | None
    fallback_reason: str | None
    latency_ms: float
    arm: Literal["new", "previous", "base"] = "base"
    fallback_detail: str = ""
    answer_id: uuid.UUID = field(default_factory=uuid.uuid4)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    switch_ms: float = 0.0
    ttft_ms: float = 0.0  # arrival to the first token
    queue_ms: float = 0.0  # arrival to a batch row
    finish_reason: Literal["stop", "length"] = "stop"
    stopped_by: str | None = None  # why a "length" answer ended: max_tokens, a limit's config key, cancelled

    @property
    def personalized(self) -> bool:
        return self.source == "adapter"

    def describe(self) -> dict[str, Any]:
        """The ``samtuner`` object of an HTTP answer."""
        return {
            "answer_id": str(self.answer_id),
            "user": self.user_id,
            "source": self.source,
            "arm": self.arm,
            "adapter_version": self.adapter_version,
            "fallback_reason": self.fallback_reason,
            "fallback_detail": self.fallback_detail,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "finish_reason": self.finish_reason,
            "stopped_by": self.stopped_by,
        }
