"""An inference node on the tiny model: each user's answer comes from that user's adapter, bad adapters fall
back with their reason, and concurrent requests never see another user's adapter."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.client import generate_personalized_response
from inference.lora import LoRARuntime
from infra.demo_model.adapter import FAULTS, make_faulty
from schemas.events import AdapterLoadFailed, AdapterRevoked, AnswerServed
from tests.nodes import PROMPT, NodeKit


@pytest.fixture
def kit(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    kit = NodeKit(tmp_path, tiny_model)
    yield kit
    kit.close()


@pytest.mark.parametrize("mode", ["merged", "unmerged"])
def test_each_user_is_answered_by_their_own_adapter_and_the_answer_says_so(
    tmp_path: Path, tiny_model: Path, mode: str
) -> None:
    kit = NodeKit(tmp_path, tiny_model, lora_serving=mode)
    kit.publish("alice", 1)
    alice = kit.ask("alice")
    kit.publish("bob", 1)  # built and validated after the model's layers were switched once
    bob, base = kit.ask("bob"), kit.ask("carol")
    assert (alice.source, alice.adapter_version, alice.fallback_reason, alice.arm) == ("adapter", 1, None, "new")
    assert (bob.source, bob.adapter_version) == ("adapter", 1)
    assert (base.source, base.adapter_version, base.fallback_reason) == ("base", None, "no_adapter")
    assert len({alice.text, bob.text, base.text}) == 3  # three different models answered
    assert kit.ask("alice").text == alice.text  # greedy: the same adapter gives the same answer
    served = kit.events(AnswerServed)
    assert [(e.user_id, e.arm, e.adapter_version) for e in served] == [
        ("alice", "new", 1),
        ("bob", "new", 1),
        ("carol", "base", None),
        ("alice", "new", 1),
    ]
    assert served[0].answer_id == alice.answer_id
    kit.close()


def test_anonymous_requests_are_answered_by_the_base_model_with_the_reason(kit: NodeKit) -> None:
    answer = generate_personalized_response(PROMPT, node=kit.node, max_new_tokens=4)
    assert (answer.source, answer.fallback_reason, answer.completion_tokens) == ("base", "anonymous", 4)
    with pytest.raises(TypeError, match="unknown generation options"):
        kit.ask("alice", beam_width=3)


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_a_bad_new_version_keeps_the_previous_one_and_says_why(kit: NodeKit, kind: str, tmp_path: Path) -> None:
    good = kit.publish("alice", 1)
    expected = kit.ask("alice").text
    kit.node.apply(make_faulty(kit.store, good, kind, outside=tmp_path))
    for _ in range(2):
        answer = kit.ask("alice")
        assert (answer.adapter_version, answer.fallback_reason) == (1, FAULTS[kind])
        assert answer.text == expected and "adapter v2 rejected" in answer.fallback_detail
    (failed,) = kit.events(AdapterLoadFailed)  # published once, not once per request
    assert (failed.user_id, failed.version, failed.reason) == ("alice", 2, FAULTS[kind])
    assert kit.node.user_state("alice")["rejected_versions"].keys() == {2}


def test_a_bad_first_version_falls_back_to_the_base_model(kit: NodeKit, tmp_path: Path) -> None:
    good = kit.adapter("alice", 1)
    bad = make_faulty(kit.store, good, "checksum_mismatch")
    kit.node.apply(bad.model_copy(update={"version": 1}))
    answer = kit.ask("alice")
    assert (answer.source, answer.adapter_version, answer.fallback_reason) == ("base", None, "checksum_mismatch")
    assert "the base model answered" in answer.fallback_detail


def test_a_deactivated_user_gets_the_base_model_and_the_answer_says_so(kit: NodeKit) -> None:
    from inference.registrar import decide_registry_command
    from schemas.commands import ActivateAdapter, DeactivateAdapter
    from schemas.events import SourceRef

    kit.publish("alice", 1)
    at = SourceRef(topic="control", partition=0, offset=0)
    (off,) = decide_registry_command(kit.node.registry.get("alice"), DeactivateAdapter(user_id="alice"), at).events
    kit.node.apply(off)
    assert (kit.ask("alice").source, kit.ask("alice").fallback_reason) == ("base", "deactivated")
    at = SourceRef(topic="control", partition=0, offset=1)
    (on,) = decide_registry_command(kit.node.registry.get("alice"), ActivateAdapter(user_id="alice"), at).events
    kit.node.apply(on)
    assert kit.ask("alice").adapter_version == 1


def test_a_revoked_user_is_unloaded_and_answered_by_the_base_model(kit: NodeKit) -> None:
    import uuid

    kit.publish("alice", 1)
    kit.ask("alice")
    assert [r["user"] for r in kit.node.resident()] == ["alice"]
    kit.node.apply(AdapterRevoked(event_id=uuid.uuid4(), user_id="alice", correlation_id=uuid.uuid4(), reason="erased"))
    assert kit.node.resident() == []
    answer = kit.ask("alice")
    assert (answer.source, answer.fallback_reason) == ("base", "revoked")


def test_a_new_version_is_prefetched_for_an_active_user_and_the_pointer_flips(kit: NodeKit) -> None:
    kit.publish("alice", 1)
    kit.ask("alice")
    kit.publish("alice", 2)
    deadline = time.monotonic() + 10
    while not any(r["version"] == 2 and r["active"] for r in kit.node.resident()):
        assert time.monotonic() < deadline, kit.node.resident()
        time.sleep(0.02)
    misses = kit.node.cache.stats().misses
    assert kit.ask("alice").adapter_version == 2
    assert kit.node.cache.stats().misses == misses  # served from the cache: it was loaded before the request


def test_the_ab_split_serves_both_arms_and_logs_them(tmp_path: Path, tiny_model: Path) -> None:
    kit = NodeKit(tmp_path, tiny_model, ab_new_share=0.5)
    try:
        kit.publish("alice", 1)
        kit.publish("alice", 2)
        answers = [kit.ask("alice", max_new_tokens=2) for _ in range(40)]
        arms = {(a.arm, a.adapter_version) for a in answers}
        assert arms == {("new", 2), ("previous", 1)}
        logged = {(e.arm, e.adapter_version) for e in kit.events(AnswerServed)}
        assert logged == arms
    finally:
        kit.close()


def test_the_cache_stays_within_its_bounds_while_every_answer_stays_right(tmp_path: Path, tiny_model: Path) -> None:
    kit = NodeKit(tmp_path, tiny_model, cache={"max_adapters": 2, "policy": "lru"})
    try:
        users = [f"u{i}" for i in range(5)]
        for user in users:
            kit.publish(user, 1)
        first = {user: kit.ask(user).text for user in users}
        for user in users * 2:
            assert kit.ask(user).text == first[user]
            assert len(kit.node.resident()) <= 2
        assert kit.node.cache.stats().evictions >= 8
    finally:
        kit.close()


def test_concurrent_requests_of_many_users_use_their_own_adapter_while_versions_are_published(
    tmp_path: Path, tiny_model: Path
) -> None:
    kit = NodeKit(tmp_path, tiny_model, ab_new_share=1.0)
    reference = NodeKit(tmp_path, tiny_model)  # another node over the same artifact store
    users, versions = [f"user-{i}" for i in range(6)], (1, 2, 3)
    try:
        # What each (user, version) must answer, computed alone on another node; seeds are drawn until
        # every adapter answers differently, so a mix-up between any two of them would show.
        events: dict[Any, Any] = {}
        expected: dict[Any, Any] = {}
        seeds = iter(range(1_000))
        for user in users:
            for version in versions:
                while True:
                    seed = next(seeds)
                    event = kit.adapter(user, version, seed=seed)
                    alias = f"ref-{user}-{version}-{seed}"
                    reference.node.apply(event.model_copy(update={"user_id": alias}))
                    text = reference.ask(alias).text
                    if text.strip() and text not in expected.values():
                        break
                events[(user, version)], expected[(user, version)] = event, text
        for user in users:
            kit.node.apply(events[(user, 1)])

        answers: list = []
        errors: list = []

        def client(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(12):
                    user = rng.choice(users)
                    answers.append((user, kit.ask(user)))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        def publisher() -> None:
            for version in (2, 3):
                for user in users:
                    time.sleep(0.01)
                    kit.node.apply(events[(user, version)])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)] + [threading.Thread(target=publisher)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors
        assert len(answers) == 96
        for user, answer in answers:
            assert answer.user_id == user and answer.fallback_reason is None
            assert answer.text == expected[(user, answer.adapter_version)], (user, answer.adapter_version)
        assert {a.adapter_version for _, a in answers} >= {1, 3}
    finally:
        kit.close()
        reference.close()


@pytest.mark.parametrize("mode", ["merged", "unmerged"])
def test_our_lora_matches_peft_on_the_same_adapter(tmp_path: Path, tiny_model: Path, mode: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kit = NodeKit(tmp_path, tiny_model, lora_serving=mode)
    try:
        event = kit.publish("alice", 1)
        weights = kit.node.loader.load("alice", kit.node.registry.get("alice").latest)  # type: ignore[arg-type, union-attr]
        ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
        runtime: LoRARuntime = kit.node.runtime
        runtime.bind(weights)
        with torch.no_grad():
            ours = runtime.model(input_ids=ids).logits
        runtime.bind(None)
        with torch.no_grad():
            base = runtime.model(input_ids=ids).logits
        reference = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model)), str(kit.store.resolve(event.uri))
        ).eval()
        with torch.no_grad():
            theirs = reference(input_ids=ids).logits
        assert torch.allclose(ours, theirs, atol=1e-4)
        assert not torch.allclose(ours, base, atol=1e-2)  # the adapter does change the output
        untouched = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
        with torch.no_grad():
            assert torch.allclose(base, untouched(input_ids=ids).logits, atol=1e-6)  # unbinding restores the base
    finally:
        kit.close()


def test_a_pinned_users_adapter_stays_loaded_under_pressure(tmp_path: Path, tiny_model: Path) -> None:
    kit = NodeKit(tmp_path, tiny_model, cache={"max_adapters": 2, "policy": "lru", "pinned_users": ["vip"]})
    try:
        for user in ("vip", "a", "b", "c"):
            kit.publish(user, 1)
            kit.ask(user, max_new_tokens=1)
        assert {(r["user"], r["pinned"]) for r in kit.node.resident()} == {("vip", True), ("c", False)}
        kit.publish("vip", 2)  # a new version: the pin moves with the user's pointer
        assert kit.ask("vip", max_new_tokens=1).adapter_version == 2
        assert ("vip", 2, True) in {(r["user"], r["version"], r["pinned"]) for r in kit.node.resident()}
    finally:
        kit.close()
