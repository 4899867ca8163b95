"""Apache Kafka 4.x in KRaft mode on 127.0.0.1, started from Maven Central jars: one node, or a
:class:`Cluster` of several (``samtuner kafka up --brokers 3``).

``fetch_jars`` resolves the broker's classpath with Maven (``infra/kafka/pom.xml``) into a cache
outside the repo; ``Broker`` formats its storage once (KRaft needs a cluster id and a formatted log
dir), then starts and stops the JVM as a detached process whose pid is kept in its directory.

With ``sasl`` the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 (credentials stored salted
and hashed in the cluster metadata), ACLs are enforced (``StandardAuthorizer``; nothing is allowed
without an ACL) and the admin user is the only super user. The admin's SCRAM credential is written
at format time (``--add-scram``); other users and their ACLs are added through the admin client
(``infra/acls.py``, ``samtuner kafka users|acls``). The controller listener (127.0.0.1) takes SASL
PLAIN with the admin's login only.

A ``Cluster`` is N combined broker+controller nodes that share a cluster id and one static quorum of
N voters; every topic gets replication factor ``min(N, 3)``, ``min.insync.replicas`` 2 and no unclean
leader election (``Broker._replication_properties``). Its nodes start together (a voter answers only
once a majority is up) and stop together (the last one alone would wait for a quorum that has gone).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.errors import BrokerError
from schemas.config import default_cache_dir
from schemas.topics import CLIENT_MAX_BYTES

KAFKA_VERSION = "4.4.0"
_POM = Path(__file__).parent / "kafka" / "pom.xml"
_LOG4J = Path(__file__).parent / "kafka" / "log4j2.yaml"
_CLUSTER_DIR = "kafka-cluster"


def jars_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "kafka" / KAFKA_VERSION / "libs"


def fetch_jars(cache_dir: Path | None = None, quiet: bool = True) -> Path:
    """Resolve the broker's jars from Maven Central (once; later calls reuse the cache)."""
    libs = jars_dir(cache_dir)
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is not on PATH: it is needed to fetch the Kafka jars")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(_POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"fetching Kafka jars failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    if not any(tmp.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"Maven finished but {tmp} holds no kafka_2.13 jar")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.write_text(KAFKA_VERSION)
    return libs


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kafka_cluster_id() -> str:
    # Kafka's Uuid text form: url-safe base64 of 16 bytes, no padding. One that starts with "-" would be
    # read as an option by kafka-storage's argument parser (1 start in 64 failed that way): draw again.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class BrokerSasl:
    """SASL on the client listener: the admin (super user) the broker itself authenticates as."""

    admin_user: str
    admin_password: str = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"


