"""The roles table (schemas/roles.py) is the one statement of the flow: the README's table is its
rendering, every role's Kafka ACLs grant exactly the topics it reads and writes, each role's command
exists, and each role's package is one of the rooms the layering test knows."""

from __future__ import annotations

import re
from pathlib import Path

from infra.acls import grants_for
from samtuner.cli import app
from schemas.config import Config
from schemas.roles import BY_NAME, ROLES, roles_markdown
from tests.unit.test_layers import ALLOWED

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_the_readme_table_is_the_rendered_roles_table() -> None:
    text = README.read_text()
    block = text.split("<!-- roles:begin -->\n", 1)[1].split("\n<!-- roles:end -->", 1)[0]
    assert block == roles_markdown(), "README's roles table is stale: paste `samtuner roles` between the markers"


def test_each_roles_acls_grant_exactly_the_topics_it_reads_and_writes() -> None:
    cfg = Config()
    for role in ROLES:
        grants = [g for g in grants_for(role.name, cfg) if g.resource == "topic" and g.pattern == "literal"]
        read = {g.name for g in grants if "READ" in g.operations}
        written = {g.name for g in grants if "WRITE" in g.operations}
        assert read == {t.name() for t in role.reads}, role.name
        assert written == {t.name() for t in role.writes}, role.name


def test_each_role_runs_alone_by_a_command_that_exists() -> None:
    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    for role in ROLES:
        program, command, *_ = role.command.split()
        assert program == "samtuner" and command in commands, role.command


def test_each_roles_package_is_a_room_of_the_layering_check() -> None:
    for role in ROLES:
        room = role.package.split(".")[0]
        assert ALLOWED[room] == {room, "schemas", "infra"}, role.name
        assert (ROOT / role.package.replace(".", "/") / "__init__.py").is_file(), role.package


def flow_diagram() -> dict[str, tuple[set[str], set[str]]]:
    """The README's hand-drawn flow (under 'The loop'): per role, the topics drawn into it (the line
    above its block) and out of it (its arrows)."""
    text = README.read_text().split("## The loop", 1)[1].split("```", 2)[1]
    topic = re.compile(r"sam\.[a-z]+\.v1")
    flows: dict[str, tuple[set[str], set[str]]] = {}
    incoming: set[str] = set()
    role = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            incoming, role = set(topic.findall(line)), ""
        elif started := re.match(r"\s+│ (\w+)[ (]", line):
            if not role:
                role = started.group(1)
                flows[role] = (incoming, set())
        elif role and (arrow := re.search(r"──▶ (sam\.[a-z]+\.v1)", line)):
            flows[role][1].add(arrow.group(1))
    return flows


def test_the_readme_flow_diagram_draws_only_what_the_roles_table_says() -> None:
    flows = flow_diagram()
    assert {"decider", "projector", "trainer", "inference"} <= set(flows), flows
    for name, (read, written) in flows.items():
        role = BY_NAME[name]
        assert read <= {t.name() for t in role.reads}, (name, read)
        assert written <= {t.name() for t in role.writes}, (name, written)
