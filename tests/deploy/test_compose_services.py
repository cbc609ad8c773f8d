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
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from seedloop.apache_kafka import ApacheKafka
from seedloop.embedded import redis_process
from seedloop.settings import Settings
from seedloop.topics import end_offsets, topic_specs
from tests.deploy.compose_image import (
    DOCKERFILE,
    Image,
    dockerfile_stages,
    dockerignore_patterns,
    mirror_copy,
    run_checked,
)
from tests.deploy.compose_runtime import (
    Backends,
    compose_broker_config,
    healthcheck_passes,
    report,
    scrape,
    services_of,
    wait_healthy,
)
from tests.services import redis_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# ------------------------------------------------------------------ the image, without Docker


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