@dataclass
class Broker:
    """One broker+controller node. ``home`` holds its config, data, pid and log."""

    home: Path
    port: int = 9092
    controller_port: int | None = None
    host: str = "127.0.0.1"
    heap: str = "1g"
    cache_dir: Path | None = None
    sasl: BrokerSasl | None = None
    # A member of a :class:`Cluster`: its node id, the quorum's voters (``1@127.0.0.1:9093,...``), the
    # cluster id every member is formatted with, and the replication defaults. Alone: node 1, RF 1.
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def listener(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl else "PLAINTEXT"

    def admin_settings(self) -> dict[str, str]:
        """confluent-kafka settings of the admin user (empty for a PLAINTEXT broker)."""
        if self.sasl is None:
            return {}
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": self.sasl.mechanism,
            "sasl.username": self.sasl.admin_user,
            "sasl.password": self.sasl.admin_password,
        }

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def _sasl_properties(self) -> list[str]:
        if self.sasl is None:
            return []
        mech = self.sasl.mechanism
        return [
            f"sasl.enabled.mechanisms={mech}",
            f"sasl.mechanism.inter.broker.protocol={mech}",
            # The broker's own login (inter-broker); this file is readable by its owner only.
            f"listener.name.sasl_plaintext.{mech.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.sasl.admin_user}" password="{self.sasl.admin_password}";',
            # The controller listener authenticates too (PLAIN: SCRAM credentials live in the metadata the
            # controller serves, so they cannot guard it); only the broker itself logs in there.
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "listener.name.controller.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{self.sasl.admin_user}" password="{self.sasl.admin_password}" '
            f'user_{self.sasl.admin_user}="{self.sasl.admin_password}";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{self.sasl.admin_user}",
            "allow.everyone.if.no.acl.found=false",
        ]

    @property
    def controller_address(self) -> str:
        return f"{self.host}:{self.controller_port or self.port + 1}"

    def _replication_properties(self) -> list[str]:
        """Replication defaults: RF ``replication`` for every topic the broker creates (offsets and
        transaction state included); with more than one replica an acks=all write needs two in sync,
        and a replica that fell behind never becomes leader (it would drop acknowledged writes)."""
        rf = self.replication
        min_isr = 1 if rf == 1 else 2
        return [
            f"default.replication.factor={rf}",
            f"min.insync.replicas={min_isr}",
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
        ]

    def _properties(self) -> str:
        cport = self.controller_address.rpartition(":")[2]
        name = self.listener
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={self.voters or f'{self.node_id}@{self.controller_address}'}",
                f"listeners={name}://{self.host}:{self.port},CONTROLLER://{self.host}:{cport}",
                f"advertised.listeners={name}://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                f"listener.security.protocol.map={name}:{name},CONTROLLER:{name}",
                f"inter.broker.listener.name={name}",
                *self._sasl_properties(),
                f"log.dirs={self.data_dir}",
                # Topics are created explicitly from one declared list, never by accident.
                "auto.create.topics.enable=false",
                "num.partitions=1",
                *self._replication_properties(),
                "offsets.topic.num.partitions=8",
                "transaction.state.log.num.partitions=4",
                "group.initial.rebalance.delay.ms=0",
                # Room for hostile payloads (10 MB strings) on the topics that allow them.
                f"message.max.bytes={CLIENT_MAX_BYTES}",
                f"replica.fetch.max.bytes={CLIENT_MAX_BYTES}",
                "log.retention.hours=-1",
                "log.cleaner.min.compaction.lag.ms=0",
                "",
            ]
        )

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.host, self.port)

    def format(self, libs: Path) -> None:
        """Write the config and format the log dir once (KRaft needs a cluster id)."""
        self.home.mkdir(parents=True, exist_ok=True)
        props = self.home / "server.properties"
        props.touch(mode=0o600)
        props.chmod(0o600)
        props.write_text(self._properties())
        marker = self.home / "sasl-formatted"
        if (self.data_dir / "meta.properties").exists():
            if self.sasl is not None and not marker.exists():
                raise BrokerError(
                    f"the broker's storage in {self.data_dir} was formatted without SASL, so it has no "
                    "admin credential: start it without kafka.security, or remove the directory"
                )
            return
        scram = (
            []
            if self.sasl is None
            else [
                "--add-scram",
                f"{self.sasl.mechanism}=[name={self.sasl.admin_user},password={self.sasl.admin_password}]",
            ]
        )
        cmd = [
            "java",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id or _kafka_cluster_id(),
            "-c",
            str(props),
            *scram,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            text = f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            if self.sasl is not None:
                text = text.replace(self.sasl.admin_password, "***")
            raise BrokerError(f"formatting KRaft storage failed: {text}")
        if self.sasl is not None:
            marker.write_text(self.sasl.mechanism)

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker (no-op when it is already running) and wait until it answers."""
        if self.running():
            return
        self.format(fetch_jars(self.cache_dir))
        self.launch()
        self.wait_answering(timeout_s)

    def launch(self) -> None:
        """Start the JVM (its storage formatted already) and return at once."""
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is already taken by another process")
        if shutil.which("java") is None:
            raise BrokerError("java is not on PATH: Kafka 4 needs Java 17")
        libs = fetch_jars(self.cache_dir)
        log = self.log_file.open("ab")
        cmd = [
            "java",
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pid_file.write_text(str(self._proc.pid))

    def wait_answering(self, timeout_s: float = 90.0) -> None:
        """Until the launched broker answers a metadata request; stops it and raises when it does not."""
        proc = self._proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(f"the broker exited with {proc.returncode}; see {self.log_file}:\n{self._log_tail()}")
            if port_open(self.host, self.port) and self._answers():
                return
            time.sleep(0.25)
        self.stop()
        raise BrokerError(f"the broker did not answer within {timeout_s:.0f}s; see {self.log_file}")

    def _answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        from infra.kafka import CLIENT_LOGGER

        try:
            settings: dict[str, Any] = {
                "bootstrap.servers": self.bootstrap,
                "logger": CLIENT_LOGGER,
                **self.admin_settings(),
            }
            AdminClient(settings).list_topics(timeout=2)
            return True
        except Exception:
            return False

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker; returns False when it was not running."""
        pid = self.terminate()
        if pid is None:
            return False
        self.wait_stopped(pid, timeout_s)
        return True

    def terminate(self) -> int | None:
        """Ask the broker to shut down (SIGTERM: a controlled shutdown) and return its pid, or None."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        return pid

    def wait_stopped(self, pid: int, timeout_s: float = 30.0) -> None:
        """Until the process ``pid`` has exited; SIGKILL once ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> bool:
        """SIGKILL the broker (a crash: no controlled shutdown, nothing flushed); False when not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            _reap(pid)  # a child of ours stays a zombie (and "alive" to kill -0) until reaped
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Cluster:
    """``size`` combined broker+controller nodes on 127.0.0.1: one quorum of ``size`` voters, one
    cluster id, replication factor ``min(size, 3)`` (min ISR 2) for every topic, unclean leader
    election off. Node ``i`` (from 1) lives in ``home/node-i`` and listens on ``ports[i-1]`` (clients)
    and ``controller_ports[i-1]``."""

    home: Path
    ports: list[int]
    controller_ports: list[int]
    heap: str = "320m"  # small: several JVMs share a small machine
    cache_dir: Path | None = None
    sasl: BrokerSasl | None = None
    brokers: list[Broker] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.ports) != len(self.controller_ports) or not self.ports:
            raise BrokerError(f"a cluster needs one controller port per broker: {self.ports} / {self.controller_ports}")
        taken = self.ports + self.controller_ports
        if len(set(taken)) != len(taken):
            raise BrokerError(f"the cluster's ports must differ: {taken}")
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, c in enumerate(self.controller_ports, 1))
        id_file = self.home / "cluster.id"
        if id_file.exists():
            cluster_id = id_file.read_text().strip()
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            cluster_id = _kafka_cluster_id()
            id_file.write_text(cluster_id)
        self.brokers = [
            Broker(
                home=self.home / f"node-{i}",
                port=p,
                controller_port=c,
                heap=self.heap,
                cache_dir=self.cache_dir,
                sasl=self.sasl,
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                replication=min(len(self.ports), 3),
            )
            for i, (p, c) in enumerate(zip(self.ports, self.controller_ports, strict=True), 1)
        ]

    @classmethod
    def on_free_ports(cls, home: Path, size: int = 3, **kwargs: Any) -> Cluster:
        ports = _distinct_free_ports(2 * size)
        return cls(home=home, ports=ports[:size], controller_ports=ports[size:], **kwargs)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def node(self, node_id: int) -> Broker:
        return self.brokers[node_id - 1]

    def start(self, timeout_s: float = 180.0) -> None:
        """Start every node that is not running and wait until the quorum has them all.

        The nodes start together: a voter waits for a majority of the others before it answers."""
        libs = fetch_jars(self.cache_dir)
        for broker in self.brokers:
            broker.format(libs)
        waiting = [b for b in self.brokers if not b.running()]
        for broker in waiting:
            broker.launch()
        for broker in waiting:
            broker.wait_answering(timeout_s)
        self.wait_registered(len(self.brokers), timeout_s)

    def wait_registered(self, count: int, timeout_s: float = 120.0) -> None:
        """Until the metadata names ``count`` live brokers (a restarted one has rejoined)."""
        from confluent_kafka.admin import AdminClient

        from infra.kafka import CLIENT_LOGGER

        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "logger": CLIENT_LOGGER,
            **self.brokers[0].admin_settings(),
        }
        admin = AdminClient(settings)
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = len(admin.list_topics(timeout=2).brokers)
                if seen >= count:
                    return
            time.sleep(0.25)
        raise BrokerError(
            f"{seen} of {count} brokers registered within {timeout_s:.0f}s; see {self.home}/node-*/broker.log"
        )

    def stop(self, timeout_s: float = 30.0) -> int:
        """Stop every node; returns how many were running.

        All are asked at once: stopped one after the other, the last one would wait for a quorum
        that has already gone."""
        pids = [(broker, broker.terminate()) for broker in self.brokers]
        for broker, pid in pids:
            if pid is not None:
                broker.wait_stopped(pid, timeout_s)
        return sum(pid is not None for _, pid in pids)

    def running(self) -> list[int]:
        return [b.node_id for b in self.brokers if b.running()]


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _local_host_port(address: str, bootstrap: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise BrokerError(f"samtuner only starts a local broker; {bootstrap} is not on 127.0.0.1")
    return host, int(port)


def broker_for(bootstrap: str, state_dir: Path, sasl: BrokerSasl | None = None) -> Broker:
    """The broker that ``samtuner kafka up`` manages for a config's bootstrap address."""
    _, port = _local_host_port(bootstrap.split(",")[0], bootstrap)
    return Broker(home=state_dir / "kafka", port=port, host="127.0.0.1", sasl=sasl)


def cluster_for(bootstrap: str, state_dir: Path, size: int, sasl: BrokerSasl | None = None) -> Cluster:
    """The ``size``-node cluster that ``samtuner kafka up --brokers N`` manages for a config.

    The bootstrap names every node's client port, or only the first one: then node ``i`` listens on
    ``port + 2(i-1)``. Each node's controller listens on its client port + 1."""
    addresses = [a for a in bootstrap.split(",") if a.strip()]
    ports = [_local_host_port(a, bootstrap)[1] for a in addresses]
    if len(ports) == 1:
        ports = [ports[0] + 2 * i for i in range(size)]
    if len(ports) != size:
        raise BrokerError(
            f"kafka.bootstrap_servers names {len(ports)} brokers, not {size}: name them all, "
            "or only the first (the others take the ports after it)"
        )
    return Cluster(home=state_dir / _CLUSTER_DIR, ports=ports, controller_ports=[p + 1 for p in ports], sasl=sasl)


def local_cluster(state_dir: Path) -> Cluster | None:
    """The cluster ``kafka up --brokers N`` formatted under ``state_dir`` (its ports read back from
    the nodes' configs), or None when there is none."""
    home = state_dir / _CLUSTER_DIR
    ports: list[int] = []
    controller_ports: list[int] = []
    for i in itertools.count(1):
        props = home / f"node-{i}" / "server.properties"
        if not props.exists():
            break
        listeners = next(line for line in props.read_text().splitlines() if line.startswith("listeners="))
        client, controller = (int(a.rpartition(":")[2]) for a in listeners.partition("=")[2].split(","))
        ports.append(client)
        controller_ports.append(controller)
    return Cluster(home=home, ports=ports, controller_ports=controller_ports) if ports else None
