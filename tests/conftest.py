"""Shared fixtures. Services are started per test by factories (cheap: Tansu and valkey start in
well under a second), with unique topic prefixes, so tests never share state."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from seedloop.embedded import EmbeddedStack, free_port
from seedloop.settings import Settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """A real Kafka-protocol broker and a real Redis server, on free localhost ports."""
    with EmbeddedStack(log_dir=tmp_path / "stack") as s:
        yield s


@pytest.fixture
def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(stack: EmbeddedStack, unique_prefix: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.bootstrap,
        redis_url=stack.redis_url,
        topic_prefix=unique_prefix,
        partitions=4,
        seeds_dir=REPO / "seeds",
        rebalance_timeout_s=3.0,
        # Short enough that the tests' few simulated hours retain some followers.
        retention_s=3600.0,
    )


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    return settings.child_env(SEEDLOOP_MARKOV_REFRESH_S="3600", **extra)


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start `seedloop worker` processes against the test's services."""
    started: list[WorkerProcess] = []

    def start(worker_id: str = "worker-1", **env: str) -> WorkerProcess:
        port = free_port()
        log_path = tmp_path / f"{worker_id}-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "seedloop", "worker"],
            env=settings_env(settings, SEEDLOOP_WORKER_ID=worker_id, SEEDLOOP_WEB_PORT=str(port), **env),
            stdout=open(log_path, "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        w = WorkerProcess(proc, port, log_path)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in started:
        try:
            w.proc.wait(15)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(5)


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
