"""The ACL table per role: derived from the declared topics, complete, and the one the README shows."""

from __future__ import annotations

from pathlib import Path

from infra.acls import ROLES, acl_table, grants_for, merged
from schemas.config import Config
from schemas.topics import ALL

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_declared_topic_has_a_writer_and_a_reader() -> None:
    cfg = Config()
    for spec in ALL:
        name = spec.name(cfg.kafka.topic_prefix)
        ops = {
            op
            for role in ROLES
            if role != "operator"
            for g in grants_for(role, cfg)
            if g.resource == "topic" and g.pattern == "literal" and g.name == name
            for op in g.operations
        }
        assert {"READ", "WRITE"} <= ops, f"{name}: {ops}"


def test_only_the_trainer_and_the_registrar_write_the_registry_and_sam_writes_feedback_only() -> None:
    cfg = Config()
    adapters = next(s for s in ALL if s.base_name == "sam.adapters.v1").name()
    writers = {role for role in ROLES for g in grants_for(role, cfg) if g.name == adapters and "WRITE" in g.operations}
    assert writers == {"trainer", "registrar", "projector"}  # the projector: AdapterRevoked on erasure
    assert [(g.name, g.operations) for g in grants_for("sam", cfg)] == [("sam.feedback.v1", ("WRITE",))]


def test_roles_run_as_one_principal_get_each_grant_once() -> None:
    cfg = Config()
    both = merged(["decider", "projector"], cfg)
    assert len(both) == len(set(both)) and set(grants_for("decider", cfg)) <= set(both)


def test_the_readme_shows_the_table() -> None:
    text = README.read_text()
    for role, resource, name, operations, why in acl_table(Config()):
        assert f"| {role} | {resource} | `{name}` | {operations} | {why} |" in text, (role, name)
