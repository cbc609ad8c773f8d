"""Apache Kafka (KRaft) as local JVM processes: one node, or a small cluster on loopback.

This is the production broker, run without Docker: the jars of `org.apache.kafka:kafka_2.13`
and its runtime dependencies are resolved once by Maven from `apache_kafka_pom.xml` into a
cache folder, each node's storage is formatted with Kafka's own `StorageTool`, and `kafka.Kafka`
runs as a child process in its own session (like the embedded broker), on free localhost ports.
Every node is a combined broker and controller, so a three-node cluster has a three-voter
controller quorum and survives the loss of any one node.

Used by the test suite (the `local` tier), by fault tests that need a durable broker (SIGKILL and
restart on the same data directory, a leader lost in a three-broker cluster) and by
`seedloop stack --kafka apache`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from seedloop.embedded import ManagedProcess, free_port, stop_processes

log = logging.getLogger("seedloop.apache_kafka")

KAFKA_VERSION = "4.4.0"
POM = Path(__file__).with_name("apache_kafka_pom.xml")
# Kafka 4 brokers need Java 17 or newer.
MIN_JAVA = 17

_LOG4J2 = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""


class KafkaToolchainError(RuntimeError):
    """Java or Maven is missing, too old, or an artifact could not be resolved."""


def jar_cache() -> Path:
    """Where the resolved jars live: `SEEDLOOP_KAFKA_JARS`, else the user's cache folder."""
    override = os.environ.get("SEEDLOOP_KAFKA_JARS")
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "seedloop" / f"apache-kafka-{KAFKA_VERSION}"


