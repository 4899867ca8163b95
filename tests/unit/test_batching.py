"""Many users in one batch (tiny model, greedy): each row answers as it would alone, a user joining never
changes another row, limits refuse with the limit's name, a flood of long answers does not hold up a short
one, and a failing forward pass fails only its rows."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.errors import GenerationError, LimitExceeded, QueueFull, RequestTimedOut
from inference.kv import BatchCache
from inference.lora import LoRARuntime, LoRAWeights
from schemas.events import AnswerServed
from tests.nodes import PROMPT, Gate, NodeKit, load_tiny
from tests.waiting import wait_for

PROMPTS = [
    "What is 3 plus 1?",
    "What is the capital of Peru?",
    "Name a colour.",
    "What is 7 plus 2?",
    "Say hello.",
    "What is 2 plus 2?",
]


@pytest.fixture
def model(tiny_model: Path) -> Any:
    return load_tiny(tiny_model)


@pytest.mark.parametrize("mode", ["merged", "unmerged"])
def test_answers_decoded_together_equal_answers_one_at_a_time(
    tmp_path: Path, tiny_model: Path, model: Any, mode: str
) -> None:
    kit = NodeKit(tmp_path, tiny_model, model=model, lora_serving=mode)
    gate = Gate(model)
    try:
        users = ["u0", "u1", "u2", "u3", "u4", None]  # None: the base model in the same batch
        for user in users[:-1]:
            assert user is not None
            kit.publish(user, 1)
        gate.open()
        alone = [kit.ask(user, prompt) for user, prompt in zip(users, PROMPTS, strict=True)]
        gate.close()
        # All six are queued before the first forward pass runs, so they decode as one batch.
        pending = [kit.node.submit(prompt, user) for user, prompt in zip(users, PROMPTS, strict=True)]
        gate.wait_for_forward()
        gate.open()
        together = [p.result(timeout=120) for p in pending]
        assert kit.node.scheduler.stats().peak_rows == len(users)
        assert [a.text for a in together] == [a.text for a in alone]
        assert [a.completion_tokens for a in together] == [a.completion_tokens for a in alone]
        assert [a.adapter_version for a in together] == [1, 1, 1, 1, 1, None]
        assert len({a.text for a in alone}) >= 5  # the rows really are different models' answers
    finally:
        gate.remove()
        kit.close()


def test_a_user_joining_mid_answer_does_not_change_the_answer_of_another(tmp_path: Path, tiny_model: Path) -> None:
    kit = NodeKit(tmp_path, tiny_model)
    try:
        kit.publish("alice", 1)
        kit.publish("bob", 1)
        alone = kit.ask("alice", min_new_tokens=40, max_new_tokens=40)
        steps = kit.node.scheduler.stats().steps
        running = kit.node.submit(PROMPT, "alice", min_new_tokens=40, max_new_tokens=40)
        wait_for(lambda: kit.node.scheduler.stats().steps >= steps + 5, 60, "alice's first decode steps", every_s=0.005)
        joined = [kit.node.submit(p, u, max_new_tokens=30) for u, p in (("bob", PROMPTS[1]), (None, PROMPTS[2]))]
        answer = running.result(timeout=120)
        for p in joined:
            p.result(timeout=120)
        assert kit.node.scheduler.stats().peak_rows == 3
        assert (answer.text, answer.completion_tokens) == (alone.text, alone.completion_tokens)
    finally:
        kit.close()


def test_another_rows_logits_stay_within_float_noise_as_users_join_and_leave(
    tmp_path: Path, tiny_model: Path, model: Any
) -> None:
    kit = NodeKit(tmp_path, tiny_model)  # for its loader and adapters; the batch below runs on its own model
    try:
        weights: dict[str, LoRAWeights] = {}
        for user in ("alice", "bob"):
            event = kit.publish(user, 1)
            weights[user] = kit.node.loader.load(user, kit.node.registry.get(user).latest)  # type: ignore[arg-type, union-attr]
            assert event.user_id == user
        runtime = LoRARuntime(model, "unmerged", max_rows=4)
        prompts = {
            name: kit.node.encoder.encode([{"role": "user", "content": p}])
            for name, p in (("alice", PROMPTS[0]), ("bob", PROMPTS[1]), ("base", PROMPTS[2]))
        }

        def prefill(name: str, w: LoRAWeights | None) -> tuple[Any, int]:
            runtime.bind(w)
            with torch.no_grad():
                out = model(input_ids=torch.tensor([prompts[name]]), use_cache=True)
            return out, int(out.logits[0, -1].argmax())

        def run(joins: dict[int, list[str]], steps: int) -> list[torch.Tensor]:
            """Alice's logits at each of ``steps`` decode steps; others join at the steps ``joins`` names."""
            batch = BatchCache(model.config)
            out, token = prefill("alice", weights["alice"])
            batch.join(out.past_key_values, torch.ones(1, len(prompts["alice"]), dtype=torch.long))
            rows: list[LoRAWeights | None] = [weights["alice"]]
            last, seen = [token], []
            for step in range(steps):
                for name in joins.get(step, []):
                    out, token = prefill(name, weights.get(name))
                    batch.join(out.past_key_values, torch.ones(1, len(prompts[name]), dtype=torch.long))
                    rows.append(weights.get(name))
                    last.append(token)
                if step == 6 and len(rows) == 3:  # bob leaves: the base row moves into his place
                    batch.keep([0, 2])
                    rows, last = [rows[0], rows[2]], [last[0], last[2]]
                runtime.bind_rows(rows)
                mask, positions = batch.step_inputs()
                with torch.no_grad():
                    out = model(
                        input_ids=torch.tensor([[t] for t in last]),
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=batch.cache,
                        use_cache=True,
                    )
                batch.cache = out.past_key_values
                batch.advanced()
                seen.append(out.logits[0, -1])
                last = [int(t) for t in out.logits[:, -1].argmax(dim=-1)]
            return seen

        alone = run({}, 10)
        crowded = run({2: ["bob"], 4: ["base"]}, 10)
        for step, (a, b) in enumerate(zip(alone, crowded, strict=True)):
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (step, (a - b).abs().max())
            assert int(a.argmax()) == int(b.argmax())
        # ... and the check can fail: another adapter's row differs from alice's
        runtime.bind(weights["bob"])
        with torch.no_grad():
            other = model(input_ids=torch.tensor([prompts["alice"]])).logits[0, -1]
        assert not torch.allclose(other, prefill("alice", weights["alice"])[0].logits[0, -1], atol=1e-3)
    finally:
        kit.close()


