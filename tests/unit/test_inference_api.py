"""The node's HTTP API: OpenAI-compatible answers that say who answered, commands, adapters and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.api import create_api
from schemas.commands import ActivateAdapter, Command, DeactivateAdapter
from tests.nodes import PROMPT, NodeKit


@pytest.fixture
def kit(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    kit = NodeKit(tmp_path, tiny_model)
    yield kit
    kit.close()


@pytest.fixture
def sent() -> list[Command]:
    return []


@pytest.fixture
def http(kit: NodeKit, sent: list[Command]) -> TestClient:
    return TestClient(create_api(kit.node, send_command=sent.append, ready=lambda: True))


def chat(http: TestClient, user: str | None, **extra: object) -> dict:
    r = http.post("/v1/chat/completions", json={"model": "sam-tuner", "user": user,
                                                 "messages": [{"role": "user", "content": PROMPT}], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_chat_completion_names_the_adapter_version_that_answered(kit: NodeKit, http: TestClient) -> None:
    kit.publish("alice", 1)
    body = chat(http, "alice", max_tokens=5)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 5
    meta = body["samtuner"]
    assert (meta["user"], meta["source"], meta["adapter_version"], meta["arm"]) == ("alice", "adapter", 1, "new")
    assert body["id"] == "chatcmpl-" + meta["answer_id"].replace("-", "")
    base = chat(http, "nobody")["samtuner"]
    assert (base["source"], base["adapter_version"], base["fallback_reason"]) == ("base", None, "no_adapter")


def test_the_official_openai_client_talks_to_the_node(kit: NodeKit, http: TestClient) -> None:
    import openai

    kit.publish("alice", 1)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)
    completion = client.chat.completions.create(model="sam-tuner", user="alice", max_tokens=6,
                                                messages=[{"role": "system", "content": "Be brief."},
                                                          {"role": "user", "content": PROMPT}])
    assert completion.choices[0].message.content
    assert completion.model_extra is not None
    assert completion.model_extra["samtuner"]["adapter_version"] == 1


@pytest.mark.parametrize(("body", "message"), [
    ({"n": 2}, "n must be 1"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "last message must be the user's"),
])
def test_requests_the_node_cannot_honour_get_a_clear_error(http: TestClient, body: dict, message: str) -> None:
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **body})
    assert r.status_code == 400 and message in r.text


def test_activate_and_deactivate_publish_commands(http: TestClient, sent: list[Command]) -> None:
    r = http.post("/v1/users/alice/activate", json={"version": 2, "new_share": 0.3})
    assert r.status_code == 202
    r = http.post("/v1/users/team%2Fbob/deactivate")
    assert r.status_code == 202
    assert isinstance(sent[0], ActivateAdapter) and (sent[0].version, sent[0].new_share) == (2, 0.3)
    assert isinstance(sent[1], DeactivateAdapter) and sent[1].user_id == "team/bob"
    assert r.json()["command_id"] == str(sent[1].command_id)
    assert http.post("/v1/users/alice/activate", json={"new_share": 3}).status_code == 422


def test_adapters_state_health_and_metrics(kit: NodeKit, http: TestClient) -> None:
    kit.publish("alice", 1)
    chat(http, "alice")
    chat(http, "alice")
    assert [(a["user"], a["version"], a["active"]) for a in http.get("/v1/adapters").json()["data"]] == [
        ("alice", 1, True)]
    state = http.get("/v1/users/alice/state").json()
    assert state["known"] and state["active_version"] == 1 and state["state"]["latest"]["version"] == 1
    assert http.get("/healthz").json()["registry_users"] == 1
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for line in ("samtuner_adapter_cache_hits_total 1.0", "samtuner_adapter_cache_misses_total 1.0",
                 'samtuner_adapter_loads_total{outcome="ok"} 1.0', 'samtuner_answers_total{arm="new"} 2.0',
                 "samtuner_adapter_load_seconds_count 1.0", 'samtuner_generation_seconds_count{source="adapter"} 2.0'):
        assert line in text, line


def test_a_node_without_a_publisher_refuses_commands(kit: NodeKit) -> None:
    http = TestClient(create_api(kit.node))
    assert http.post("/v1/users/alice/deactivate").status_code == 503
