"""Run roles: all of them (``samtuner run``), or one alone (``samtuner streams|trainer|inference``).

With other roles, the decider runs as a supervised child process (``samtuner/supervisor.py``): its
watchdog or a crash ends only it. Everything that needs the embedded chDB store (projector, console,
analytics API, the node's stats) stays in this process, the store's only owner. Alone
(``samtuner streams --role decider``), the decider is this process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infra.artifacts import ArtifactStore
from infra.auth import Authenticator
from infra.kafka import KafkaEventPublisher
from infra.metrics import CountingPublisher, MetricsServer, RoleMetrics
from infra.topics import ensure_topics
from samtuner.errors import RoleFailed, StreamsCrashed
from samtuner.supervisor import DECIDER_POLICY, THREAD_POLICY, DeciderProcess, Supervisor, ThreadRole
from schemas.config import Config
from schemas.topics import Topics

if TYPE_CHECKING:  # the store's client is imported only by the roles that open it, not by a decider
    from infra.clickhouse import ClickHouseStore

__all__ = ["ALL_ROLES", "RoleFailed", "StreamsCrashed", "run_roles", "store_stats"]

log = logging.getLogger("samtuner.run")


ALL_ROLES = frozenset({"decider", "projector", "trainer", "inference", "registrar"})


def store_stats(store: ClickHouseStore) -> Callable[[], dict[str, Any]]:
    db = store.database

    def stats() -> dict[str, Any]:
        one = lambda sql: int(store.query(sql)[0][0])  # noqa: E731
        return {
            "pairs_accepted": one(f"SELECT count() FROM {db}.preference_pairs FINAL"),
            "pairs_rejected": one(f"SELECT count() FROM {db}.rejected_feedback FINAL"),
            "labelled_examples": one(f"SELECT count() FROM {db}.labelled_examples FINAL"),
            "dead_letters": one(f"SELECT count() FROM {db}.dead_letters FINAL"),
            "training_requests": one(f"SELECT count() FROM {db}.training_requests FINAL"),
            "jobs_succeeded": one(f"SELECT count() FROM {db}.training_jobs FINAL WHERE status = 'succeeded'"),
            "jobs_failed": one(f"SELECT count() FROM {db}.training_jobs FINAL WHERE status = 'failed'"),
            "adapters": one(f"SELECT count() FROM {db}.adapters FINAL"),
            "answers_logged": one(f"SELECT count() FROM {db}.inference_log FINAL"),
            "answer_feedback": one(f"SELECT count() FROM {db}.answer_feedback FINAL"),
        }

    return stats


def _metrics_ports(cfg: Config, roles: frozenset[str]) -> dict[str, int]:
    """The roles of this process that serve /metrics, and on which port."""
    m = cfg.metrics
    ports = {"decider": m.decider_port, "projector": m.projector_port, "trainer": m.trainer_port}
    return {role: port for role, port in ports.items() if role in roles and port is not None}


def run_roles(cfg: Config, roles: frozenset[str] = ALL_ROLES, loglevel: str = "warn") -> None:
    unknown = roles - ALL_ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; valid: {sorted(ALL_ROLES)}")
    decider_child = "decider" in roles and roles != {"decider"}
    # Everything that can refuse to start does so before anything starts: servers open to anyone, Kafka.
    auth, ports = _check_binds(cfg, roles)
    if decider_child:
        ports.pop("decider", None)  # the decider process serves its own
    ensure_topics(cfg.kafka)
    metrics = {role: RoleMetrics(role) for role in ("decider", "projector", "trainer")}
    started = _Started(
        threading.Event(), [MetricsServer(metrics[role], cfg.metrics.host, port, auth) for role, port in ports.items()]
    )
    stop, threads, supervisor = started.stop, started.threads, started.supervisor
    try:
        for metric_server in started.metric_servers:
            metric_server.start()
        if "projector" in roles:
            from infra.clickhouse import open_store

            started.store = open_store(cfg)
            _add_projector(cfg, started.store, supervisor, metrics["projector"])
        if "trainer" in roles:
            _add_trainer(cfg, supervisor, metrics["trainer"])
        if decider_child:
            supervisor.add(DeciderProcess(cfg, loglevel), DECIDER_POLICY)
        started.server = _start_http_server(cfg, roles, started)
        if "registrar" in roles:
            from inference.service import start_registrar

            start_registrar(cfg, stop, threads)
        supervisor.start()
        for thread in threads:
            thread.start()
        if roles == {"decider"}:
            _run_faust(cfg, loglevel, metrics["decider"])
        else:
            _on_signal_stop(stop)
            supervisor.run()
    finally:
        started.shut_down()


def _check_binds(cfg: Config, roles: frozenset[str]) -> tuple[Authenticator, dict[str, int]]:
    """Refuse servers open to anyone; return the authenticator and the metrics ports this process serves."""
    auth = Authenticator.from_settings(cfg.auth)
    if "inference" in roles:
        auth.check_bind(cfg.inference.host, "the inference node's address (inference.host)")
    ports = _metrics_ports(cfg, roles)
    if ports:
        auth.check_bind(cfg.metrics.host, "the metrics servers' address (metrics.host)")
    return auth, ports


class _Started:
    """What ``run_roles`` has started, so that shutting down stops each of them, in order."""

    def __init__(self, stop: threading.Event, metric_servers: list[MetricsServer]) -> None:
        self.stop = stop
        self.threads: list[threading.Thread] = []
        self.supervisor = Supervisor(stop)
        self.store: ClickHouseStore | None = None
        self.server: Any = None
        self.metric_servers = metric_servers

    def shut_down(self) -> None:
        self.stop.set()
        for metric_server in self.metric_servers:
            metric_server.stop()
        if self.server is not None:
            self.server.stop()
        self.supervisor.shutdown(timeout_s=30)
        for thread in self.threads:
            thread.join(timeout=30)
        if self.store is not None:
            self.store.close()


def _add_projector(cfg: Config, store: ClickHouseStore, supervisor: Supervisor, metrics: RoleMetrics) -> None:
    applied = store.migrate()
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    supervisor.add(ThreadRole("projector", _projector_role(cfg, store, metrics), supervisor.stop), THREAD_POLICY)


def _add_trainer(cfg: Config, supervisor: Supervisor, metrics: RoleMetrics) -> None:
    from trainer.consumer import run_trainer
    from trainer.library_config import validate_training_config

    validate_training_config(cfg)  # a bad training config stops the start, not every job

    def trainer(stop: threading.Event) -> None:
        run_trainer(cfg, stop, metrics=metrics)

    supervisor.add(ThreadRole("trainer", trainer, supervisor.stop), THREAD_POLICY)


def _start_http_server(cfg: Config, roles: frozenset[str], started: _Started) -> Any:
    """The inference node (with the console when enabled), else the console alone beside the projector."""
    if "inference" in roles:
        return _start_inference(cfg, started.stop, started.threads, started.store, started.supervisor)
    if started.store is not None and cfg.console.enabled:
        return _start_console(cfg, started.stop, started.threads, started.store)
    return None


def _start_inference(
    cfg: Config,
    stop: threading.Event,
    threads: list[threading.Thread],
    store: ClickHouseStore | None,
    supervisor: Supervisor,
) -> Any:
    from inference.service import start_node

    def with_console(app: Any, node: Any, send: Callable[[Any], None]) -> None:
        from console.app import mount_console
        from console.wiring import announce, build_console

        deps = build_console(cfg, stop, threads, store, send, node)
        mount_console(app, deps)
        announce(cfg.inference.host, cfg.inference.port, deps)

    if store is None:
        return start_node(cfg, stop, threads, extend=with_console if cfg.console.enabled else None)
    from_store = store_stats(store)

    def stats() -> dict[str, Any]:
        restarts = {f"restarts_{role}": n for role, n in supervisor.restarts().items()}
        return {**from_store(), **restarts}

    if cfg.console.enabled:  # the console brings the store's routers (the analytics API) along
        return start_node(cfg, stop, threads, stats=stats, extend=with_console)
    from console.analytics_api import analytics_router
    from infra.auth import Authenticator

    # The store's owner serves the analytics API, so `samtuner sql` works while this process holds chDB.
    read = Authenticator.from_settings(cfg.auth).require("read", "all")
    return start_node(cfg, stop, threads, stats=stats, routers=[analytics_router(store, dependencies=[read])])


def _start_console(cfg: Config, stop: threading.Event, threads: list[threading.Thread], store: ClickHouseStore) -> Any:
    """``samtuner streams`` with the projector: the console on its own port, sending commands itself."""
    from console.wiring import build_console, start_console_server
    from infra.kafka import publish_command

    publisher = KafkaEventPublisher(cfg.kafka, client_id="samtuner-console")
    control = Topics(cfg.kafka.topic_prefix).control

    def send(command: Any) -> None:
        publish_command(publisher, control, command)
        publisher.flush(timeout_s=10.0)

    server = start_console_server(cfg, build_console(cfg, stop, threads, store, send), threads)
    return _ServerHandle(server)


class _ServerHandle:
    def __init__(self, server: Any) -> None:
        self.server = server

    def stop(self) -> None:
        self.server.should_exit = True


def _projector_role(cfg: Config, store: ClickHouseStore, metrics: RoleMetrics) -> Callable[[threading.Event], None]:
    from streams.projector.consumer import ProjectorConsumer
    from streams.projector.projection import ClickHouseSink, Projector

    def run(stop: threading.Event) -> None:  # a restart builds it afresh (the store stays open)
        publisher = CountingPublisher(KafkaEventPublisher(cfg.kafka, client_id="samtuner-projector"), metrics)
        projector = Projector(
            ClickHouseSink(store), ArtifactStore(cfg.artifact_root), publisher, Topics(cfg.kafka.topic_prefix)
        )
        ProjectorConsumer(cfg, projector, metrics=metrics).run(stop)

    return run


def _run_faust(cfg: Config, loglevel: str, metrics: RoleMetrics) -> None:
    from faust.worker import Worker

    from streams.decider.app import StreamsStats, create_app

    stats = StreamsStats()
    app = create_app(cfg, stats, metrics)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.spinner = None  # it writes terminal escapes to stdout even when stdout is no terminal (a log file)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    if stats.crashed:
        raise StreamsCrashed(stats.crashed)


def _on_signal_stop(stop: threading.Event) -> None:
    def on_signal(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
