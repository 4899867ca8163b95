"""A small locally built chat model for tests and the demo (no downloads)."""

from infra.demo_model.build import PRESETS, build_model
from infra.demo_model.corpus import SIGN_OFF, Fact, facts

__all__ = ["PRESETS", "SIGN_OFF", "Fact", "build_model", "facts"]
