"""Putting the console into a process: its parts from the config, the live feed's thread, and its
own HTTP server where no node's server runs (``samtuner streams``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from console.auth import Authorizer, TokenAuthorizer
from console.deps import ConsoleDeps
from console.live import LiveFeed, TrainingTail
from console.nodes import LocalNode, NodeView, RemoteNodes
from console.queries import ConsoleQueries, Store
from infra.artifacts import ArtifactStore
from infra.auth import Authenticator, KeyAuthorizer
from schemas.commands import Command
from schemas.config import Config
from schemas.topics import Topics

log = logging.getLogger("samtuner.console")


def build_console(
    cfg: Config,
    stop: threading.Event,
    threads: list[threading.Thread],
    store: Store | None,
    send_command: Callable[[Command], None] | None,
    node: Any | None = None,
) -> ConsoleDeps:
    """The console's parts; the live feed's thread is appended to ``threads`` (not started)."""
    feed: LiveFeed | None = None
    if store is not None:  # the live view belongs with the store's pages
        feed = LiveFeed()
        tail = TrainingTail(cfg.kafka, Topics(cfg.kafka.topic_prefix).training, feed)
        threads.append(threading.Thread(target=tail.run, args=(stop,), name="console-feed", daemon=True))
    nodes: NodeView | None = None
    if node is not None:
        nodes = LocalNode(node, cfg.console.node_urls)
    elif cfg.console.node_urls:
        nodes = RemoteNodes(cfg.console.node_urls)
    return ConsoleDeps(
        cfg=cfg,
        authorizer=console_authorizer(cfg),
        queries=ConsoleQueries(store) if store is not None else None,
        send_command=send_command,
        feed=feed,
        nodes=nodes,
        artifacts=ArtifactStore(cfg.artifact_root),
    )


def console_authorizer(cfg: Config) -> Authorizer:
    """API keys (``read`` for pages, ``admin`` for actions) when any are configured, else the admin token."""
    auth = Authenticator.from_settings(cfg.auth)
    return KeyAuthorizer(auth) if auth.enabled else TokenAuthorizer.from_settings(cfg.console)


def start_console_server(cfg: Config, deps: ConsoleDeps, threads: list[threading.Thread]) -> Any:
    """The console on its own port (``console.host:port``); returns the uvicorn server (thread appended)."""
    import uvicorn

    from console.app import console_app

    Authenticator.from_settings(cfg.auth).check_bind(cfg.console.host, "the console's address (console.host)")
    server = uvicorn.Server(
        uvicorn.Config(
            console_app(deps), host=cfg.console.host, port=cfg.console.port, log_level="warning", access_log=False
        )
    )
    threads.append(threading.Thread(target=server.run, name="console-http", daemon=True))
    announce(cfg.console.host, cfg.console.port, deps)
    return server


def announce(host: str, port: int, deps: ConsoleDeps) -> None:
    access = (
        "admin token set"
        if deps.authorizer.configured
        else (f"read-only: no admin token (set {deps.cfg.console.admin_token_env} or console.admin_token_file)")
    )
    log.info("console: http://%s:%d/console/ (%s)", host, port, access)
