"""Shared fixtures. Every test that asks for `stack` (or `settings`) runs once per service tier
chosen by `SEEDLOOP_TEST_SERVICES` (tests/services.py: the embedded Tansu + valkey, and Apache
Kafka + Redis, local or from testcontainers). Redis servers and the embedded broker are started per
test (they start in well under a second); Apache Kafka once per session, with unique topic
prefixes and consumer groups per test, so tests never share state."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

import pytest
import redis
from pydantic import SecretStr

from seedloop.apache_kafka import ApacheKafka
from seedloop.embedded import free_port, stop_processes
from seedloop.settings import Settings
from tests.services import (
    SETTING,
    RedisCluster,
    ServiceStack,
    containers,
    docker_answers,
    make_stack,
    redis_server_binary,
    select_tiers,
)

REPO = Path(__file__).resolve().parent.parent
SERVICE_TIERS = select_tiers(os.environ.get(SETTING), docker_answers)


@pytest.fixture(scope="session")
def session_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], ApacheKafka]]:
    """One Apache Kafka for the session's `local` tests, started on first use only."""
    started: list[ApacheKafka] = []

    def get() -> ApacheKafka:
        if not started:
            started.append(ApacheKafka(data_dir=tmp_path_factory.mktemp("apache-kafka")).start())
        return started[0]

    yield get
    for kafka in started:
        kafka.stop()


@pytest.fixture(scope="session")
def session_containers() -> Iterator[Callable[[], tuple[str, str]]]:
    """Kafka and Redis containers for the session's `testcontainers` tests, started on first use."""
    stack = contextlib.ExitStack()
    started: list[tuple[str, str]] = []

    def get() -> tuple[str, str]:
        if not started:
            started.append(stack.enter_context(containers()))
        return started[0]

    with stack:
        yield get


@pytest.hookimpl(tryfirst=True)  # before the fixture's own params are applied
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `one_tier` runs on one selected tier only: its subject is seedloop's own HTTP,
    CLI or optimizer, not the broker's semantics, and CI's time is better spent elsewhere. The
    first selected tier, or the one the marker names (`one_tier("local")`) when it is selected."""
    marker = metafunc.definition.get_closest_marker("one_tier")
    if "stack" in metafunc.fixturenames and marker is not None:
        preferred = [t for t in marker.args if t in SERVICE_TIERS]
        tier = preferred[0] if preferred else SERVICE_TIERS[0]
        # As a marker, so pytest's own parametrization sees it instead of the fixture's params.
        metafunc.definition.add_marker(pytest.mark.parametrize("stack", [tier], indirect=True))


@pytest.fixture(params=SERVICE_TIERS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    session_kafka: Callable[[], ApacheKafka],
    session_containers: Callable[[], tuple[str, str]],
) -> Iterator[ServiceStack]:
    """A real Kafka broker and a real Redis server of one tier, on localhost."""
    with make_stack(request.param, tmp_path, session_kafka, session_containers) as s:
        yield s


class _Service(Protocol):
    def start(self) -> Self: ...

    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Service)
_P = ParamSpec("_P")


@contextlib.contextmanager
def each_started(build: Callable[Concatenate[int, _P], _S]) -> Iterator[Callable[_P, _S]]:
    """A factory fixture's body: each call builds the next service (`build(index, ...)`, the index
    keeps their data directories apart) and starts it; all of them are stopped on exit."""
    started: list[_S] = []

    def start(*args: _P.args, **kwargs: _P.kwargs) -> _S:
        service = build(len(started), *args, **kwargs)
        started.append(service)
        return service.start()

    try:
        yield start
    finally:
        for service in started:
            service.stop()


@pytest.fixture
def apache_kafka(tmp_path: Path) -> Iterator[Callable[..., ApacheKafka]]:
    """Factory: this test's own Apache Kafka of `nodes` nodes (for faults that stop brokers)."""

    def build(index: int, nodes: int = 1, **config: str) -> ApacheKafka:
        return ApacheKafka(nodes=nodes, data_dir=tmp_path / f"kafka-{index}", broker_config=config)

    with each_started(build) as start:
        yield start


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Callable[..., RedisCluster]]:
    """Factory: a Redis Cluster of three masters on loopback (Debian's redis-server)."""

    def build(index: int, masters: int = 3) -> RedisCluster:
        return RedisCluster(tmp_path / f"redis-cluster-{index}", masters, redis_server_binary())

    with each_started(build) as start:
        yield start


@pytest.fixture
def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def service_settings(bootstrap: str, redis_url: str, topic_prefix: str, **overrides: Any) -> Settings:
    """Settings for a test's own services: 4 partitions, the repository's seeds, a 3 s rebalance
    timeout (a group settles quickly), and whatever `overrides` say."""
    options: dict[str, Any] = {"partitions": 4, "seeds_dir": REPO / "seeds", "rebalance_timeout_s": 3.0}
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        redis_url=SecretStr(redis_url),
        topic_prefix=topic_prefix,
        **{**options, **overrides},
    )


@pytest.fixture
def settings(stack: ServiceStack, unique_prefix: str) -> Settings:
    # retention_s: short enough that the tests' few simulated hours retain some followers.
    return service_settings(stack.bootstrap, stack.redis_url, unique_prefix, retention_s=3600.0)


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A child's environment: the test's services, and HTTP on free ports unless a test says
    which (the defaults 6066-6068 would clash between tests and with anything else running)."""
    ports = {"SEEDLOOP_SIMULATOR_PORT": "0", "SEEDLOOP_OPTIMIZER_PORT": "0"}
    return settings.child_env(SEEDLOOP_MARKOV_REFRESH_S="3600", **{**ports, **extra})


def run_cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`seedloop <args>` against `settings`' services, to its end; its output as text, unchecked."""
    return subprocess.run(
        [sys.executable, "-m", "seedloop", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn_seedloop(settings: Settings, command: str, log_path: Path, **env: str) -> subprocess.Popen[bytes]:
    """`seedloop <command>` against `settings`' services (`env` added), its output in `log_path`;
    the caller stops it (embedded.stop_processes)."""
    with open(log_path, "ab") as log_file:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "seedloop", command],
            env=settings_env(settings, **env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def spawn_worker(settings: Settings, worker_id: str, log_path: Path, **env: str) -> WorkerProcess:
    """A `seedloop worker` against `settings`' services, HTTP on a free port, its output in
    `log_path`; the caller stops it (embedded.stop_processes)."""
    port = free_port()
    proc = spawn_seedloop(
        settings, "worker", log_path, SEEDLOOP_WORKER_ID=worker_id, SEEDLOOP_WEB_PORT=str(port), **env
    )
    return WorkerProcess(proc, port, log_path)


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start `seedloop worker` processes against the test's services."""
    with worker_starter(settings, tmp_path) as start:
        yield start


@contextlib.contextmanager
def worker_starter(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `seedloop worker` processes against `settings`' services; stop them all on exit."""
    started: list[WorkerProcess] = []

    def start(worker_id: str = "worker-1", **env: str) -> WorkerProcess:
        w = spawn_worker(settings, worker_id, tmp_path / f"{worker_id}-{len(started)}.log", **env)
        started.append(w)
        return w

    try:
        yield start
    finally:
        stop_processes(w.proc for w in started)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url_value)
    yield client
    client.close()
