"""Where the test session's Kafka and Redis come from, and the stacks built from them.

`SEEDLOOP_TEST_SERVICES` chooses the tiers every integration and fault test runs against, as a
comma-separated list:

- `embedded`: Tansu (the embedded Kafka-protocol broker) and valkey, both from pip wheels, a
  fresh pair per test;
- `local`: the production parts without Docker: Apache Kafka (KRaft) as a JVM process from the
  jars `tests/tools.sh` resolved with Maven (one broker per session, unique topic prefixes per
  test), and Debian's `redis-server`, a fresh one per test;
- `testcontainers`: Apache Kafka and Redis from testcontainers' Kafka and Redis modules (one of
  each per session); needs a Docker engine;
- `auto` (the default): `embedded`, plus `testcontainers` where `docker info` answers and
  `local` elsewhere.

A tier whose service cannot be had fails its tests with the reason (a missing `redis-server`, no
Docker engine for `testcontainers`): no test ever skips because a service is missing.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import pytest
import redis

from seedloop.apache_kafka import ApacheKafka
from seedloop.embedded import EmbeddedStack, ManagedProcess, free_port, redis_process

Tier = Literal["embedded", "local", "testcontainers"]
TIERS: tuple[Tier, ...] = get_args(Tier)
SETTING = "SEEDLOOP_TEST_SERVICES"
REDIS_SERVER_HINT = "install Debian's redis-server: apt-get install -y redis-server (tests/tools.sh does)"


def docker_answers(timeout: float = 10.0) -> bool:
    """True when a Docker engine answers `docker info` (a client alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=timeout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def select_tiers(value: str | None, docker: Callable[[], bool]) -> list[Tier]:
    """The tiers named by `SEEDLOOP_TEST_SERVICES` (see the module's docstring), in order, once each."""
    names = [n.strip() for n in (value or "auto").split(",") if n.strip()] or ["auto"]
    out: list[Tier] = []
    for name in names:
        expanded: list[str] = ["embedded", "testcontainers" if docker() else "local"] if name == "auto" else [name]
        for tier in expanded:
            if tier not in TIERS:
                raise ValueError(
                    f"{SETTING}={value!r}: unknown tier {tier!r}; use a comma-separated list of "
                    f"{', '.join(TIERS)} or auto"
                )
            if tier not in out:
                out.append(tier)  # type: ignore[arg-type]
    return out


class ServiceStack(Protocol):
    """What a test needs of its services: addresses, and the processes a fault test signals."""

    tier: str

    @property
    def bootstrap(self) -> str: ...

    @property
    def redis_url(self) -> str: ...

    @property
    def broker(self) -> ManagedProcess: ...

    @property
    def redis(self) -> ManagedProcess: ...


def redis_server_binary() -> Path:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None)
    if not found:
        pytest.fail(f"the local tier needs redis-server: {REDIS_SERVER_HINT}", pytrace=False)
    return Path(found)


@dataclass
class LocalStack:
    """A session's Apache Kafka and this test's own Debian redis-server."""

    kafka: ApacheKafka
    redis: ManagedProcess
    tier: str = "local"

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def broker(self) -> ManagedProcess:
        return self.kafka.broker


@dataclass
class ContainerStack:
    """Kafka and Redis containers of one session (testcontainers). Their processes live inside
    containers, so a fault test that signals `.broker` or `.redis` fails here with the reason."""

    kafka_bootstrap: str
    redis_address: str
    tier: str = "testcontainers"

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_address}/0"

    @property
    def broker(self) -> ManagedProcess:
        pytest.fail("the testcontainers tier has no local broker process to signal", pytrace=False)

    @property
    def redis(self) -> ManagedProcess:
        pytest.fail("the testcontainers tier has no local Redis process to signal", pytrace=False)


class EmbeddedTierStack(EmbeddedStack):
    tier = "embedded"


@contextlib.contextmanager
def containers() -> Iterator[tuple[str, str]]:
    """Kafka and Redis from testcontainers' modules: (bootstrap servers, host:port of Redis)."""
    if not docker_answers():
        pytest.fail(f"{SETTING} asks for testcontainers but no Docker engine answers `docker info`", pytrace=False)
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka, RedisContainer("redis:7.0") as rds:
        host, port = rds.get_container_host_ip(), rds.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"{host}:{port}"


@dataclass
class RedisCluster:
    """A Redis Cluster of `masters` primaries (no replicas) on loopback, slots split evenly.

    Built with CLUSTER ADDSLOTSRANGE and CLUSTER MEET over the wire, so it needs only the server
    binary (Debian's redis-server 7.0 or valkey)."""

    workdir: Path
    masters: int = 3
    binary: Path | None = None
    nodes: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for i in range(self.masters):
            port = free_port()
            node_dir = self.workdir / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            proc = redis_process(
                port=port,
                workdir=node_dir,
                log_path=node_dir / "redis.log",
                binary=self.binary,
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                            "--cluster-node-timeout", "5000"),
            )
            proc.start()
            self.nodes.append(proc)
        slots = 16384
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        try:
            for i, client in enumerate(clients):
                start, end = i * slots // self.masters, (i + 1) * slots // self.masters - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                infos = [c.execute_command("CLUSTER", "INFO") for c in clients]
                texts = [i.decode() if isinstance(i, bytes) else str(i) for i in infos]
                if all("cluster_state:ok" in t and f"cluster_known_nodes:{self.masters}" in t for t in texts):
                    return self
                time.sleep(0.2)
            raise RuntimeError(f"Redis Cluster not ok within {timeout:.0f}s: {texts[0][:200]}")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


def make_stack(tier: Tier, tmp_path: Path, session_kafka: Callable[[], ApacheKafka],
               session_containers: Callable[[], tuple[str, str]]) -> contextlib.AbstractContextManager[Any]:
    """A context manager yielding this test's ServiceStack of `tier`."""

    @contextlib.contextmanager
    def local() -> Iterator[LocalStack]:
        proc = redis_process(workdir=tmp_path, log_path=tmp_path / "redis.log", binary=redis_server_binary())
        proc.start()
        try:
            yield LocalStack(session_kafka(), proc)
        finally:
            proc.stop()

    if tier == "embedded":
        return EmbeddedTierStack(log_dir=tmp_path / "stack")
    if tier == "local":
        return local()
    bootstrap, address = session_containers()
    return contextlib.nullcontext(ContainerStack(bootstrap, address))
