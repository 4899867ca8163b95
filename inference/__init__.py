"""Inference nodes: one base model, per-user adapters, explicit fallback."""

from inference.engine import InferenceEngine
from inference.errors import AdapterRejected, GenerationError, InferenceError
from inference.response import PersonalizedResponse

__all__ = ["AdapterRejected", "GenerationError", "InferenceEngine", "InferenceError", "PersonalizedResponse"]
