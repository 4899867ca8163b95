"""Wiring an inference node (and the registrar) into a process: Kafka publisher, follower thread, HTTP server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inference.base import configure_torch, load_served_base
from inference.follow import RegistrarWorker, RegistryFollower
from inference.node import InferenceNode
from infra.kafka import KafkaEventPublisher, publish_command
from schemas.commands import Command
from schemas.config import Config
from schemas.topics import Topics

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger("samtuner.inference")


@dataclass
class RunningNode:
    node: InferenceNode
    follower: RegistryFollower
    server: Any  # uvicorn.Server
    publisher: KafkaEventPublisher

    def stop(self) -> None:
        self.server.should_exit = True
        self.node.close()


def start_node(
    cfg: Config,
    stop: threading.Event,
    threads: list[threading.Thread],
    stats: Callable[[], dict[str, Any]] | None = None,
    routers: Sequence[APIRouter] = (),
    extend: Callable[[Any, InferenceNode, Callable[[Command], None]], None] | None = None,
) -> RunningNode:
    """Build the node, its registry follower and its HTTP server; the threads are appended, not started.

    ``routers`` (FastAPI ``APIRouter``s, e.g. the analytics API of the store's owner) join the node's app;
    ``extend(app, node, send_command)`` adds routes that need the node (the console).
    """
    import uvicorn

    from inference.api import create_api
    from infra.auth import Authenticator

    auth = Authenticator.from_settings(cfg.auth)
    auth.check_bind(cfg.inference.host, "the inference node's address (inference.host)")
    publisher = KafkaEventPublisher(cfg.kafka, client_id=f"samtuner-node-{cfg.inference.node_id}")
    configure_torch(cfg)  # process-wide settings, before the model is loaded
    node = InferenceNode(cfg, publisher, load_served_base(cfg))
    follower = RegistryFollower(cfg, node)
    control = Topics(cfg.kafka.topic_prefix).control

    def send_command(command: Command) -> None:
        publish_command(publisher, control, command)
        publisher.flush(timeout_s=10.0)

    api = create_api(node, send_command=send_command, stats=stats, ready=follower.ready.is_set, auth=auth)
    for router in routers:
        api.include_router(router)
    if extend is not None:
        extend(api, node, send_command)
    server = uvicorn.Server(
        uvicorn.Config(api, host=cfg.inference.host, port=cfg.inference.port, log_level="warning", access_log=False)
    )
    threads.append(threading.Thread(target=follower.run, args=(stop,), name="registry", daemon=True))
    threads.append(threading.Thread(target=server.run, name="http", daemon=True))
    log.info(
        "inference node %s: HTTP on http://%s:%d (%s; %s serving, cache %d adapters / %d bytes, policy %s)",
        node.node_id,
        cfg.inference.host,
        cfg.inference.port,
        f"{len(auth.keys)} API keys" if auth.enabled else "no API keys: loopback only",
        cfg.inference.lora_serving,
        cfg.inference.cache.max_adapters,
        cfg.inference.cache.max_bytes,
        cfg.inference.cache.policy,
    )
    return RunningNode(node, follower, server, publisher)


def start_registrar(cfg: Config, stop: threading.Event, threads: list[threading.Thread]) -> RegistrarWorker:
    worker = RegistrarWorker(cfg)
    threads.append(threading.Thread(target=worker.run, args=(stop,), name="registrar", daemon=True))
    return worker
