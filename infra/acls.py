"""Kafka ACLs per role: which principal needs which topic, group and operation (README: 'ACLs').

The table is derived from the declared topics (``schemas/topics.py``) and from what each role's code
reads and writes; ``apply_grants`` writes it to a broker that enforces ACLs (the project's own SASL
broker: ``infra/broker.py``). With it, only the trainer and the registrar can write the adapter
registry, only operators and inference nodes can send commands, and SAM can only send feedback.

Every role may DESCRIBE the project's topics (metadata only: names and partitions), so that it can
check at start that they exist; only the operator creates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from infra.errors import KafkaCallError
from infra.kafka import READER_GROUP, Connection, client_config
from schemas.config import Config
from schemas.topics import Topics

Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal[
    "READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER", "ALTER_CONFIGS", "DELETE", "ALL"
]

ROLES = ("sam", "decider", "projector", "trainer", "inference", "registrar", "operator")


@dataclass(frozen=True)
class Grant:
    resource: Resource
    name: str
    pattern: Pattern
    operations: tuple[Operation, ...]
    why: str


def _topic(name: str, ops: tuple[Operation, ...], why: str) -> Grant:
    return Grant("topic", name, "literal", ops, why)


def _group(name: str, why: str, pattern: Pattern = "literal") -> Grant:
    return Grant("group", name, pattern, ("READ",), why)


def grants_for(role: str, cfg: Config) -> list[Grant]:
    """What ``role`` needs with this config's topic prefix, app id and group ids."""
    t = Topics(cfg.kafka.topic_prefix)
    app = cfg.streams.app_id
    describe = Grant(
        "topic",
        f"{cfg.kafka.topic_prefix}sam.",
        "prefixed",
        ("DESCRIBE",),
        "see that the project's topics exist (metadata only)",
    )
    # librdkafka looks up a consumer's group coordinator even when it only assign()s partitions and
    # never commits: the log readers' groups need READ too (nothing is ever committed in them).
    reader = _group(READER_GROUP, "reading a topic's range straight from the log (never commits)")
    r: tuple[Operation, ...] = ("READ",)
    w: tuple[Operation, ...] = ("WRITE",)
    table: dict[str, list[Grant]] = {
        "sam": [_topic(t.feedback, w, "FeedbackReceived (the SDK)")],
        "decider": [
            describe,
            _topic(t.feedback, r, "feedback to decide"),
            _topic(t.control, r, "RequestTraining, DeactivatePair, ReweightPair, EraseUser"),
            _topic(t.pairs, ("READ", "WRITE"), "decisions out; the tail is read back after a restart (output marks)"),
            _topic(t.dlq, w, "dead letters"),
            Grant(
                "topic",
                f"{app}-",
                "prefixed",
                ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ", "WRITE"),
                "Faust's own topics: the journal's changelog, the assignor's leader topic",
            ),
            _group(app, "the deciders' consumer group (Faust)"),
            reader,
            _group("samtuner-output-marks", "reads the pairs topic's tail (never commits)"),
        ],
        "projector": [
            describe,
            *(_topic(name, r, "projected to ClickHouse") for name in (t.feedback, t.adapters, t.inference)),
            _topic(t.pairs, ("READ", "WRITE"), "projected; UserErased (the erasure report) out"),
            _topic(t.training, ("READ", "WRITE"), "projected; TrainingRequested out"),
            _topic(t.adapters, w, "AdapterRevoked (erasure)"),
            _topic(t.dlq, ("READ", "WRITE"), "projected; the projector's own dead letters"),
            _group(f"{app}-projector", "the projector's consumer group"),
            reader,
            # The console runs where the store is owned (samtuner streams, samtuner run), as this principal.
            _topic(t.control, w, "the console's commands (bulk pair actions, training, erasure)"),
            _group("samtuner-console-", "the console's live tail of the training topic (never commits)", "prefixed"),
        ],
        "trainer": [
            describe,
            _topic(t.training, ("READ", "WRITE"), "the job ledger: requests in, job events out"),
            _topic(t.control, r, "CancelTraining and EraseUser (every worker reads every command)"),
            _topic(t.adapters, w, "AdapterPublished"),
            _topic(t.dlq, w, "undecodable ledger messages"),
            _group(cfg.trainer.group_id, "trainer workers share the training topic"),
            reader,
            _group("samtuner-trainer-control", "every worker reads every command (never commits)"),
        ],
        "inference": [
            describe,
            _topic(t.adapters, r, "the adapter registry, from the beginning"),
            _topic(t.inference, w, "AnswerServed, AdapterLoadFailed"),
            _topic(t.control, w, "ActivateAdapter / DeactivateAdapter from the node's admin API"),
            _group("samtuner-inference-", "one consumer group per node (samtuner-inference-<node id>)", "prefixed"),
            reader,
        ],
        "registrar": [
            describe,
            _topic(t.control, r, "ActivateAdapter / DeactivateAdapter"),
            _topic(t.adapters, ("READ", "WRITE"), "folds the registry; AdapterActivated / Deactivated out"),
            _topic(t.dlq, w, "commands it cannot honour"),
            _group(cfg.inference.registrar_group_id, "the registrar's consumer group"),
            _group(f"{cfg.inference.registrar_group_id}-fold", "its registry reader"),
            reader,
        ],
        "operator": [
            Grant(
                "topic",
                f"{cfg.kafka.topic_prefix}sam.",
                "prefixed",
                ("ALL",),
                "create the topics; commands; replay, record, export, jobs",
            ),
            _group("samtuner-cli", "the CLI's readers"),
            reader,
        ],
    }
    if role not in table:
        raise KafkaCallError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return table[role]


