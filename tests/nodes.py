"""Helpers for inference tests: an in-process node on the tiny model, and synthetic adapters for it."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from inference.base import configure_torch, load_served_base
from inference.node import InferenceNode
from infra.artifacts import ArtifactStore
from infra.demo_model.adapter import build_adapter
from schemas.config import Config
from schemas.events import AdapterPublished
from tests.fakes import FakePublisher

PROMPT = "What is 3 plus 1?"


def node_config(tmp_path: Path, tiny_model: Path, **inference: Any) -> Config:
    return Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "model": {"base": str(tiny_model), "max_new_tokens": 10},
            "inference": {"node_id": "test-node", "torch_threads": 1, **inference},
        }
    )


class Gate:
    """Holds every forward pass of a model until opened: a torch forward pre-hook, so tests can fill a node's
    batch rows and queue deterministically (the model stays the real one)."""

    def __init__(self, model: Any) -> None:
        import threading

        self.opened = threading.Event()
        self.waiting = threading.Semaphore(0)  # released once per forward pass that reached the gate
        self._handle = model.register_forward_pre_hook(self._hold)

    def _hold(self, module: Any, args: Any) -> None:
        self.waiting.release()
        self.opened.wait()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        """Hold forward passes again (call while the model is idle); earlier passes are forgotten."""
        import threading

        self.waiting = threading.Semaphore(0)
        self.opened.clear()

    def wait_for_forward(self, timeout: float = 60.0) -> None:
        assert self.waiting.acquire(timeout=timeout), "no forward pass reached the gate"

    def remove(self) -> None:
        self.open()
        self._handle.remove()


def load_tiny(tiny_model: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model))


class NodeKit:
    """A node with a fake publisher, and a way to publish synthetic adapters to it."""

    def __init__(self, tmp_path: Path, tiny_model: Path, model: Any = None, **inference: Any) -> None:
        self.cfg = node_config(tmp_path, tiny_model, **inference)
        self.publisher = FakePublisher()
        configure_torch(self.cfg)
        self.node = InferenceNode(self.cfg, self.publisher, load_served_base(self.cfg, model))
        self.store = ArtifactStore(self.cfg.artifact_root)

    def adapter(self, user: str, version: int, seed: int | None = None) -> AdapterPublished:
        """Write a synthetic adapter for (user, version) without telling the node."""
        return build_adapter(
            self.store,
            self.cfg.model.base,
            self.node.runtime.model,
            user,
            version,
            seed=seed if seed is not None else zlib.crc32(f"{user}/{version}".encode()),
            strength=0.2,
            base_sha256=self.node.base_sha256,
        )

    def publish(self, user: str, version: int, seed: int | None = None) -> AdapterPublished:
        event = self.adapter(user, version, seed)
        self.node.apply(event)
        return event

    def ask(self, user: str | None, prompt: str = PROMPT, **kw: Any) -> Any:
        return self.node.generate_personalized_response(prompt, user, **kw)

    def events(self, kind: type) -> list[Any]:
        from schemas.codec import decode

        return [
            e
            for e in (decode(v) for _, _, v, _ in self.publisher.on(self.node.topics.inference))
            if isinstance(e, kind)
        ]

    def close(self) -> None:
        self.node.close()
