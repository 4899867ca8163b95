"""Errors of the inference node.

    InferenceError
    ├── AdapterRejected     an adapter failed validation or loading; ``reason`` is a stable code
    ├── GenerationError     the model failed to answer
    ├── CacheError          the adapter cache refused an operation (unknown key, over its bounds)
    └── NodeUnavailable     a node could not be reached or answered with an error (client side)

``AdapterRejected.reason`` codes: ``path_escape``, ``not_safetensors``, ``missing_file``,
``checksum_mismatch``, ``base_mismatch``, ``invalid_config``, ``unsupported_config``,
``corrupt_weights``, ``unexpected_tensor``, ``incompatible_module``, ``rank_mismatch``,
``shape_mismatch``, ``non_finite``, ``load_error``.
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


class CacheError(InferenceError):
    pass


class NodeUnavailable(InferenceError):
    pass
