"""compose's seedloop services as processes: their environment, commands, healthchecks and loopback
addresses, as docker compose would run them (tests/deploy/test_compose_services.py)."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from prometheus_client.parser import text_string_to_metric_families

from seedloop.embedded import stop_processes
from tests.deploy._support import COMPOSE
from tests.deploy.compose_image import Image, run_checked

SEEDLOOP_SERVICES = ("topics-init", "simulator", "worker-1", "worker-2", "optimizer")
# The one override of compose's values: the simulator runs for 45 s, not a day (86400 s).
SIM_DURATION_S = 45
# Broker settings of compose's kafka service that describe the node's own layout (ids, listeners,
# paths): the local broker has its own. Every other KAFKA_* setting is applied to it as compose sets it.
KAFKA_LAYOUT = frozenset(
    {
        "NODE_ID",
        "PROCESS_ROLES",
        "CONTROLLER_QUORUM_VOTERS",
        "LISTENERS",
        "ADVERTISED_LISTENERS",
        "LISTENER_SECURITY_PROTOCOL_MAP",
        "CONTROLLER_LISTENER_NAMES",
        "INTER_BROKER_LISTENER_NAME",
        "LOG_DIRS",
    }
)


def compose() -> dict[str, Any]:
    # PyYAML resolves the anchors (&x / *x) and the merge keys (<<:) as compose does.
    return yaml.safe_load(COMPOSE.read_text())


def compose_broker_config() -> dict[str, str]:
    env = compose()["services"]["kafka"]["environment"]
    return {
        key.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
        for key, value in env.items()
        if key.startswith("KAFKA_") and key.removeprefix("KAFKA_") not in KAFKA_LAYOUT
    }


@dataclass(frozen=True)
class Backends:
    """What compose's `kafka` and `redis` services stand for in this test."""

    bootstrap: str
    redis_url: str


def loopback_addresses(count: int, ports: list[int]) -> list[str]:
    """`count` loopback addresses 127.a.b.2, .3, ... on which every port of `ports` is free; a random
    /24 so that two test sessions on one machine do not collide."""
    rng = random.SystemRandom()
    for _ in range(50):
        a, b = rng.randrange(1, 255), rng.randrange(0, 255)
        addresses = [f"127.{a}.{b}.{2 + i}" for i in range(count)]
        try:
            for address in addresses:
                for port in ports:
                    with socket.socket() as sock:
                        sock.bind((address, port))
        except OSError:
            continue
        return addresses
    raise AssertionError(f"no loopback /24 with ports {ports} free")


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    address: str
    cwd: Path
    log_path: Path
    healthcheck: dict[str, Any] | None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """The service's JSON log records (compose sets SEEDLOOP_LOG_FORMAT=json)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line from a library that happens to start with a brace
        return out

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_processes([self.proc], timeout)


def duration_s(text: str | int | float) -> float:
    """A compose duration ("1m30s", "15s", "500ms") in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def service_env(
    image: Image, compose_env: Mapping[str, Any], backends: Backends, address: str, home: Path
) -> dict[str, str]:
    """The environment a container of the image gets from compose, with compose's host names
    mapped to the test's services and the 0.0.0.0 bind to the service's own address."""
    env = {**image.env, "PATH": f"{image.bin}:/usr/bin:/bin", "HOME": str(home)}
    for key, raw in compose_env.items():
        value = str(raw)
        if key == "KAFKA_BOOTSTRAP_SERVERS":
            assert value == "kafka:9092", f"{key}={value}: not compose's kafka listener"
            value = backends.bootstrap
        elif key == "REDIS_URL":
            parts = urlsplit(value)
            assert parts.hostname == "redis", f"{key}={value}: not compose's redis"
            value = urlunsplit(parts._replace(netloc=urlsplit(backends.redis_url).netloc))
        elif value == "0.0.0.0":
            value = address
        else:
            # A `host:port` (alone, in a list or a URL) naming a compose service would need mapping.
            hosts = set(compose()["services"]) & set(re.findall(r"(?:^|[/@,])([A-Za-z0-9_.-]+):\d+", value))
            assert not hosts, f"{key}={value} names compose services {hosts} this test does not map"
        env[key] = value
    return env


