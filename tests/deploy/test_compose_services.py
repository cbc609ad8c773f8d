"""docker-compose.yml's seedloop services, run for real without Docker.

No Docker engine runs here or on CI, so this test does what `docker compose up --build` would do
for the services built from deploy/Dockerfile, as faithfully as a process can:

- the image: the build stage's COPY lines are mirrored into an empty folder (so a file the image
  lacks is missing here too), the wheel is built from it and installed, plain (non-editable), into
  a fresh virtualenv, once per test session; the services run from that virtualenv, each in its
  own empty working directory (the image's WORKDIR), with the image's ENV, ENTRYPOINT and CMD;
- the services: every seedloop service of compose (topics-init, simulator, worker-1, worker-2,
  optimizer) with compose's entrypoint/command and environment (anchors and merge keys resolved),
  in compose's order: topics-init to completion first;
- the network: compose's host names become loopback services. `kafka:9092` is a real Apache Kafka
  (KRaft) configured with the broker settings compose gives its kafka service (no automatic topic
  creation among them), `redis://redis:6379` a real redis-server; each service gets its own
  loopback address in place of its 0.0.0.0 bind, so both workers keep compose's port 6066;
- the healthchecks: each service's healthcheck `test` (CMD or CMD-SHELL) runs in the service's
  environment with the virtualenv's python, its 127.0.0.1 rewritten to the service's address,
  and must pass within the time compose allows (start_period + retries x interval).

The only change to compose's own values is the simulator's duration: 86400 s in compose,
45 s here (SIM_DURATION_S).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource
from prometheus_client.parser import text_string_to_metric_families

from seedloop.apache_kafka import ApacheKafka
from seedloop.embedded import redis_process, stop_processes
from seedloop.settings import Settings
from seedloop.topics import end_offsets, topic_specs
from tests.deploy._support import COMPOSE, ROOT
from tests.services import redis_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
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


# ------------------------------------------------------------------ the image, without Docker


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions per stage (continuation lines joined, comments dropped)."""
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages


def dockerignore_patterns() -> list[str]:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The subset of .dockerignore's syntax mirrored below; anything else must be taught to ignored().
    unsupported = [p for p in patterns if p.startswith("!") or "**" in p.removeprefix("**/")]
    assert not unsupported, f".dockerignore patterns this test does not mirror: {unsupported}"
    return patterns


def ignored(relative: Path, patterns: list[str]) -> bool:
    text = relative.as_posix()
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatch("/".join(relative.parts[i:]), tail) for i in range(len(relative.parts))):
                return True
        elif fnmatch.fnmatch(text, pattern) or fnmatch.fnmatch(relative.parts[0], pattern):
            return True
    return False


def mirror_copy(args: str, workdir: Path, patterns: list[str]) -> None:
    """One `COPY src... dest` from the build context (the repository) into `workdir`."""
    *sources, dest = shlex.split(args)
    assert sources and not any(s.startswith("--") for s in sources), f"COPY {args}: flags are not mirrored"
    target = workdir / dest
    into_folder = dest.endswith("/") or len(sources) > 1
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the build context"
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                rel = file.relative_to(ROOT)
                if not ignored(rel, patterns):
                    out = target / file.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)
        else:
            out = target / path.name if into_folder else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


