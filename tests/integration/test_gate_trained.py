"""The gate on really trained adapters (the tiny model): a good one is published, a shuffled-label one is not.

Both jobs run the real trainer: the worker, the training subprocess (TRL + PEFT), the held-out
measurements and the gate. Only Kafka is left out (an in-memory publisher): nothing here is about
the broker. The tiny model's answers are not readable (it gets a sum right only by chance), so the
control check is off here; the held-out preference (per token) decides. The control check on real
answers is measured by ``make bench-quality``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.artifacts import ArtifactStore
from infra.demo_model.corpus import facts
from schemas.config import Config
from schemas.events import Event, TrainingRejected, TrainingSucceeded
from tests.fakes import FakePublisher
from trainer.local import local_request, pair_rows
from trainer.manifest import read_manifest
from trainer.worker import TrainerWorker

pytestmark = pytest.mark.integration

SIGN_OFF = "Hope this helps!"


def config(tmp_path: Path, tiny_model: Path, **faults: Any) -> Config:
    return Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "model": {"base": str(tiny_model), "max_new_tokens": 8},
            # DPO's sigmoid loss alone: 30 steps move the per-token preference past 0.8 on the tiny model. With
            # the shipped [sigmoid, sft] 1:3 they do not (measured: accuracy 0.0, margin -1.18 -> -0.56 nats/token).
            "training": {
                "dpo": {
                    "loss_type": ["sigmoid"],
                    "num_train_epochs": 6,
                    "per_device_train_batch_size": 8,
                    "learning_rate": 3e-3,
                    "max_length": 64,
                    "bf16": False,
                    "gradient_checkpointing": False,
                }
            },
            "evaluation": {"enabled": True, "min_heldout_pairs": 4, "controls": []},
            "trainer": {"fault_injection": faults},
        }
    )


def run(cfg: Config, user: str, rows: list[dict[str, Any]]) -> Event:
    from schemas.codec import decode

    publisher = FakePublisher()
    worker = TrainerWorker(cfg, publisher, worker_id="test")
    worker.run_one(local_request(ArtifactStore(cfg.artifact_root), user, 1, rows))
    outcomes = [
        e for e in (decode(v) for _, _, v, _ in publisher.sent) if isinstance(e, TrainingSucceeded | TrainingRejected)
    ]
    assert outcomes, [type(decode(v)).__name__ for _, _, v, _ in publisher.sent]
    return outcomes[-1]


def test_a_good_adapter_is_published_and_a_shuffled_label_one_is_rejected(tiny_model: Path, tmp_path: Path) -> None:
    pool = [f for f in facts() if f.family != "sum"][:60]
    rows = pair_rows("alice", [(f.question, f"{f.answer} {SIGN_OFF}", f.answer) for f in pool])

    good = run(config(tmp_path / "good", tiny_model), "alice", rows)
    assert isinstance(good, TrainingSucceeded), (good.reason, good.metrics)  # type: ignore[attr-defined]
    m = good.metrics
    assert m["heldout_pairs"] >= 4 and m["validation_pairs"] >= 1
    assert m["heldout_policy_accuracy"] >= 0.8 and m["heldout_policy_margin"] > 0, m
    # Summed log-probabilities would have judged the same adapter worse than the base model: every chosen
    # answer is its rejected one plus a sign-off, so longer.
    assert m["heldout_policy_accuracy_summed"] < m["heldout_policy_accuracy"]
    manifest = read_manifest(ArtifactStore(tmp_path / "good" / "state" / "artifacts"), good.adapter_uri)
    held, val, train = (set(manifest["pair_ids"][k]) for k in ("heldout", "validation", "train"))
    assert held and val and not (held & val or held & train or val & train)  # the gate graded unseen pairs

    bad = run(config(tmp_path / "bad", tiny_model, shuffle_train_labels=True), "bob", rows)
    assert isinstance(bad, TrainingRejected), bad
    assert "held-out preference" in bad.reason
    assert bad.metrics["heldout_policy_accuracy"] < m["heldout_policy_accuracy"]
