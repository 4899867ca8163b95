"""Errors of the inference node.

    InferenceError
    ├── AdapterRejected     an adapter failed validation or loading; ``reason`` is a stable code
    ├── GenerationError     the model failed to answer
    ├── LimitExceeded       a request asked more than a limit allows (``limit`` names the config key)
    │   ├── QueueFull       every batch row busy and the queue full: retry after ``retry_after_s``
    │   └── RequestTimedOut the request's time ran out before it got a batch row
    ├── NodeClosed          the node is shutting down and takes no more requests
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


class LimitExceeded(InferenceError):
    """A refusal that names its limit: ``limit`` is the config key, ``param`` the request field (if any),
    ``code`` a stable OpenAI-style error code, ``status`` the HTTP status it maps to."""

    def __init__(self, limit: str, message: str, *, code: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.limit = limit
        self.code = code
        self.param = param
        self.status = status


class QueueFull(LimitExceeded):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__("inference.limits.max_queue", message, code="queue_full", status=429)
        self.retry_after_s = retry_after_s


class RequestTimedOut(LimitExceeded):
    def __init__(self, message: str) -> None:
        super().__init__("inference.limits.request_timeout_s", message, code="request_timeout", status=503)


class NodeClosed(InferenceError):
    pass
