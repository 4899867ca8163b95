"""`make demo`'s flow, end to end on the tiny model: SAM's own answers are corrected in two styles, each
user's job is trained and served, and the summary measures the styles before and after."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from samtuner.demo import run_demo
from samtuner.demo_answers import base_answers
from samtuner.demo_plan import DemoPlan, DemoUser
from samtuner.demo_styles import ADDS_CAVEAT, CLOSES_WITH_LINE
from tests.nodes import NodeKit

pytestmark = pytest.mark.integration

PLAN = DemoPlan(
    users=(
        DemoUser(
            "alice",
            CLOSES_WITH_LINE,
            tuple(f"What is the capital of country {i}?" for i in range(10)),
            ("What is the capital of France?", "What color is snow?"),
        ),
        DemoUser(
            "bob",
            ADDS_CAVEAT,
            tuple(f"What color is thing {i}?" for i in range(10)),
            ("What is the opposite of hot?", "What sound does a dog make?"),
        ),
    )
)


def _tiny_recipe(tmp_path: Path) -> Path:
    """What a user's --config holds: the recipe and threshold (the demo adds its own ports and dirs)."""
    recipe = {
        "model": {"max_new_tokens": 8},
        "trigger": {"min_new_pairs": 8},
        "training": {
            "dpo": {
                "num_train_epochs": 1,
                "per_device_train_batch_size": 4,
                "learning_rate": 1e-3,
                "max_length": 64,
                "gradient_accumulation_steps": 1,
            }
        },
        "streams": {"app_id": f"demo-{uuid.uuid4().hex[:8]}", "batch_timeout_s": 0.1},
        "evaluation": {"enabled": False, "controls": []},
        "inference": {"torch_threads": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_demo_trains_both_styles_on_the_models_own_answers_and_measures_them(
    tiny_model: Path, tmp_path: Path
) -> None:
    summary = run_demo(
        tmp_path / "demo", model=str(tiny_model), config=_tiny_recipe(tmp_path), plan=PLAN, timeout_s=900
    )

    json.dumps(summary)  # the CLI prints it as one JSON line
    assert summary["dlq"] == 3  # not JSON, a bad confidence type, no prompt
    assert summary["pairs_accepted"] >= 16 and summary["pairs_rejected"] >= 2  # the repeat and the no-op edit
    assert summary["adapters_published"] == 2
    for user_id, style in (("alice", CLOSES_WITH_LINE), ("bob", ADDS_CAVEAT)):
        user = summary["users"][user_id]
        assert (user["style"], user["kind"], user["outcome"]) == (style.name, style.kind, "published")
        assert user["corrections_sent"] == 10
        assert user["adapter_version"] == 1
        assert 0.0 <= user["style_rate_before"] <= 1.0 and 0.0 <= user["style_rate_after"] <= 1.0
        assert [a["prompt"] for a in user["answers"]] == list(PLAN.users[0 if user_id == "alice" else 1].heldout)
        assert all(a["after_source"] == "adapter v1" for a in user["answers"])
        assert user["feedback_to_adapter_served_s"] > 0
    assert summary["wall_s"] > 0


def test_sams_original_answers_are_what_the_node_would_answer(tiny_model: Path, tmp_path: Path) -> None:
    """On-policy: the corrected 'original' answers are the base model's own greedy answers, as served."""
    kit = NodeKit(tmp_path, tiny_model)  # a real node, answering through its batch scheduler
    cfg = kit.cfg
    prompts = [u.prompts[i] for u in PLAN.users for i in range(3)]
    try:
        originals = base_answers(cfg, prompts, say=lambda _: None, cache_dir=tmp_path / "cache")
        for prompt in prompts:
            served = kit.ask(None, prompt)
            assert served.source == "base" and originals[prompt] == served.text.strip()
    finally:
        kit.close()
    again = base_answers(cfg, prompts, say=lambda _: None, cache_dir=tmp_path / "cache")
    assert again == originals and len(list((tmp_path / "cache").glob("*.json"))) == 1
