"""What a personalized answer says about itself: which adapter answered, or why the base model did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["adapter", "base"]


@dataclass(frozen=True)
class PersonalizedResponse:
    text: str
    user_id: str | None
    source: Source
    adapter_version: int | None
    fallback_reason: str | None
    latency_ms: float

    @property
    def personalized(self) -> bool:
        return self.source == "adapter"
