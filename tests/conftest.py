"""Shared fixtures: a real Kafka broker (started once per session), a tiny locally built model."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.broker import Broker, free_port
from schemas.config import Config, default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
REPLAYS = ROOT / "tests" / "replays"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real broker: SAMTUNER_TEST_BOOTSTRAP, or one started for this session."""
    existing = os.environ.get("SAMTUNER_TEST_BOOTSTRAP")
    if existing:
        yield existing
        return
    broker = Broker(home=tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from infra.demo_model import build_model

    return build_model(default_cache_dir() / "models" / "tiny", "tiny")


def make_config_at(directory: Path, bootstrap: str, model: Path, **sections: dict[str, Any]) -> tuple[Config, Path]:
    """A Config (and its YAML file) with a unique topic prefix and state dir, the tiny model, fast training."""
    raw: dict[str, Any] = {
        "state_dir": str(directory / "state"),
        "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": f"t{uuid.uuid4().hex[:10]}.", "partitions": 3},
        "model": {"base": str(model), "max_new_tokens": 8},
        "trigger": {"min_new_pairs": 8},
        "training": {
            "dpo": {
                "num_train_epochs": 1,
                "per_device_train_batch_size": 4,
                "learning_rate": 1e-3,
                "max_length": 64,
                "bf16": False,
                "gradient_checkpointing": False,
                "logging_steps": 1,
                "beta": 0.1,
                # The dpo section merges over the recipe in code; these two keep test jobs as
                # they were (plain sigmoid, no accumulation): fast, and not what is measured.
                "loss_type": ["sigmoid"],
                "gradient_accumulation_steps": 1,
            }
        },
        "streams": {"app_id": f"streams-{uuid.uuid4().hex[:8]}", "batch_timeout_s": 0.1},
        "trainer": {"group_id": f"trainer-{uuid.uuid4().hex[:8]}"},
        # Tiny-model jobs hold out one or two pairs: the gate is for the tests that turn it on.
        "evaluation": {"enabled": False, "controls": []},
        "inference": {"node_id": f"node-{uuid.uuid4().hex[:8]}", "port": free_port(), "torch_threads": 1},
        # Tests run in parallel: roles' metrics servers take any free port.
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    path = directory / "samtuner.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Config.model_validate(raw), path


@pytest.fixture
def make_config(kafka: str, tiny_model: Path, tmp_path: Path) -> Any:
    """Config factory for one test: ``make_config(trigger={"min_new_pairs": 3})``."""

    def make(**sections: dict[str, Any]) -> tuple[Config, Path]:
        return make_config_at(tmp_path, kafka, tiny_model, **sections)

    return make