def test_limits_refuse_with_the_name_of_the_limit_and_publish_nothing(tmp_path: Path, tiny_model: Path) -> None:
    kit = NodeKit(tmp_path, tiny_model, limits={"max_tokens": 20, "max_prompt_tokens": 40})
    try:
        with pytest.raises(LimitExceeded, match=re.escape("inference.limits.max_tokens = 20")) as too_many:
            kit.ask("alice", max_new_tokens=21)
        assert (too_many.value.limit, too_many.value.param, too_many.value.status) == (
            "inference.limits.max_tokens",
            "max_tokens",
            400,
        )
        with pytest.raises(LimitExceeded, match=re.escape("inference.limits.max_prompt_tokens = 40")) as too_long:
            kit.ask("alice", "one two three four five six seven eight nine ten " * 4)
        assert too_long.value.code == "context_length_exceeded"
        assert kit.ask("alice", max_new_tokens=20).completion_tokens <= 20  # at the limit: answered
        assert len(kit.events(AnswerServed)) == 1
        assert 'samtuner_refusals_total{code="max_tokens_exceeded"} 1.0' in kit.node.metrics.exposition().decode()
    finally:
        kit.close()


def test_a_full_queue_refuses_with_retry_after_and_the_queued_requests_are_answered(
    tmp_path: Path, tiny_model: Path, model: Any
) -> None:
    kit = NodeKit(tmp_path, tiny_model, model=model, max_batch_size=1, limits={"max_queue": 1})
    gate = Gate(model)
    try:
        first = kit.node.submit(PROMPT, "alice")
        gate.wait_for_forward()  # the first has the only row (held in its prefill)
        second = kit.node.submit(PROMPT, "bob")  # the one queue place
        with pytest.raises(QueueFull, match=re.escape("inference.limits.max_queue")) as full:
            kit.node.submit(PROMPT, "carol")
        assert full.value.status == 429 and full.value.retry_after_s >= 1
        gate.open()
        assert first.result(timeout=60).text and second.result(timeout=60).text
        assert len(kit.events(AnswerServed)) == 2
    finally:
        gate.remove()
        kit.close()


def test_time_runs_out_for_a_request_generating_and_for_one_still_queued(
    tmp_path: Path, tiny_model: Path, model: Any
) -> None:
    kit = NodeKit(tmp_path, tiny_model, model=model, max_batch_size=1, limits={"request_timeout_s": 0.3})
    gate = Gate(model)
    try:
        generating = kit.node.submit(PROMPT, "alice", min_new_tokens=8)
        gate.wait_for_forward()
        queued = kit.node.submit(PROMPT, "bob")
        time.sleep(0.5)  # past both deadlines while the first is held in its prefill
        gate.open()
        cut = generating.result(timeout=60)
        assert (cut.finish_reason, cut.stopped_by) == ("length", "inference.limits.request_timeout_s")
        # the prefill's token, then one decode step's, after which the step sees the passed deadline
        assert cut.completion_tokens == 2
        with pytest.raises(RequestTimedOut, match=re.escape("inference.limits.request_timeout_s")) as late:
            queued.result(timeout=60)
        assert late.value.status == 503
        assert [e.answer_id for e in kit.events(AnswerServed)] == [cut.answer_id]  # the refused one: none
    finally:
        gate.remove()
        kit.close()


