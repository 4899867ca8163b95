"""The roles table (schemas/roles.py) is the one statement of the flow: the README's table is its
rendering, every role's Kafka ACLs grant exactly the topics it reads and writes, each role's command
exists, and each role's package is one of the rooms the layering test knows."""

from __future__ import annotations

from pathlib import Path

from infra.acls import grants_for
from samtuner.cli import app
from schemas.config import Config
from schemas.roles import ROLES, roles_markdown
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