def merged(roles: Iterable[str], cfg: Config) -> list[Grant]:
    """The grants of several roles run as one principal (``samtuner run``, ``samtuner streams``)."""
    out: list[Grant] = []
    for role in roles:
        out.extend(g for g in grants_for(role, cfg) if g not in out)
    return out


def acl_table(cfg: Config) -> list[tuple[str, str, str, str, str]]:
    """(role, resource, name, operations, why) rows, for the README and ``samtuner kafka acls show``."""
    rows: list[tuple[str, str, str, str, str]] = []
    for role in ROLES:
        for g in grants_for(role, cfg):
            name = g.name + ("*" if g.pattern == "prefixed" else "")
            rows.append((role, g.resource, name, ", ".join(g.operations), g.why))
    return rows


def apply_grants(admin_connection: Connection, principal: str, grants: Sequence[Grant], timeout_s: float = 30.0) -> int:
    """Create the ACLs of ``grants`` for ``principal`` (e.g. 'User:decider'); existing ones stay."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
    patterns = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
    wanted = dict.fromkeys((g.resource, g.name, g.pattern, op) for g in grants for op in g.operations)
    bindings = [
        AclBinding(
            kinds[resource], name, patterns[pattern], principal, "*", getattr(AclOperation, op), AclPermissionType.ALLOW
        )
        for resource, name, pattern, op in wanted
    ]
    admin = AdminClient(client_config(admin_connection))
    for binding, future in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            raise KafkaCallError(f"cannot create the ACL {binding}: {exc}") from exc
    return len(bindings)


def upsert_user(
    admin_connection: Connection, user: str, password: str, mechanism: str = "SCRAM-SHA-512", timeout_s: float = 30.0
) -> None:
    """Create or change a SCRAM user (the broker keeps only a salted hash of the password)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    kind = {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}.get(mechanism)
    if kind is None:
        raise KafkaCallError(f"users can be created for SCRAM-SHA-256 or SCRAM-SHA-512 only, not {mechanism}")
    admin = AdminClient(client_config(admin_connection))
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(kind, 8192), password.encode("utf-8"))
    for name, future in admin.alter_user_scram_credentials([upsert], request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            raise KafkaCallError(f"cannot create the Kafka user {name}: {exc}") from exc
