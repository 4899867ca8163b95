"""A single-node Apache Kafka 4.x broker in KRaft mode on 127.0.0.1, started from Maven Central jars.

``fetch_jars`` resolves the broker's classpath with Maven (``infra/kafka/pom.xml``) into a cache
outside the repo; ``Broker`` formats its storage once (KRaft needs a cluster id and a formatted log
dir), then starts and stops the JVM as a detached process whose pid is kept in its directory.
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
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class Broker:
    """One broker+controller node. ``home`` holds its config, data, pid and log."""

    home: Path
    port: int = 9092
    controller_port: int | None = None
    host: str = "127.0.0.1"
    heap: str = "1g"
    cache_dir: Path | None = None

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

    def _properties(self) -> str:
        cport = self.controller_port or self.port + 1
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{self.host}:{cport}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{cport}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
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
        props.write_text(self._properties())
        if (self.data_dir / "meta.properties").exists():
            return
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
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")

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

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
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


def broker_for(bootstrap: str, state_dir: Path) -> Broker:
    """The broker that ``samtuner kafka up`` manages for a config's bootstrap address."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise BrokerError(f"samtuner only starts a local broker; {bootstrap} is not on 127.0.0.1")
    return Broker(home=state_dir / "kafka", port=int(port), host="127.0.0.1")
