"""Who may call a node: bearer keys with scopes, keys restricted to some users, failures counted,
nothing about a user told to a caller without a key, and no server open to anyone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from inference.api import create_api
from infra.auth import Authenticator, load_keys
from infra.errors import AuthError
from samtuner.cli import app
from schemas.commands import Command
from schemas.config import AuthSettings
from schemas.keys import ApiKey, hash_token
from tests.nodes import PROMPT, NodeKit

TOKENS = {
    "chat": "st-chat-token-0123456789",
    "reader": "st-read-token-0123456789",
    "ops": "st-admin-token-0123456789",
    "alice-app": "st-alice-token-0123456789",
    "tenant": "st-tenant-token-0123456789",
}
KEYS = (
    ApiKey(id="chat", sha256=hash_token(TOKENS["chat"]), scopes=("infer",)),
    ApiKey(id="reader", sha256=hash_token(TOKENS["reader"]), scopes=("read",)),
    ApiKey(id="ops", sha256=hash_token(TOKENS["ops"]), scopes=("admin",)),
    ApiKey(id="alice-app", sha256=hash_token(TOKENS["alice-app"]), scopes=("infer", "read"), users=("alice",)),
    ApiKey(id="tenant", sha256=hash_token(TOKENS["tenant"]), scopes=("infer",), user_prefix="t1:"),
)


@pytest.fixture
def kit(tmp_path: Path, tiny_model: Path) -> Iterator[NodeKit]:
    kit = NodeKit(tmp_path, tiny_model)
    kit.publish("alice", 1)
    yield kit
    kit.close()


@pytest.fixture
def sent() -> list[Command]:
    return []


@pytest.fixture
def http(kit: NodeKit, sent: list[Command]) -> TestClient:
    return TestClient(create_api(kit.node, send_command=sent.append, ready=lambda: True, auth=Authenticator(KEYS)))


def as_key(name: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"} if name else {}


def chat(http: TestClient, key: str | None, user: str | None) -> int:
    r = http.post(
        "/v1/chat/completions",
        headers=as_key(key),
        json={"user": user, "max_tokens": 2, "messages": [{"role": "user", "content": PROMPT}]},
    )
    return r.status_code


def test_without_a_key_nothing_but_liveness_answers_and_nothing_about_a_user_is_told(http: TestClient) -> None:
    assert http.get("/healthz").status_code == 200
    known = http.get("/v1/users/alice/state")  # alice has an adapter
    unknown = http.get("/v1/users/nobody/state")
    assert known.status_code == unknown.status_code == 401
    assert known.json() == unknown.json() and "alice" not in known.text
    assert known.headers["www-authenticate"] == "Bearer"
    wrong = http.get("/v1/users/alice/state", headers={"Authorization": "Bearer st-guessed"})
    assert wrong.status_code == 401 and "alice" not in wrong.text
    for path in ("/v1/adapters", "/v1/stats", "/metrics", "/v1/models"):
        assert http.get(path).status_code == 401, path
    assert chat(http, None, "alice") == 401
    assert http.post("/v1/users/alice/deactivate").status_code == 401


def test_scopes_infer_read_and_admin(http: TestClient, sent: list[Command]) -> None:
    assert chat(http, "chat", "alice") == 200
    assert http.get("/v1/users/alice/state", headers=as_key("chat")).status_code == 403
    assert http.post("/v1/users/alice/deactivate", headers=as_key("chat")).status_code == 403
    assert http.get("/v1/users/alice/state", headers=as_key("reader")).json()["user"] == "alice"
    assert http.get("/v1/adapters", headers=as_key("reader")).status_code == 200
    assert chat(http, "reader", "alice") == 403
    assert http.post("/v1/users/alice/deactivate", headers=as_key("reader")).status_code == 403
    assert sent == []
    # admin implies the other scopes
    assert http.post("/v1/users/alice/deactivate", headers=as_key("ops")).status_code == 202
    assert chat(http, "ops", "alice") == 200 and http.get("/metrics", headers=as_key("ops")).status_code == 200
    assert [type(c).__name__ for c in sent] == ["DeactivateAdapter"]


def test_a_key_for_some_users_acts_for_them_only(http: TestClient) -> None:
    assert chat(http, "alice-app", "alice") == 200
    assert chat(http, "alice-app", "bob") == 403
    assert chat(http, "alice-app", None) == 403  # not even anonymously
    assert http.get("/v1/users/alice/state", headers=as_key("alice-app")).status_code == 200
    assert http.get("/v1/users/bob/state", headers=as_key("alice-app")).status_code == 403
    assert http.get("/v1/adapters", headers=as_key("alice-app")).status_code == 403  # lists every user
    assert chat(http, "tenant", "t1:carol") == 200
    assert chat(http, "tenant", "t2:carol") == 403


def test_refusals_are_counted_by_reason(http: TestClient) -> None:
    chat(http, None, "alice")
    chat(http, "alice-app", "bob")
    http.get("/v1/adapters", headers={"Authorization": "Bearer nope"})
    http.get("/v1/adapters", headers=as_key("chat"))
    text = http.get("/metrics", headers=as_key("reader")).text
    for reason, count in (("missing_key", 1), ("invalid_key", 1), ("scope", 1), ("user", 1)):
        assert f'samtuner_auth_failures_total{{reason="{reason}"}} {count}.0' in text, text


def test_the_openai_client_sends_its_api_key_as_a_bearer_token(http: TestClient) -> None:
    import openai

    client = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKENS["chat"], http_client=http)
    reply = client.chat.completions.create(
        model="sam-tuner", user="alice", max_tokens=3, messages=[{"role": "user", "content": PROMPT}]
    )
    assert reply.model_extra and reply.model_extra["samtuner"]["adapter_version"] == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url="http://testserver/v1", api_key="st-wrong", http_client=http).chat.completions.create(
            model="sam-tuner", user="alice", messages=[{"role": "user", "content": PROMPT}]
        )


def test_without_keys_a_server_binds_loopback_only_and_says_why() -> None:
    open_ = Authenticator()
    for host in ("127.0.0.1", "::1", "localhost"):
        open_.check_bind(host, "inference.host")
    with pytest.raises(AuthError, match="no API keys are configured") as info:
        open_.check_bind("0.0.0.0", "inference.host")
    assert "anyone who reaches that address could act for any user" in str(info.value)
    Authenticator(KEYS).check_bind("0.0.0.0", "inference.host")  # with keys: fine


def test_keys_are_created_hashed_and_listed_without_tokens(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    runner = CliRunner()
    result = runner.invoke(
        app, ["keys", "create", "--id", "sam-prod", "--scope", "infer", "--user-prefix", "t1:", "--file", str(file)]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("st-") and token not in file.read_text()
    assert file.stat().st_mode & 0o077 == 0
    (key,) = load_keys(AuthSettings(keys_file=str(file)))
    assert key.sha256 == hash_token(token) and key.user_prefix == "t1:"
    again = runner.invoke(app, ["keys", "create", "--id", "sam-prod", "--scope", "read", "--file", str(file)])
    assert again.exit_code == 2 and "already has a key" in again.output
    cfg = tmp_path / "samtuner.yaml"
    cfg.write_text(yaml.safe_dump({"auth": {"keys_file": str(file)}}))
    listed = runner.invoke(app, ["keys", "list", "-c", str(cfg)])
    assert "sam-prod: infer; acts for t1:*" in listed.output and token not in listed.output


def test_a_bad_key_file_names_the_file_and_the_entry(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    file.write_text(yaml.safe_dump({"keys": [{"id": "x", "sha256": "abc", "scopes": ["infer"]}]}))
    with pytest.raises(AuthError, match=r"keys\.yaml: 'keys\.0\.sha256'"):
        load_keys(AuthSettings(keys_file=str(file)))
    with pytest.raises(AuthError, match="cannot read it"):
        load_keys(AuthSettings(keys_file=str(tmp_path / "missing.yaml")))


def test_the_console_seam_over_keys_reads_with_read_and_acts_with_admin() -> None:
    from fastapi import HTTPException

    from infra.auth import KeyAuthorizer

    class Req:  # what the seam looks at: the headers
        def __init__(self, key: str | None) -> None:
            self.headers = {k.lower(): v for k, v in as_key(key).items()}  # Starlette: case-insensitive

    seam = KeyAuthorizer(Authenticator(KEYS))
    assert seam.configured
    seam.require_reader(Req("reader"))  # type: ignore[arg-type]
    seam.require_admin(Req("ops"))  # type: ignore[arg-type]
    for key, check, status in (
        (None, seam.require_reader, 401),
        ("chat", seam.require_reader, 403),
        ("reader", seam.require_admin, 403),
        ("alice-app", seam.require_reader, 403),
    ):
        with pytest.raises(HTTPException) as info:
            check(Req(key))  # type: ignore[arg-type]
        assert info.value.status_code == status, (key, status)