def services_of(image: Image, backends: Backends, workdir: Path) -> dict[str, Service]:
    spec = compose()["services"]
    addresses = loopback_addresses(len(SEEDLOOP_SERVICES), [6066, 6067, 6068])
    out: dict[str, Service] = {}
    for name, address in zip(SEEDLOOP_SERVICES, addresses, strict=True):
        service = spec[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile", name
        # Compose: an `entrypoint` replaces the image's and drops its CMD; else `command` replaces CMD.
        if "entrypoint" in service:
            argv = [*service["entrypoint"], *service.get("command", [])]
        else:
            argv = [*image.entrypoint, *service.get("command", image.cmd)]
        if name == "simulator":
            # The one override of compose's values: a finite run (SIM_DURATION_S) instead of a day.
            at = argv.index("--duration") + 1
            assert argv[at] == "86400", argv
            argv[at] = str(SIM_DURATION_S)
        home = workdir / name  # the image's empty WORKDIR, one per container
        home.mkdir()
        out[name] = Service(
            name=name,
            argv=argv,
            env=service_env(image, service.get("environment", {}), backends, address, home),
            address=address,
            cwd=home,
            log_path=workdir / f"{name}.log",
            healthcheck=service.get("healthcheck"),
        )
    return out


def healthcheck_argv(service: Service) -> list[str]:
    assert service.healthcheck is not None, f"{service.name} has no healthcheck"
    kind, *args = service.healthcheck["test"]

    def local(text: str) -> str:
        return text.replace("127.0.0.1", service.address).replace("localhost", service.address)

    if kind == "CMD":
        return [local(a) for a in args]
    assert kind == "CMD-SHELL" and len(args) == 1, service.healthcheck
    return ["/bin/sh", "-c", local(args[0])]


def healthcheck_passes(service: Service) -> tuple[bool, str]:
    assert service.healthcheck is not None
    try:
        out = subprocess.run(
            healthcheck_argv(service),
            env=service.env,
            cwd=service.cwd,
            capture_output=True,
            text=True,
            timeout=duration_s(service.healthcheck.get("timeout", "30s")),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "timed out"
    return out.returncode == 0, (out.stdout + out.stderr)[-1000:]


def wait_healthy(service: Service, started: float) -> float:
    """Seconds until the healthcheck passed; fails past what compose allows before `unhealthy`."""
    hc = service.healthcheck
    assert hc is not None, f"{service.name} has no healthcheck"
    allowed = duration_s(hc.get("start_period", "0s")) + duration_s(hc.get("interval", "30s")) * int(
        hc.get("retries", 3)
    )
    last = ""
    while time.monotonic() - started < allowed:
        assert service.proc is not None and service.proc.poll() is None, (
            f"{service.name} exited ({service.proc.returncode if service.proc else None}):\n{service.log_tail()}"
        )
        ok, last = healthcheck_passes(service)
        if ok:
            return time.monotonic() - started
        time.sleep(1.0)
    raise AssertionError(f"{service.name} not healthy within {allowed:.0f}s: {last}\n{service.log_tail()}")


def scrape(url: str) -> dict[str, float]:
    """Prometheus text from `url` as {'name{label="v"}': value}."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def report(image: Image, service: Service) -> dict[str, Any]:
    """`seedloop report --json` in a one-off container of `service` (docker compose run)."""
    out = run_checked(
        [str(image.bin / "seedloop"), "report", "--json"],
        "seedloop report --json",
        env=service.env,
        cwd=service.cwd,
        timeout=120,
    )
    return dict(json.loads(out.stdout))


# ------------------------------------------------------------------ the deployment
