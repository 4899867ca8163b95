"""With Kafka or ClickHouse out of reach, every command says so in one line, names the address and
how to start the service, exits non-zero, and no raw client line reaches the terminal (no broker is
needed: nothing listens at the addresses used here). A command that hangs instead fails the test
(the subprocess's 60 s timeout); how soon it gives up is `kafka.connect_timeout_s` /
`clickhouse.connect_timeout_s`, not a timed assertion here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.broker import free_port
from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration

KAFKA_COMMANDS = [
    ["run"],
    ["streams"],
    ["streams", "--role", "decider"],
    ["streams", "--role", "projector"],
    ["trainer"],
    ["inference"],
    ["registrar"],
    ["topics"],
    ["jobs"],
    ["curve", "0000"],
    ["cancel", "0000"],
    ["record", "--out", "{tmp}/r.jsonl", "--topic", "sam.pairs.v1"],
    ["replay", str(ROOT / "tests" / "replays" / "demo.jsonl")],
    ["users", "erase", "alice", "--yes"],
    ["pairs", "deactivate", "alice", "00000000-0000-0000-0000-000000000001"],
    ["pairs", "reweight", "alice", "00000000-0000-0000-0000-000000000001", "2"],
    ["pairs", "export", "--out", "{tmp}/p.jsonl", "--source", "log"],
    ["adapters", "activate", "alice"],
    ["adapters", "deactivate", "alice"],
    ["train", "--user", "alice"],
    ["kafka", "acls", "--principal", "User:x"],
]
STORE_COMMANDS = [["migrate"], ["pairs", "export", "--out", "{tmp}/p.jsonl", "--source", "store"]]


def run(tmp_path: Path, args: list[str], **sections: dict[str, object]) -> subprocess.CompletedProcess[str]:
    raw = {
        "state_dir": str(tmp_path / "state"),
        "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        "metrics": {"decider_port": 0, "projector_port": 0, "trainer_port": 0},
        **sections,
    }
    path = tmp_path / "samtuner.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    return subprocess.run(
        [sys.executable, "-m", "samtuner.cli", *argv, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,  # a hang fails the test
    )


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"
    assert "%3|" not in proc.stderr + proc.stdout and "rdkafka" not in proc.stderr + proc.stdout
    return lines[0]


@pytest.mark.parametrize("args", KAFKA_COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_no_broker_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    proc = run(tmp_path, args)
    line = one_line(proc)
    assert proc.returncode != 0, proc.returncode
    assert "cannot reach Kafka at 127.0.0.1:" in line and "samtuner kafka up" in line and "Connection refused" in line


@pytest.mark.parametrize("args", STORE_COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_no_clickhouse_server_one_line_naming_it(tmp_path: Path, args: list[str]) -> None:
    port = free_port()
    proc = run(tmp_path, args, clickhouse={"dsn": f"http://default:hunter2hunter2@127.0.0.1:{port}"})
    line = one_line(proc)
    assert proc.returncode != 0, proc.returncode
    assert f"cannot reach ClickHouse at http://default:***@127.0.0.1:{port}" in line and "start the ClickHouse" in line
    assert "hunter2hunter2" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("args", "section"),
    [
        (["inference"], {"inference": {"host": "0.0.0.0"}}),
        (["streams"], {"metrics": {"host": "0.0.0.0", "decider_port": 0}}),
    ],
    ids=["node", "metrics"],
)
def test_a_server_open_to_anyone_refuses_to_start_and_says_why(
    tmp_path: Path, args: list[str], section: dict[str, dict[str, object]]
) -> None:
    proc = run(tmp_path, args, **section)
    line = one_line(proc)
    assert proc.returncode != 0, proc.returncode
    assert "is 0.0.0.0, but no API keys are configured" in line and "bind 127.0.0.1" in line
