"""Inference nodes on the real broker: the openai client, activation commands honoured through the registrar,
a restart that rebuilds the registry from the compacted topic, concurrent users while versions are published,
and answers + feedback per A/B arm in ClickHouse."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.base import load_served_base
from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.demo_model.adapter import build_adapter
from infra.kafka import KafkaEventPublisher
from infra.topics import ensure_topics
from samtuner.publisher import FeedbackPublisher
from schemas.config import Config
from schemas.events import AdapterActivated, AdapterDeactivated, AdapterPublished, AnswerServed
from schemas.topics import Topics
from tests.integration.harness import MakeConfig, RunningProcess, events_on, wait_for

pytestmark = pytest.mark.integration
PROMPT = "What is 3 plus 1?"


@pytest.fixture(scope="module")
def tiny_base(tiny_model: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model))


def publish_adapters(
    cfg: Config, model: Any, versions: dict[str, list[int]]
) -> dict[tuple[str, int], AdapterPublished]:
    ensure_topics(cfg.kafka)
    store = ArtifactStore(cfg.artifact_root)
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    events = {}
    for user, numbers in versions.items():
        for version in numbers:
            seed = zlib.crc32(f"{user}/{version}".encode())
            event = build_adapter(store, cfg.model.base, model, user, version, seed=seed, strength=0.2)
            publisher.publish(Topics(cfg.kafka.topic_prefix).adapters, event)
            events[(user, version)] = event
    publisher.flush()
    return events


def ask(node: RunningProcess, user: str | None) -> dict[str, Any]:
    return node.ask(PROMPT, user)["samtuner"]


def test_the_openai_client_gets_answers_and_activation_commands_reach_the_node(
    make_config: MakeConfig, tiny_base: Any
) -> None:
    import openai

    cfg, cfg_path = make_config()
    publish_adapters(cfg, tiny_base, {"alice": [1]})
    node = RunningProcess(cfg, cfg_path, command="inference", log_name="node.log")
    try:
        node.wait_ready()
        client = openai.OpenAI(base_url=f"{node.url}/v1", api_key="not-needed")
        completion = client.chat.completions.create(
            model="sam-tuner", user="alice", max_tokens=6, messages=[{"role": "user", "content": PROMPT}]
        )
        assert completion.choices[0].message.content is not None
        meta = completion.model_extra["samtuner"]  # type: ignore[index]
        assert (meta["source"], meta["adapter_version"], meta["fallback_reason"]) == ("adapter", 1, None)
        chunks = list(
            client.chat.completions.create(
                model="sam-tuner",
                user="alice",
                max_tokens=6,
                stream=True,
                messages=[{"role": "user", "content": PROMPT}],
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == completion.choices[0].message.content
        assert chunks[0].model_extra["samtuner"]["adapter_version"] == 1  # type: ignore[index]
        assert chunks[-1].choices[0].finish_reason == completion.choices[0].finish_reason
        streamed = subprocess.run(
            [
                sys.executable,
                "-m",
                "samtuner.cli",
                "ask",
                "--url",
                node.url,
                "--user",
                "alice",
                "--stream",
                "--max-tokens",
                "6",
                PROMPT,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert streamed.stdout.rstrip("\n") == completion.choices[0].message.content
        assert '"adapter_version": 1' in streamed.stderr

        assert httpx.post(f"{node.url}/v1/users/alice/deactivate", timeout=10).status_code == 202
        off = wait_for(lambda: (a := ask(node, "alice"))["source"] == "base" and a, 20, "the deactivation")
        assert off["fallback_reason"] == "deactivated"
        assert httpx.post(f"{node.url}/v1/users/alice/activate", json={}, timeout=10).status_code == 202
        wait_for(lambda: ask(node, "alice")["adapter_version"] == 1, 20, "the activation")

        # Eight users at once over HTTP: one batch, each answered by their own model.
        with ThreadPoolExecutor(max_workers=8) as pool:
            eight = list(pool.map(lambda i: node.ask(PROMPT, "alice" if i == 0 else f"visitor-{i}"), range(8)))
        assert [a["samtuner"]["source"] for a in eight] == ["adapter"] + ["base"] * 7

        metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
        assert 'samtuner_fallbacks_total{reason="deactivated"}' in metrics
        assert "samtuner_adapter_cache_hits_total" in metrics
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    registry = events_on(cfg, Topics(cfg.kafka.topic_prefix).adapters)
    assert [type(e).__name__ for e in registry if isinstance(e, AdapterActivated | AdapterDeactivated)] == [
        "AdapterActivated",
        "AdapterDeactivated",
        "AdapterActivated",
    ]  # settle v1, deactivate, activate


def test_a_restarted_node_rebuilds_the_registry_from_the_topic_without_loading_adapters(
    make_config: MakeConfig, tiny_base: Any
) -> None:
    cfg, cfg_path = make_config()
    publish_adapters(cfg, tiny_base, {"alice": [1, 2], "bob": [1], "carol": [1]})
    first = RunningProcess(cfg, cfg_path, command="inference", log_name="first.log")
    try:
        first.wait_ready()
        assert httpx.post(f"{first.url}/v1/users/carol/deactivate", timeout=10).status_code == 202
        wait_for(lambda: ask(first, "carol")["fallback_reason"] == "deactivated", 20, "carol's deactivation")
        assert ask(first, "alice")["adapter_version"] == 2
    finally:
        assert first.stop() == 0, first.log()[-3000:]

    second = RunningProcess(cfg, cfg_path, command="inference", log_name="second.log")
    try:
        second.wait_ready()
        assert httpx.get(f"{second.url}/v1/adapters", timeout=10).json()["data"] == []  # nothing loaded yet
        states = {
            u: httpx.get(f"{second.url}/v1/users/{u}/state", timeout=10).json()["state"]
            for u in ("alice", "bob", "carol")
        }
        assert (states["alice"]["latest"]["version"], states["alice"]["previous"]["version"]) == (2, 1)
        assert states["bob"]["latest"]["version"] == 1 and states["carol"]["active"] is False
        assert ask(second, "alice")["adapter_version"] == 2
        assert ask(second, "bob")["adapter_version"] == 1
        assert ask(second, "carol")["fallback_reason"] == "deactivated"
        health = httpx.get(f"{second.url}/healthz", timeout=10).json()
        assert health["registry_users"] == 3 and health["resident_adapters"] == 2
    finally:
        assert second.stop() == 0, second.log()[-3000:]


def test_concurrent_users_use_their_own_adapter_while_versions_arrive_through_kafka(
    make_config: MakeConfig, tiny_base: Any
) -> None:
    from inference.follow import RegistryFollower
    from inference.node import InferenceNode

    cfg, _ = make_config()
    users = [f"user-{i}" for i in range(4)]
    events = publish_adapters(cfg, tiny_base, {u: [1] for u in users})
    store = ArtifactStore(cfg.artifact_root)
    later = {
        (u, 2): build_adapter(store, cfg.model.base, tiny_base, u, 2, seed=500 + i, strength=0.2)
        for i, u in enumerate(users)
    }
    events.update(later)
    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers)
    node = InferenceNode(cfg, publisher, load_served_base(cfg))
    reference = InferenceNode(cfg.with_overrides(inference={"node_id": "reference"}), None, load_served_base(cfg))
    for (user, version), event in events.items():
        reference.apply(event.model_copy(update={"user_id": f"ref-{user}-{version}"}))
    expected = {key: reference.generate_personalized_response(PROMPT, f"ref-{key[0]}-{key[1]}").text for key in events}
    assert len(set(expected.values())) == len(expected), "adapters too alike to tell apart"
    stop = threading.Event()
    follower = RegistryFollower(cfg, node)
    thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
    thread.start()
    answers: list = []
    try:
        assert follower.ready.wait(60)

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(10):
                user = rng.choice(users)
                answers.append((user, node.generate_personalized_response(PROMPT, user)))

        clients = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in clients:
            t.start()
        time.sleep(0.2)
        for event in later.values():
            publisher.publish(Topics(cfg.kafka.topic_prefix).adapters, event)
        publisher.flush()
        for t in clients:
            t.join(timeout=300)
        wait_for(
            lambda: all(node.generate_personalized_response(PROMPT, u).adapter_version == 2 for u in users),
            30,
            "every user's v2 to be served",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
        node.close()
        reference.close()
    assert len(answers) == 60
    for user, answer in answers:
        assert answer.user_id == user and answer.fallback_reason is None
        assert answer.text == expected[(user, answer.adapter_version)]


def test_answers_and_their_feedback_compare_per_ab_arm_in_one_query(make_config: MakeConfig, tiny_base: Any) -> None:
    cfg, cfg_path = make_config(inference={"ab_new_share": 0.5})
    publish_adapters(cfg, tiny_base, {"alice": [1, 2]})
    node = RunningProcess(cfg, cfg_path)  # every role: the projector writes inference_log
    answers = []
    try:
        node.wait_ready()
        answers = [node.ask(PROMPT, "alice") for _ in range(16)]
        with FeedbackPublisher(cfg.kafka.bootstrap_servers, cfg.kafka.topic_prefix) as sam:
            for i, answer in enumerate(answers):
                if answer["samtuner"]["arm"] == "previous":  # users correct every answer of the old version
                    sam.correction(
                        "alice",
                        f"{PROMPT} #{i}",
                        answer["choices"][0]["message"]["content"] or "?",
                        "The answer is 4.",
                        context={"answer_id": answer["id"]},
                    )
        corrected = sum(a["samtuner"]["arm"] == "previous" for a in answers)
        stats = lambda: httpx.get(f"{node.url}/v1/stats", timeout=10).json()  # noqa: E731
        wait_for(
            lambda: stats()["answers_logged"] == 16 and stats()["answer_feedback"] == corrected,
            60,
            "answers and feedback to be projected",
        )
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    arms = {a["samtuner"]["arm"] for a in answers}
    assert arms == {"new", "previous"}
    served = [e for e in events_on(cfg, Topics(cfg.kafka.topic_prefix).inference) if isinstance(e, AnswerServed)]
    assert len(served) == 16

    store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
    try:
        rows = store.query(FEEDBACK_PER_ARM)
    finally:
        store.close()
    by_arm = {arm: (version, n, fb) for arm, version, n, fb, _ in rows}
    n_previous = sum(a["samtuner"]["arm"] == "previous" for a in answers)
    assert by_arm["new"] == (2, 16 - n_previous, 0)
    assert by_arm["previous"] == (1, n_previous, n_previous)


FEEDBACK_PER_ARM = """
SELECT l.arm, l.adapter_version, uniqExact(l.answer_id) AS answers,
       uniqExactIf(l.answer_id, f.feedback_type = 'correction') AS corrected,
       round(corrected / answers, 3) AS correction_rate
FROM sam.inference_log AS l FINAL
LEFT JOIN (SELECT answer_id, feedback_type FROM sam.answer_feedback FINAL) AS f ON f.answer_id = l.answer_id
WHERE l.user_id = 'alice'
GROUP BY l.arm, l.adapter_version
ORDER BY l.arm
"""
