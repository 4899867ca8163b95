"""sam-tuner: turn users' corrections into personalized LoRA adapters, on Kafka.

The SDK's names are imported on first use (PEP 562), so `samtuner.cli` and the roles it starts do
not load the inference client's HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.client import generate_personalized_response
    from inference.response import PersonalizedResponse
    from samtuner.publisher import FeedbackPublisher

_HOMES = {
    "FeedbackPublisher": "samtuner.publisher",
    "PersonalizedResponse": "inference.response",
    "generate_personalized_response": "inference.client",
}

__all__ = ["FeedbackPublisher", "PersonalizedResponse", "generate_personalized_response"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'samtuner' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
