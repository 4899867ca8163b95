"""Kafka security on the project's own broker, started with a SASL_PLAINTEXT (SCRAM-SHA-512)
listener and ACLs: every role runs as its own principal with the grants of ``infra/acls.py``;
the loop works end to end, and none of its secrets (Kafka passwords, a ClickHouse password in a
DSN, an API key) reaches a log line, a file, an event, `config show` or an error; SAM cannot send
commands or adapters; and with a wrong password every role and command fails within seconds, in
one line that names the cause."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer

from infra.acls import apply_grants, merged, upsert_user
from infra.broker import Broker, BrokerSasl, free_port
from infra.kafka import PRODUCER_DEFAULTS, client_config, read_topic
from infra.topics import ensure_topics
from samtuner import FeedbackPublisher
from schemas.codec import encode_command
from schemas.commands import EraseUser
from schemas.config import Config
from schemas.keys import hash_token, new_token
from schemas.topics import Topics
from tests.conftest import make_config_at
from tests.integration.harness import ROOT, RunningProcess, wait_for

pytestmark = pytest.mark.integration

# The principals of this test and the roles each one runs (grants merged).
PRINCIPALS = {
    "streams": ("decider", "projector"),
    "trainer": ("trainer",),
    "inference": ("inference", "registrar"),
    "sam": ("sam",),
}


class SecureCluster:
    """A SASL broker, its admin, one SCRAM user per principal, and a config per principal."""

    def __init__(self, broker: Broker, admin_password: str, tmp: Path, tiny_model: Path) -> None:
        self.broker = broker
        self.tmp = tmp
        self.passwords = {name: secrets.token_urlsafe(16) for name in (*PRINCIPALS, "operator")}
        self.passwords["operator"] = admin_password
        base, _ = make_config_at(tmp, broker.bootstrap, tiny_model, trigger={"min_new_pairs": 4})
        self.base = base.model_dump(mode="json")

    def config(
        self, principal: str, password: str | None = None, env: str | None = None, **sections: dict[str, Any]
    ) -> tuple[Config, Path]:
        """The shared config, as ``principal`` (the operator is the broker's admin); the password in a
        file, or in the environment variable ``env`` (which the caller sets)."""
        secret = self.tmp / f"{principal}.password"
        secret.write_text(password if password is not None else self.passwords[principal])
        secret.chmod(0o600)
        user = "admin" if principal == "operator" else principal
        where = {"password_env": env} if env else {"password_file": str(secret)}
        raw: dict[str, Any] = {
            **self.base,
            "kafka": {
                **self.base["kafka"],
                "security": {
                    "protocol": "SASL_PLAINTEXT",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "username": user,
                    **where,
                },
            },
        }
        for name, values in sections.items():
            raw[name] = {**raw.get(name, {}), **values}
        path = self.tmp / f"{principal}{'-wrong' if password is not None else ''}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return Config.model_validate(raw), path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[SecureCluster]:
    tmp = tmp_path_factory.mktemp("sasl")
    admin_password = secrets.token_urlsafe(16)
    broker = Broker(
        home=tmp / "kafka", port=free_port(), controller_port=free_port(), sasl=BrokerSasl("admin", admin_password)
    )
    broker.start()
    try:
        c = SecureCluster(broker, admin_password, tmp, tiny_model)
        operator, _ = c.config("operator")
        for principal, roles in PRINCIPALS.items():
            upsert_user(operator.kafka, principal, c.passwords[principal])
            apply_grants(operator.kafka, f"User:{principal}", merged(roles, operator))
        ensure_topics(operator.kafka)
        yield c
    finally:
        broker.stop()


def test_the_loop_works_with_each_role_as_its_own_principal_and_no_secret_leaks(
    cluster: SecureCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    ch_secret, token = f"ch-{secrets.token_urlsafe(12)}", new_token()
    monkeypatch.setenv("STREAMS_KAFKA_PASSWORD", cluster.passwords["streams"])  # the others' are in files
    json_logs: dict[str, Any] = {"logging": {"format": "json"}}
    streams_cfg, streams_path = cluster.config("streams", env="STREAMS_KAFKA_PASSWORD", **json_logs)
    # The trainer never opens the store, so a server DSN with a password is harmless to it; spec.json and
    # the manifest would have shown it.
    trainer_cfg, trainer_path = cluster.config(
        "trainer", clickhouse={"dsn": f"http://default:{ch_secret}@127.0.0.1:{free_port()}"}, **json_logs
    )
    keys: dict[str, Any] = {"auth": {"keys": [{"id": "sam", "sha256": hash_token(token), "scopes": ["infer", "read"]}]}}
    inference_cfg, inference_path = cluster.config("inference", **keys, **json_logs)
    sam_cfg, _ = cluster.config("sam")
    procs = [
        RunningProcess(streams_cfg, streams_path, "streams", "streams.log"),
        RunningProcess(trainer_cfg, trainer_path, "trainer", "trainer.log"),
        RunningProcess(inference_cfg, inference_path, "inference", "inference.log"),
    ]
    node = procs[2]
    bearer = {"Authorization": f"Bearer {token}"}

    def ask(user: str) -> dict[str, Any]:
        body: dict[str, Any] = (
            httpx.post(
                f"{node.url}/v1/chat/completions",
                headers=bearer,
                timeout=60,
                json={"messages": [{"role": "user", "content": "What is 3 plus 1?"}], "user": user},
            )
            .raise_for_status()
            .json()
        )
        return body

    try:
        wait_for(lambda: node.alive() and _ready(node.url), 180, "the node")
        with FeedbackPublisher(sam_cfg.kafka, sam_cfg.kafka.topic_prefix) as sam:
            for i in range(4):
                sam.correction(
                    user_id="alice",
                    prompt=f"What is {i} plus 1?",
                    original_response=f"{i + 1}.",
                    corrected_response=f"{i} plus 1 is {i + 1}. Hope this helps!",
                )
        served = wait_for(
            lambda: (a := ask("alice"))["samtuner"]["adapter_version"] == 1 and a,
            300,
            "alice's adapter to be served (feedback -> pairs -> training -> node)",
        )
        assert served["samtuner"]["source"] == "adapter"
        assert httpx.get(f"{node.url}/v1/users/alice/state", timeout=10).status_code == 401  # no key, no state
        for proc in procs:
            assert proc.alive(), proc.log()[-3000:]
    finally:
        codes = [proc.stop() for proc in procs]
    assert codes == [0, 0, 0], "\n".join(p.log()[-2000:] for p in procs)

    # Every output of this run: logs, files, events, `config show`, errors.
    outputs = {p.log_path.name: p.log() for p in procs}
    for line in outputs["streams.log"].splitlines():
        assert json.loads(line)["level"]  # JSON logs, every line
    for path in (cluster.tmp / "state").rglob("*"):
        if path.is_file() and "clickhouse" not in path.parts:
            outputs[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert any(name.endswith("spec.json") for name in outputs) and any("manifest.json" in n for n in outputs)
    operator, _ = cluster.config("operator")
    t = Topics(operator.kafka.topic_prefix)
    for topic in (t.feedback, t.pairs, t.training, t.adapters, t.control, t.inference, t.dlq):
        outputs[topic] = " ".join(repr(m) for m in read_topic(operator.kafka, topic))
    for args in (["config", "show"], ["migrate"], ["kafka", "acls"]):
        done = subprocess.run(
            [sys.executable, "-m", "samtuner.cli", *args, "-c", str(trainer_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        outputs[" ".join(args)] = done.stdout + done.stderr
    assert "ClickHouse" in outputs["migrate"] and "default:***@" in outputs["config show"]
    leaked = [
        (secret_name, where)
        for secret_name, value in [*cluster.passwords.items(), ("clickhouse", ch_secret), ("api key", token)]
        for where, text in outputs.items()
        if value in text
    ]
    assert not leaked, leaked


def _ready(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/healthz", timeout=2).json().get("registry_ready"))
    except httpx.HTTPError:
        return False


def _refused(cfg: Config, topic: str, value: bytes, key: bytes) -> str:
    errors: list[str] = []
    producer = Producer(client_config(cfg.kafka, **PRODUCER_DEFAULTS))
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, _: errors.append(err.str() if err else ""))
    producer.flush(20)
    return errors[0] if errors else "no delivery report"


def test_sam_may_send_feedback_only(cluster: SecureCluster) -> None:
    sam, _ = cluster.config("sam")
    trainer, _ = cluster.config("trainer")
    t = Topics(sam.kafka.topic_prefix)
    key, value, _ = encode_command(EraseUser(user_id="alice"))
    assert "authoriz" in _refused(sam, t.control, value, key).lower()  # no EraseUser from SAM
    assert "authoriz" in _refused(sam, t.adapters, b"{}", b"alice").lower()  # no AdapterPublished from SAM
    assert "authoriz" in _refused(trainer, t.control, value, key).lower()  # nor commands from a trainer
    assert _refused(sam, t.feedback, b"not json", b"alice") == ""  # feedback (even bad) is SAM's to send


# Every role, and the commands that read or write Kafka: (arguments, what it touches).
COMMANDS = [
    ["streams", "--role", "decider"],
    ["streams", "--role", "projector"],
    ["trainer"],
    ["inference"],
    ["registrar"],
    ["topics"],
    ["jobs"],
    ["record", "--out", "{tmp}/r.jsonl", "--topic", "sam.pairs.v1"],
    ["replay", str(ROOT / "tests" / "replays" / "demo.jsonl")],
    ["users", "erase", "alice", "--yes"],
    ["pairs", "export", "--out", "{tmp}/p.jsonl", "--source", "log"],
    ["adapters", "deactivate", "alice"],
    ["train", "--user", "alice"],
    ["cancel", "0000"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_a_wrong_password_fails_in_one_line_naming_the_cause(cluster: SecureCluster, args: list[str]) -> None:
    _, path = cluster.config("streams", password="not-the-password")
    argv = [a.replace("{tmp}", str(cluster.tmp)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "samtuner.cli", *argv, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,  # a command that retries forever fails the test; no timed assertion beyond that
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr
    assert "refused our credentials" in lines[0] and "as streams" in lines[0] and cluster.broker.bootstrap in lines[0]
    assert "%3|" not in proc.stderr + proc.stdout and "rdkafka" not in proc.stderr + proc.stdout