@dataclass(frozen=True)
class Image:
    venv: Path
    env: dict[str, str]  # the final stage's ENV
    entrypoint: list[str]
    cmd: list[str]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def run_checked(argv: list[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    assert out.returncode == 0, f"{what} failed ({out.returncode}):\n{(out.stdout + out.stderr)[-4000:]}"
    return out


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """deploy/Dockerfile mirrored: the build stage's COPYs and `pip wheel`, then the runtime stage's
    `pip install` of that wheel into a fresh virtualenv (built once per test session)."""
    build, runtime = dockerfile_stages(DOCKERFILE.read_text())
    # The shape this mirror follows; a different Dockerfile needs this test changed with it.
    build_runs = [i.args for i in build if i.keyword == "RUN"]
    runtime_runs = [i.args for i in runtime if i.keyword == "RUN"]
    assert build_runs == ["pip wheel --no-deps --wheel-dir /wheels ."], build_runs
    assert any(r.startswith("pip install /wheels/*.whl") for r in runtime_runs), runtime_runs
    assert [i.args for i in runtime if i.keyword == "COPY"] == ["--from=build /wheels /wheels"]

    root = tmp_path_factory.mktemp("image")
    context = root / "src"
    context.mkdir()
    patterns = dockerignore_patterns()
    for instruction in build:
        if instruction.keyword == "COPY":
            mirror_copy(instruction.args, context, patterns)
    venv = root / "venv"
    run_checked([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    wheels = root / "wheels"
    run_checked(
        [str(venv / "bin/pip"), "wheel", "--no-deps", "--wheel-dir", str(wheels), "."],
        "pip wheel",
        cwd=context,
    )
    run_checked([str(venv / "bin/pip"), "install", *map(str, sorted(wheels.glob("*.whl")))], "pip install")

    env: dict[str, str] = {}
    for instruction in runtime:
        if instruction.keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(instruction.args))
    entrypoint = [json.loads(i.args) for i in runtime if i.keyword == "ENTRYPOINT"][-1]
    cmd = [json.loads(i.args) for i in runtime if i.keyword == "CMD"][-1]
    return Image(venv, env, entrypoint, cmd)


@pytest.mark.timeout(600)  # the first user of `image` builds the virtualenv (a fresh pip install)
def test_the_image_install_has_what_the_commands_need(image: Image, tmp_path: Path) -> None:
    """The plain install answers from site-packages (never this checkout), finds its seeds, has
    numpy for `seedloop evaluate`, and has no embedded broker: demo and stack say what to install."""
    env = {**image.env, "PATH": f"{image.bin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = run_checked(
        [
            str(image.bin / "python"),
            "-c",
            "import json, seedloop, numpy, stream_processors.optimizer.evaluate, stream_processors.optimizer.levers\n"
            "from seedloop.settings import Settings\n"
            "s = Settings()\n"
            "print(json.dumps({'seedloop': seedloop.__file__, 'seeds': str(s.seeds_dir),"
            " 'files': sorted(p.name for p in s.seeds_dir.glob('*.json'))}))",
        ],
        "import from the image's install",
        env=env,
        cwd=tmp_path,
    )
    found = json.loads(probe.stdout)
    site = str(image.venv)
    assert found["seedloop"].startswith(site) and found["seeds"].startswith(site), found
    assert {"campaigns.json", "truth.json", "fx.json"} <= set(found["files"]), found
    for command in (["stack"], ["demo", "--duration", "5", "--no-live"]):
        out = subprocess.run(
            [str(image.bin / "seedloop"), *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2, (command, out.stdout[-2000:], out.stderr[-2000:])
        assert "seedloop[embedded]" in out.stderr, out.stderr[-2000:]


# ------------------------------------------------------------------ compose, resolved


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


@pytest.fixture
def compose_backends(apache_kafka: Callable[..., ApacheKafka], tmp_path: Path) -> Iterator[Backends]:
    """The one place the test's broker and Redis come from: Apache Kafka (KRaft, the broker compose
    runs) with compose's broker settings, which include no automatic topic creation, so only what
    topics-init creates exists; and Debian's redis-server (compose runs redis:7)."""
    config = compose_broker_config()
    assert config["auto.create.topics.enable"] == "false", config
    kafka = apache_kafka(**config)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    server = redis_process(workdir=redis_dir, binary=redis_server_binary(), log_path=redis_dir / "redis.log")
    server.start()
    try:
        yield Backends(kafka.bootstrap, f"redis://127.0.0.1:{server.port}")
    finally:
        server.stop()


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


@pytest.mark.timeout(900)
def test_compose_deployment_runs_and_closes_the_loop(
    image: Image, compose_backends: Backends, tmp_path: Path
) -> None:
    services = services_of(image, compose_backends, tmp_path)

    def logs() -> str:
        return "\n".join(f"--- {s.name}\n{s.log_tail(1500)}" for s in services.values())

    settings = Settings(
        kafka_bootstrap_servers=compose_backends.bootstrap,
        topic_prefix=services["topics-init"].env["SEEDLOOP_TOPIC_PREFIX"],
        partitions=int(services["topics-init"].env["SEEDLOOP_PARTITIONS"]),
    )
    admin = AdminClient({"bootstrap.servers": compose_backends.bootstrap})
    try:
        # topics-init runs to completion before anything else starts (service_completed_successfully).
        init = services["topics-init"]
        init.start()
        assert init.proc is not None
        assert init.proc.wait(120) == 0, f"topics-init failed:\n{init.log_tail()}"

        # The broker creates no topic by itself: every topic the services use exists now, with
        # the partitions and configs of the one definition (seedloop/topics.py = deploy/topics.json).
        meta = admin.list_topics(timeout=30).topics
        specs = topic_specs(settings)
        for spec in specs:
            assert spec.topic in meta, f"topics-init did not create {spec.topic}:\n{init.log_tail()}"
            assert len(meta[spec.topic].partitions) == settings.partitions, spec.topic
        resources = [ConfigResource("topic", spec.topic) for spec in specs]
        for spec, (_, future) in zip(specs, admin.describe_configs(resources).items(), strict=True):
            described = {k: v.value for k, v in future.result(timeout=30).items()}
            assert {k: described.get(k) for k in spec.config} == spec.config, spec.topic

        started = time.monotonic()
        for name in ("worker-1", "worker-2", "optimizer", "simulator"):
            services[name].start()

        # Every healthcheck passes within what compose allows; the simulator's while it runs.
        healthy = {
            name: wait_healthy(services[name], started)
            for name in ("simulator", "worker-1", "worker-2", "optimizer")
        }

        # While the simulator runs: the optimizer publishes and the simulator's scheduler applies.
        simulator = services["simulator"]
        assert simulator.proc is not None
        sim_metrics = f"http://{simulator.address}:6068/metrics"
        applied, first_applied_s = 0.0, None
        while simulator.proc.poll() is None:
            # Between the run's end and the process's exit the server is gone; the loop then ends.
            with contextlib.suppress(OSError):
                applied = scrape(sim_metrics).get("seedloop_sim_bid_adjustments_applied_total", applied)
            if applied and first_applied_s is None:
                first_applied_s = time.monotonic() - started
            time.sleep(1.0)
        assert simulator.proc.returncode == 0, f"simulator failed:\n{simulator.log_tail()}"
        assert applied > 0, f"the scheduler applied no bid adjustment:\n{logs()}"

        finished = [r for r in simulator.records() if r.get("msg") == "simulation finished"]
        assert len(finished) == 1, simulator.log_tail()
        acknowledged = int(finished[0]["acknowledged"])
        assert acknowledged == finished[0]["produced"] > 10_000, finished[0]
        # What the broker holds equals what it acknowledged (idempotent producer: no duplicates).
        ends = end_offsets(settings, list(settings.action_topics.values()))
        assert sum(ends.values()) == acknowledged

        # The workers apply everything the broker acknowledged (or dead-letter it, with a reason).
        optimizer = services["optimizer"]
        deadline = time.monotonic() + 180
        figures = report(image, optimizer)
        while (
            figures["events_processed"] + figures["dead_letters"] < acknowledged
            and time.monotonic() < deadline
        ):
            time.sleep(2.0)
            figures = report(image, optimizer)
        assert figures["events_processed"] + figures["dead_letters"] == acknowledged, (figures, logs())
        assert figures["dead_letters"] == 0, figures
        assert figures["bid_adjustments"] > 0, figures

        # Two workers in one group share the partitions: each owns some, together all of them.
        owned = {
            name: scrape(f"http://{services[name].address}:6066/metrics")["seedloop_owned_partitions"]
            for name in ("worker-1", "worker-2")
        }
        assert all(n > 0 for n in owned.values()) and sum(owned.values()) == settings.partitions, owned

        # The long-running services are still up and still healthy.
        for name in ("worker-1", "worker-2", "optimizer"):
            proc = services[name].proc
            assert proc is not None and proc.poll() is None, f"{name} exited:\n{services[name].log_tail()}"
            ok, detail = healthcheck_passes(services[name])
            assert ok, f"{name} healthcheck fails at the end: {detail}"

        # Nothing needed a topic topics-init did not create (only the broker's and Faust's own).
        extra = set(admin.list_topics(timeout=30).topics) - {s.topic for s in specs}
        assert all(t.startswith(("__", f"{settings.consumer_group}")) for t in extra), extra
        print(
            f"\ncompose services: healthy after { ({k: round(v, 1) for k, v in healthy.items()}) } s; "
            f"first bid adjustment applied {first_applied_s:.0f} s after the start, {applied:.0f} in all; "
            f"{acknowledged} events acknowledged = processed; {figures['bid_adjustments']} adjustments published"
        )
    finally:
        for service in services.values():
            service.stop()
