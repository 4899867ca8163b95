"""Ids are a contract: the fast uuid5 path gives exactly ``uuid.uuid5``'s ids, for every input."""

from __future__ import annotations

import copy
import random
import uuid

from schemas import ids


def reference(*parts: str) -> uuid.UUID:
    return uuid.uuid5(ids.NAMESPACE, "\x1f".join(parts))


def corpus(n: int) -> list[tuple[str, ...]]:
    rng = random.Random(12)
    alphabet = "abcXYZ019 -_\x1f\n\té€😀Ωß\u0301\u200b\x00"
    out: list[tuple[str, ...]] = [(), ("",), ("", ""), ("pair",), ("\x1f",), ("😀" * 50,)]
    for _ in range(n):
        out.append(tuple("".join(rng.choices(alphabet, k=rng.randrange(0, 80))) for _ in range(rng.randrange(1, 6))))
    return out


def test_the_fast_uuid5_equals_uuid5_on_many_inputs() -> None:
    for parts in corpus(20_000):
        fast, slow = ids._uuid(*parts), reference(*parts)
        assert fast == slow and fast.int == slow.int and str(fast) == str(slow) and hash(fast) == hash(slow)
        assert fast.version == 5 and fast.variant == uuid.RFC_4122 and fast.is_safe == slow.is_safe


def test_each_id_function_is_the_documented_uuid5() -> None:
    key = ids.text_key("What is  the capital of Peru?")
    assert ids.pair_id("u1", "p", "c", "r") == reference(
        "pair", "u1", ids.text_key("p"), ids.text_key("c"), ids.text_key("r")
    )
    assert ids.pair_id_from_keys("u1", key, key, key) == reference("pair", "u1", key, key, key)
    assert ids.feedback_event_id("u1", "f1") == reference("feedback", "u1", "f1")
    assert ids.derived_event_id("pair-rejected", "x", "epoch:2") == reference("pair-rejected", "x", "epoch:2")
    assert ids.threshold_event_id("u1", 3) == reference("threshold", "u1", "3")
    assert ids.training_request_id("u1", 3) == reference("training-request", "u1", "3")
    assert ids.adapter_event_id("u1", 7) == reference("adapter", "u1", "7")
    assert ids.example_id("u1", "p", "r", True) == reference(
        "example", "u1", ids.sha256_text("p"), ids.sha256_text("r"), "+"
    )


def test_a_fast_uuid_behaves_as_any_uuid() -> None:
    fast = ids.feedback_event_id("alice", "f1")
    assert copy.deepcopy(fast) == fast and copy.copy(fast) == fast
    assert uuid.UUID(str(fast)) == fast and {fast: 1}[reference("feedback", "alice", "f1")] == 1
    assert fast.bytes == reference("feedback", "alice", "f1").bytes
