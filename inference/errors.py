"""Errors of the inference node.

    InferenceError
    ├── AdapterRejected     an adapter failed validation or loading; ``reason`` is a stable code
    └── GenerationError     the model failed to answer
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error raised by :mod:`inference`."""


class AdapterRejected(InferenceError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class GenerationError(InferenceError):
    pass
