"""Errors of the inference node.

    InferenceError
    ├── AdapterRejected     an adapter failed validation or loading; ``reason`` is a stable code
    ├── GenerationError     the model failed to answer
    ├── CacheError          the adapter cache refused an operation (unknown key, over its bounds)
    └── NodeUnavailable     a node could not be reached or answered with an error (client side)

``AdapterRejected.reason`` codes: ``path_escape``, ``unexpected_file``, ``not_safetensors``,
``missing_file``, ``too_large``, ``checksum_mismatch``, ``base_mismatch``, ``manifest_mismatch``,
``invalid_config``, ``unsupported_config``, ``corrupt_weights``, ``empty_adapter``,
``unexpected_tensor``, ``incomplete_adapter``, ``incompatible_module``, ``invalid_weights``,
``rank_mismatch``, ``shape_mismatch``, ``non_finite``, ``load_error`` (anything unexpected while loading).
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
