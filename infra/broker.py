"""A single-node Apache Kafka 4.x broker in KRaft mode on 127.0.0.1, started from Maven Central jars.

``fetch_jars`` resolves the broker's classpath with Maven (``infra/kafka/pom.xml``) into a cache
outside the repo; ``Broker`` formats its storage once (KRaft needs a cluster id and a formatted log
dir), then starts and stops the JVM as a detached process whose pid is kept in its directory.

With ``sasl`` the client listener is SASL_PLAINTEXT with SCRAM-SHA-512 (credentials stored salted
and hashed in the cluster metadata), ACLs are enforced (``StandardAuthorizer``; nothing is allowed
without an ACL) and the admin user is the only super user. The admin's SCRAM credential is written
at format time (``--add-scram``); other users and their ACLs are added through the admin client
(``infra/acls.py``, ``samtuner kafka users|acls``). The controller listener (127.0.0.1) takes SASL
PLAIN with the admin's login only.
"""

from __future__ import annotations

import base64
import contextlib
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

KAFKA_VERSION = "4.4.0"
_POM = Path(__file__).parent / "kafka" / "pom.xml"
_LOG4J = Path(__file__).parent / "kafka" / "log4j2.yaml"


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

    @property
    def listener(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl else "PLAINTEXT"

    def admin_settings(self) -> dict[str, str]:
        """confluent-kafka settings of the admin user (empty for a PLAINTEXT broker)."""
        if self.sasl is None:
            return {}
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": self.sasl.mechanism,
                "sasl.username": self.sasl.admin_user, "sasl.password": self.sasl.admin_password}

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

    def _properties(self) -> str:
        cport = self.controller_port or self.port + 1
        name = self.listener
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{cport}",
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
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Room for hostile payloads (10 MB strings) on the topics that allow them.
                f"message.max.bytes={17 * 1024 * 1024}",
                f"replica.fetch.max.bytes={17 * 1024 * 1024}",
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
                raise BrokerError(f"the broker's storage in {self.data_dir} was formatted without SASL, so it has no "
                                  "admin credential: start it without kafka.security, or remove the directory")
            return
        scram = ([] if self.sasl is None else
                 ["--add-scram", f"{self.sasl.mechanism}=[name={self.sasl.admin_user},"
                                 f"password={self.sasl.admin_password}]"])
        cmd = [
            "java",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _kafka_cluster_id(),
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
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is already taken by another process")
        libs = fetch_jars(self.cache_dir)
        self.format(libs)
        if shutil.which("java") is None:
            raise BrokerError("java is not on PATH: Kafka 4 needs Java 17")
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
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
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
            settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": CLIENT_LOGGER,
                                        **self.admin_settings()}
            AdminClient(settings).list_topics(timeout=2)
            return True
        except Exception:
            return False

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker; returns False when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
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
        return True

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def broker_for(bootstrap: str, state_dir: Path, sasl: BrokerSasl | None = None) -> Broker:
    """The broker that ``samtuner kafka up`` manages for a config's bootstrap address."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise BrokerError(f"samtuner only starts a local broker; {bootstrap} is not on 127.0.0.1")
    return Broker(home=state_dir / "kafka", port=int(port), host="127.0.0.1", sasl=sasl)