def java_binary() -> str:
    """The `java` to run: `$JAVA_HOME/bin/java`, else the one on PATH; at least Java 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home, "bin", "java")) if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaToolchainError(
            "Apache Kafka needs Java 17 or newer and none was found "
            "(install it: apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if not match or int(match.group(1)) < MIN_JAVA:
        raise KafkaToolchainError(f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+; {java} reports: {out[:80]!r}")
    return java


def _missing_artifact(maven_output: str) -> str:
    """The artifact Maven could not resolve, named as Maven names it, for a one-line error."""
    for pattern in (
        r"Could not find artifact (\S+)",
        r"Could not transfer artifact (\S+)",
        r"Failed to collect dependencies at (\S+)",
        r"Could not resolve dependencies for project \S+: (.+?)(?: in | was | -> |$)",
    ):
        match = re.search(pattern, maven_output, re.M)
        if match:
            return match.group(1).strip()
    first_error = next((line for line in maven_output.splitlines() if "ERROR" in line or "FATAL" in line), "")
    return f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION} from {POM.name}: {first_error.strip()[:300]}"


def resolve_jars(cache: Path | None = None) -> Path:
    """The folder of Kafka's runtime jars, resolved by Maven the first time only.

    A marker file is written after a complete copy, so an interrupted resolution is redone; a
    lock serialises concurrent first runs (two test processes, say)."""
    cache = cache or jar_cache()
    done = cache / ".complete"
    if done.exists():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return cache
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaToolchainError(
                "Apache Kafka's jars are resolved with Maven and `mvn` was not found "
                "(install it: apt-get install maven)"
            )
        log.info("resolving Apache Kafka %s with Maven into %s", KAFKA_VERSION, cache)
        proc = subprocess.run(
            [
                mvn, "-q", "-B", "-f", str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={cache}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            log.debug("maven output:\n%s", output)
            raise KafkaToolchainError(f"Maven could not resolve {_missing_artifact(output)}")
        if not any(cache.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise KafkaToolchainError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {cache}")
        done.write_text(KAFKA_VERSION)
    return cache


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid form)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    home: Path
    process: ManagedProcess | None = None

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"


class ApacheKafka:
    """A KRaft Apache Kafka of `nodes` combined broker+controller nodes on 127.0.0.1.

    Defaults follow a production cluster of that size: replication factor min(3, nodes),
    `min.insync.replicas` 2 from three nodes on, no automatic topic creation (topics come from
    seedloop's own topic definitions). `broker_config` overrides or adds server properties.
    `data_dir` kept across `stop()`/`start()` (or a node's `kill_node`/`start_node`) is what
    makes the broker durable: a restarted node reads its log back."""

    def __init__(
        self,
        nodes: int = 1,
        data_dir: Path | None = None,
        broker_config: Mapping[str, str] | None = None,
        heap_mb: int = 512,
    ) -> None:
        if nodes < 1:
            raise ValueError("an Apache Kafka cluster needs at least one node")
        self._own_dir = data_dir is None
        self.home = data_dir or Path(tempfile.mkdtemp(prefix="seedloop-kafka-"))
        self.home.mkdir(parents=True, exist_ok=True)
        self.cluster_id = new_cluster_id()
        self.heap_mb = heap_mb
        self.nodes = [
            KafkaNode(i + 1, free_port(), free_port(), self.home / f"node-{i + 1}") for i in range(nodes)
        ]
        rf = min(3, nodes)
        self.config: dict[str, str] = {
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(min(2, rf)),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min(2, rf)),
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "unclean.leader.election.enable": "false",
            **(broker_config or {}),
        }
        self._jars: Path | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    # The embedded stack's interface: the fault tests signal `.broker.proc` of either broker.
    @property
    def broker(self) -> ManagedProcess:
        proc = self.nodes[0].process
        if proc is None:
            raise RuntimeError("Apache Kafka is not started")
        return proc

    def _properties(self, node: KafkaNode) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            **self.config,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str) -> list[str]:
        assert self._jars is not None
        return [
            java_binary(),
            f"-Xms{min(256, self.heap_mb)}m",
            f"-Xmx{self.heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self._jars}/*",
            *args,
        ]

    def _format(self, node: KafkaNode) -> None:
        """Format the node's storage unless it already holds a log (a restart reads it back)."""
        node.home.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(self._properties(node))
        if (node.data_dir / "meta.properties").exists():
            return
        proc = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(node.config_path)),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"formatting Kafka node {node.node_id} failed: {(proc.stdout + proc.stderr)[-400:]}")

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        atexit.register(self.stop)
        try:
            self._jars = resolve_jars()
            (self.home / "log4j2.properties").write_text(_LOG4J2)
            for node in self.nodes:
                self._format(node)
            # In a cluster a broker does not finish starting until a controller majority is up,
            # so the nodes start together and each is awaited in its own thread.
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                for done in [pool.submit(self._launch, node, timeout) for node in self.nodes]:
                    done.result()
            self.wait_for_brokers(len(self.nodes), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, node: KafkaNode, timeout: float) -> None:
        node.process = ManagedProcess(
            f"kafka-node-{node.node_id}(apache {KAFKA_VERSION})",
            self._java("kafka.Kafka", str(node.config_path)),
            node.port,
            log_path=node.home / "server.log",
        )
        node.process.start(timeout=timeout)

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Until the cluster's metadata lists `count` live brokers."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log.connection.close": False})
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = len(admin.list_topics(timeout=5).brokers)
                if seen >= count:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"Apache Kafka: {seen} of {count} brokers registered within {timeout:.0f}s")

    def kill_node(self, index: int) -> None:
        """SIGKILL one node (0-based index): no controlled shutdown, its data stays on disk."""
        proc = self.nodes[index].process
        if proc is not None:
            proc.kill()

    def start_node(self, index: int, timeout: float = 90.0) -> None:
        """Start a stopped or killed node again on the same ports and data directory."""
        self._launch(self.nodes[index], timeout)

    def stop(self) -> None:
        # All nodes at once: stopped one by one, the last ones wait for a controller quorum that
        # has already gone, until their shutdown times out.
        stop_processes([n.process.proc for n in self.nodes if n.process is not None and n.process.proc], 10)
        if self._own_dir:
            shutil.rmtree(self.home, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
