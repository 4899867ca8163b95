"""The roles: what each reads, writes and keeps. One declared table that the README's flow table, the
Kafka ACLs (``infra/acls.py``) and the layering test are checked against (``tests/unit/test_roles.py``).

``samtuner run`` runs every role; each also runs alone (``command``).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import ADAPTERS, CONTROL, DLQ, FEEDBACK, INFERENCE, PAIRS, TRAINING, TopicSpec


@dataclass(frozen=True)
class RoleSpec:
    name: str
    package: str  # where its code lives (a dotted package)
    command: str  # how it runs alone
    does: str
    reads: tuple[TopicSpec, ...]
    writes: tuple[TopicSpec, ...]
    stores: tuple[str, ...] = ()  # what it keeps or opens besides the topics


ROLES: tuple[RoleSpec, ...] = (
    RoleSpec(
        "decider",
        "streams.decider",
        "samtuner streams --role decider",
        "validates, scores and de-duplicates feedback; carries out data commands; counts to the threshold",
        reads=(FEEDBACK, CONTROL, PAIRS),  # the pairs topic's tail: what is already out, after a restart
        writes=(PAIRS, DLQ),
        stores=("its state: a Faust table keyed by user (changelog topic)",),
    ),
    RoleSpec(
        "projector",
        "streams.projector",
        "samtuner streams --role projector",
        "projects the topics into ClickHouse; snapshots a user's dataset and requests training",
        reads=(FEEDBACK, PAIRS, TRAINING, ADAPTERS, INFERENCE, DLQ),
        writes=(PAIRS, TRAINING, ADAPTERS, DLQ, CONTROL),  # erasure reports, requests, revocations; the console
        stores=("ClickHouse (owner)", "artifact store: dataset snapshots"),
    ),
    RoleSpec(
        "trainer",
        "trainer",
        "samtuner trainer",
        "runs the job ledger: DPO on a snapshot, the gate, the adapter published",
        reads=(TRAINING, CONTROL),
        writes=(TRAINING, ADAPTERS, DLQ),
        stores=("artifact store: adapters, checkpoints", "the base model"),
    ),
    RoleSpec(
        "inference",
        "inference",
        "samtuner inference",
        "serves the base model with each user's adapter, hot-loaded from the registry",
        reads=(ADAPTERS,),
        writes=(INFERENCE, CONTROL),  # answers served; activation commands from its admin API
        stores=("artifact store: adapters (read)", "the base model"),
    ),
    RoleSpec(
        "registrar",
        "inference",
        "samtuner registrar",
        "turns adapter activation commands into registry events",
        reads=(CONTROL, ADAPTERS),
        writes=(ADAPTERS, DLQ),
    ),
)

BY_NAME = {role.name: role for role in ROLES}


def roles_markdown(prefix: str = "") -> str:
    """The roles as a Markdown table (the README's, and ``samtuner roles``)."""

    def names(specs: tuple[TopicSpec, ...]) -> str:
        return ", ".join(f"`{spec.name(prefix)}`" for spec in specs)

    lines = ["| role | code | runs alone as | reads | writes | keeps |", "| --- | --- | --- | --- | --- | --- |"]
    for r in ROLES:
        keeps = "; ".join(r.stores) or "nothing"
        code = r.package.replace(".", "/")
        lines.append(f"| {r.name} | `{code}/` | `{r.command}` | {names(r.reads)} | {names(r.writes)} | {keeps} |")
    return "\n".join(lines)
