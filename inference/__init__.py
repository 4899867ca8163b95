"""Inference nodes: one base model, a versioned cache of per-user adapters, explicit fallback, A/B split.

Names are imported on first use, so ``from inference import generate_personalized_response`` (an
HTTP client) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference.cache import AdapterCache, Lease
    from inference.client import NodeClient, generate_personalized_response
    from inference.errors import AdapterRejected, CacheError, GenerationError, InferenceError, NodeUnavailable
    from inference.node import InferenceNode
    from inference.response import PersonalizedResponse

_EXPORTS = {
    "AdapterCache": "inference.cache",
    "Lease": "inference.cache",
    "NodeClient": "inference.client",
    "generate_personalized_response": "inference.client",
    "AdapterRejected": "inference.errors",
    "CacheError": "inference.errors",
    "GenerationError": "inference.errors",
    "InferenceError": "inference.errors",
    "NodeUnavailable": "inference.errors",
    "InferenceNode": "inference.node",
    "PersonalizedResponse": "inference.response",
}

__all__ = [
    "AdapterCache",
    "AdapterRejected",
    "CacheError",
    "GenerationError",
    "InferenceError",
    "InferenceNode",
    "Lease",
    "NodeClient",
    "NodeUnavailable",
    "PersonalizedResponse",
    "generate_personalized_response",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