@pytest.fixture
def flood_kit(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    kit = NodeKit(tmp_path, tiny_model, max_batch_size=4, limits={"max_tokens": 400, "request_timeout_s": 600})
    yield kit
    kit.close()


def test_a_flood_of_long_answers_does_not_hold_up_a_short_one(flood_kit: NodeKit) -> None:
    node = flood_kit.node
    floods = [node.submit(PROMPTS[i], None, min_new_tokens=400, max_new_tokens=400) for i in range(3)]
    wait_for(lambda: node.scheduler.stats().running == 3, 60, "the flood to take three rows", every_s=0.005)
    short = node.submit(PROMPT, None, max_new_tokens=4).result(timeout=120)
    still_running = [not f.done for f in floods]
    for f in floods:
        f.cancel()
    ended = [f.result(timeout=120) for f in floods]
    assert short.completion_tokens <= 4 and short.finish_reason in ("stop", "length")
    assert all(still_running), "the short answer waited for the long ones"
    assert all(e.stopped_by == "cancelled" and e.completion_tokens < 400 for e in ended)
    assert len(flood_kit.events(AnswerServed)) == 4  # cancelled answers are logged too, once each


def test_when_a_flood_takes_every_row_a_short_request_waits_in_the_queue_within_its_bound(
    tmp_path: Path, tiny_model: Path
) -> None:
    bound_s = 120.0
    kit = NodeKit(tmp_path, tiny_model, max_batch_size=2, limits={"max_tokens": 200, "request_timeout_s": bound_s})
    try:
        floods = [kit.node.submit(PROMPTS[i], None, min_new_tokens=200, max_new_tokens=200) for i in range(2)]
        wait_for(lambda: kit.node.scheduler.stats().running == 2, 60, "the flood to take both rows", every_s=0.005)
        short = kit.node.submit(PROMPT, None, max_new_tokens=4).result(timeout=bound_s + 30)
        assert [f.result(timeout=120).completion_tokens for f in floods] == [200, 200]  # capped by max_tokens
        assert short.completion_tokens <= 4 and short.queue_ms > 0 and short.latency_ms < bound_s * 1000
    finally:
        kit.close()


def test_a_failing_forward_pass_fails_its_rows_with_the_cause_and_the_node_keeps_serving(
    tmp_path: Path, tiny_model: Path, model: Any
) -> None:
    failures = iter([RuntimeError("simulated kernel failure")])

    def fail_once(module: Any, args: Any) -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    handle = model.register_forward_pre_hook(fail_once)
    kit = NodeKit(tmp_path, tiny_model, model=model)
    try:
        with pytest.raises(GenerationError, match="simulated kernel failure"):
            kit.ask("alice")
        assert kit.ask("alice").text  # the next request is answered
        assert len(kit.events(AnswerServed)) == 1
    finally:
        handle.remove()
        kit.close()


def test_closing_the_node_fails_queued_requests_instead_of_leaving_them_waiting(
    tmp_path: Path, tiny_model: Path, model: Any
) -> None:
    import threading

    from inference.errors import NodeClosed

    kit = NodeKit(tmp_path, tiny_model, model=model, max_batch_size=1)
    gate = Gate(model)
    try:
        first = kit.node.submit(PROMPT, "alice")
        gate.wait_for_forward()
        queued = kit.node.submit(PROMPT, "bob")
        closer = threading.Thread(target=kit.close)
        closer.start()
        wait_for(lambda: kit.node.scheduler.closing, 60, "the node to start closing", every_s=0.005)
        gate.open()
        closer.join(timeout=60)
        with contextlib.suppress(NodeClosed):  # the row in flight ends one way or the other, never left waiting
            first.result(timeout=60)
        with pytest.raises(NodeClosed):
            queued.result(timeout=60)
        with pytest.raises(NodeClosed):
            kit.node.submit(PROMPT, "carol")
    finally:
        gate.remove()


def test_merged_serving_merges_long_one_user_answers_within_its_scratch_bound(tmp_path: Path, tiny_model: Path) -> None:
    bound_mb = 0.05  # the tiny model's 8 target layers take 0.125 MB: three of them fit
    merged = NodeKit(tmp_path / "merged", tiny_model, lora_serving="merged", merge_scratch_mb=bound_mb)
    unmerged = NodeKit(tmp_path / "unmerged", tiny_model, lora_serving="unmerged")
    try:
        for kit in (merged, unmerged):
            kit.publish("alice", 1, seed=7)
        short = merged.ask("alice", max_new_tokens=10)
        assert merged.node.runtime.scratch_bytes == 0  # a short answer is never merged
        long = merged.ask("alice", min_new_tokens=40, max_new_tokens=40)
        described = merged.node.runtime.describe()
        assert 0 < described["scratch_bytes"] <= bound_mb * 2**20 and described["merged_layers"] == 3
        assert long.text == unmerged.ask("alice", min_new_tokens=40, max_new_tokens=40).text
        assert short.text == unmerged.ask("alice", max_new_tokens=10).text
        assert unmerged.node.runtime.scratch_bytes == 0
    finally:
        merged.close()
        unmerged.close()
