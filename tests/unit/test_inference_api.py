"""The node's HTTP API: OpenAI-compatible answers that say who answered, commands, adapters and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.api import create_api
from schemas.commands import ActivateAdapter, Command, DeactivateAdapter
from schemas.events import AnswerServed
from tests.nodes import PROMPT, NodeKit
from tests.waiting import wait_for


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
    r = http.post(
        "/v1/chat/completions",
        json={"model": "sam-tuner", "user": user, "messages": [{"role": "user", "content": PROMPT}], **extra},
    )
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
    completion = client.chat.completions.create(
        model="sam-tuner",
        user="alice",
        max_tokens=6,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
    )
    assert completion.choices[0].message.content
    assert completion.model_extra is not None
    assert completion.model_extra["samtuner"]["adapter_version"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"n": 2}, "n must be 1"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "last message must be the user's"),
    ],
)
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
        ("alice", 1, True)
    ]
    state = http.get("/v1/users/alice/state").json()
    assert state["known"] and state["active_version"] == 1 and state["state"]["latest"]["version"] == 1
    assert http.get("/healthz").json()["registry_users"] == 1
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for line in (
        "samtuner_adapter_cache_hits_total 1.0",
        "samtuner_adapter_cache_misses_total 1.0",
        'samtuner_adapter_loads_total{outcome="ok"} 1.0',
        'samtuner_answers_total{arm="new"} 2.0',
        "samtuner_adapter_load_seconds_count 1.0",
        'samtuner_generation_seconds_count{source="adapter"} 2.0',
    ):
        assert line in text, line


def test_a_node_without_a_publisher_refuses_commands(kit: NodeKit) -> None:
    http = TestClient(create_api(kit.node))
    assert http.post("/v1/users/alice/deactivate").status_code == 503


# -- streaming ------------------------------------------------------------------------------------


def openai_client(http: TestClient) -> Any:
    import openai

    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def test_the_openai_client_streams_an_answer_that_says_who_answered_first_and_last(
    kit: NodeKit, http: TestClient
) -> None:
    kit.publish("alice", 1)
    messages = [{"role": "user", "content": PROMPT}]
    whole = openai_client(http).chat.completions.create(
        model="sam-tuner", user="alice", max_tokens=8, messages=messages
    )
    chunks = list(
        openai_client(http).chat.completions.create(
            model="sam-tuner", user="alice", max_tokens=8, messages=messages, stream=True
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    head = first.model_extra["samtuner"]
    assert (head["user"], head["source"], head["adapter_version"], head["arm"]) == ("alice", "adapter", 1, "new")
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage is not None and last.usage.completion_tokens == whole.usage.completion_tokens
    tail = last.model_extra["samtuner"]
    assert tail["answer_id"] == head["answer_id"] and tail["latency_ms"] > 0 and tail["ttft_ms"] > 0
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content and len(chunks) >= 4  # pieces, not one block
    served = kit.events(AnswerServed)
    assert [str(e.answer_id) for e in served].count(head["answer_id"]) == 1 and len(served) == 2


def test_a_stream_that_fails_mid_answer_ends_with_an_openai_error(tiny_model: Path, tmp_path: Path) -> None:
    import openai

    from tests.nodes import load_tiny

    model = load_tiny(tiny_model)
    calls = iter(range(100))

    def fail_the_second_pass(module: Any, args: Any) -> None:
        if next(calls) == 1:  # the prefill passes; the first decode step fails
            raise RuntimeError("simulated kernel failure")

    model.register_forward_pre_hook(fail_the_second_pass)
    kit = NodeKit(tmp_path, tiny_model, model=model)
    try:
        stream = openai_client(TestClient(create_api(kit.node))).chat.completions.create(
            model="sam-tuner",
            max_tokens=8,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_body={"min_tokens": 8},
        )
        with pytest.raises(openai.APIError, match="simulated kernel failure"):
            list(stream)
        assert kit.events(AnswerServed) == []
    finally:
        kit.close()


# -- limits ---------------------------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    kit = NodeKit(tmp_path, tiny_model, limits={"max_tokens": 16, "max_prompt_tokens": 40, "max_body_bytes": 2048})
    yield kit
    kit.close()


@pytest.mark.parametrize(
    ("body", "code", "param", "limit"),
    [
        ({"max_tokens": 17}, "max_tokens_exceeded", "max_tokens", "inference.limits.max_tokens"),
        ({"max_completion_tokens": 100}, "max_tokens_exceeded", "max_tokens", "inference.limits.max_tokens"),
        (
            {"messages": [{"role": "user", "content": "one two three four " * 12}]},
            "context_length_exceeded",
            "messages",
            "inference.limits.max_prompt_tokens",
        ),
    ],
)
def test_each_limit_is_refused_with_an_openai_error_naming_it(
    limited: NodeKit, body: dict, code: str, param: str, limit: str
) -> None:
    import openai

    http = TestClient(create_api(limited.node))
    request = {"model": "sam-tuner", "messages": [{"role": "user", "content": PROMPT}], **body}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(http).chat.completions.create(**request)
    assert (refused.value.code, refused.value.param) == (code, param)
    assert refused.value.status_code == 400 and limit in refused.value.message
    assert refused.value.body["limit"] == limit  # type: ignore[index]
    assert limited.events(AnswerServed) == []


def test_a_body_over_the_limit_is_refused_before_it_is_read(limited: NodeKit) -> None:
    http = TestClient(create_api(limited.node))
    big = {"messages": [{"role": "user", "content": "x" * 4000}]}
    r = http.post("/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["limit"] == "inference.limits.max_body_bytes" and "2048" in r.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 400
        yield b'"}]}'

    r = http.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 200


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path, tiny_model: Path) -> None:
    import openai

    from tests.nodes import Gate, load_tiny

    model = load_tiny(tiny_model)
    kit = NodeKit(tmp_path, tiny_model, model=model, max_batch_size=1, limits={"max_queue": 0})
    gate = Gate(model)
    try:
        held = kit.node.submit(PROMPT, "alice")
        gate.wait_for_forward()
        http = TestClient(create_api(kit.node))
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["limit"] == "inference.limits.max_queue"
        with pytest.raises(openai.RateLimitError):
            openai_client(http).chat.completions.create(model="sam-tuner", messages=[{"role": "user", "content": "hi"}])
        gate.open()
        assert held.result(timeout=60).text
    finally:
        gate.remove()
        kit.close()


def test_a_request_whose_time_runs_out_in_the_queue_gets_503_naming_the_limit(tmp_path: Path, tiny_model: Path) -> None:
    import threading
    import time

    from tests.nodes import Gate, load_tiny

    model = load_tiny(tiny_model)
    kit = NodeKit(tmp_path, tiny_model, model=model, max_batch_size=1, limits={"request_timeout_s": 0.3})
    gate = Gate(model)
    try:
        kit.node.submit(PROMPT, "alice")
        gate.wait_for_forward()
        http = TestClient(create_api(kit.node))
        replies: list[Any] = []
        asking = threading.Thread(
            target=lambda: replies.append(
                http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PROMPT}]})
            )
        )
        asking.start()
        # The deadline counts from the request's arrival: wait until it is queued, then past its limit.
        wait_for(lambda: kit.node.scheduler.stats().queued >= 1, 30, "the request to reach the queue", every_s=0.01)
        assert kit.node.scheduler.stats().queued == 1
        time.sleep(0.6)
        gate.open()
        asking.join(timeout=60)
        (r,) = replies
        assert r.status_code == 503 and r.json()["error"]["code"] == "request_timeout"
        assert r.json()["error"]["limit"] == "inference.limits.request_timeout_s"
    finally:
        gate.remove()
        kit.close()


def test_invalid_chat_requests_get_openai_style_errors(http: TestClient) -> None:
    r = http.post("/v1/chat/completions", json={"messages": [], "max_tokens": 5})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "min_tokens": 50})
    assert r.status_code == 400 and r.json()["error"]["param"] == "min_tokens"
