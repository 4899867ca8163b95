"""Run roles: all in one process (``samtuner run``; the embedded chDB can be open in one process
only), or one alone (``samtuner streams|trainer|inference``)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from infra.artifacts import ArtifactStore
from infra.clickhouse import ClickHouseStore
from infra.kafka import KafkaEventPublisher
from infra.topics import ensure_topics
from schemas.config import Config
from schemas.topics import Topics

log = logging.getLogger("samtuner.run")


class StreamsCrashed(RuntimeError):
    """The stream worker stopped itself after a crash (see the log); exit non-zero to be restarted."""


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


def run_roles(cfg: Config, roles: frozenset[str] = ALL_ROLES, loglevel: str = "warn") -> None:
    unknown = roles - ALL_ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; valid: {sorted(ALL_ROLES)}")
    ensure_topics(cfg.kafka)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    store: ClickHouseStore | None = None
    server: Any = None
    try:
        if "projector" in roles:
            store = ClickHouseStore(cfg.clickhouse_dsn, cfg.clickhouse.database)
            applied = store.migrate()
            if applied:
                log.info("migrations applied: %s", ", ".join(applied))
        if "projector" in roles:
            assert store is not None
            threads.append(_projector_thread(cfg, store, stop))
        if "trainer" in roles:
            from trainer.library_config import validate_training_config
            from trainer.worker import run_trainer

            validate_training_config(cfg)  # a bad training config stops the start, not every job

            threads.append(threading.Thread(target=run_trainer, args=(cfg, stop), name="trainer", daemon=True))
        if "inference" in roles:
            server = _start_inference(cfg, stop, threads, store)
        elif store is not None and cfg.console.enabled:
            server = _start_console(cfg, stop, threads, store)
        if "registrar" in roles:
            from inference.service import start_registrar

            start_registrar(cfg, stop, threads)
        for thread in threads:
            thread.start()
        if "decider" in roles:
            _run_faust(cfg, loglevel)
        else:
            _wait_for_signal(stop)
    finally:
        stop.set()
        if server is not None:
            server.stop()
        for thread in threads:
            thread.join(timeout=30)
        if store is not None:
            store.close()


def _start_inference(cfg: Config, stop: threading.Event, threads: list[threading.Thread],
                     store: ClickHouseStore | None) -> Any:
    from inference.service import start_node

    def with_console(app: Any, node: Any, send: Callable[[Any], None]) -> None:
        from console.app import mount_console
        from console.wiring import announce, build_console

        deps = build_console(cfg, stop, threads, store, send, node)
        mount_console(app, deps)
        announce(cfg.inference.host, cfg.inference.port, deps)

    if store is None:
        return start_node(cfg, stop, threads, extend=with_console if cfg.console.enabled else None)
    if cfg.console.enabled:  # the console brings the store's routers (the analytics API) along
        return start_node(cfg, stop, threads, stats=store_stats(store), extend=with_console)
    from console.analytics_api import analytics_router

    # The store's owner serves the analytics API, so `samtuner sql` works while this process holds chDB.
    return start_node(cfg, stop, threads, stats=store_stats(store), routers=[analytics_router(store)])


def _start_console(cfg: Config, stop: threading.Event, threads: list[threading.Thread],
                   store: ClickHouseStore) -> Any:
    """``samtuner streams`` with the projector: the console on its own port, sending commands itself."""
    from console.wiring import build_console, start_console_server
    from infra.kafka import publish_command

    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers, client_id="samtuner-console")
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


def _projector_thread(cfg: Config, store: ClickHouseStore, stop: threading.Event) -> threading.Thread:
    from streams.projector import ClickHouseSink, Projector
    from streams.projector_consumer import ProjectorConsumer

    publisher = KafkaEventPublisher(cfg.kafka.bootstrap_servers, client_id="samtuner-projector")
    projector = Projector(ClickHouseSink(store), ArtifactStore(cfg.artifact_root), publisher,
                          Topics(cfg.kafka.topic_prefix))
    return threading.Thread(target=ProjectorConsumer(cfg, projector).run, args=(stop,), name="projector",
                            daemon=True)


def _run_faust(cfg: Config, loglevel: str) -> None:
    from faust.worker import Worker

    from streams.app import StreamsStats, create_app

    stats = StreamsStats()
    app = create_app(cfg, stats)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    if stats.crashed:
        raise StreamsCrashed(stats.crashed)


def _wait_for_signal(stop: threading.Event) -> None:
    def on_signal(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.is_set():
        stop.wait(0.5)
