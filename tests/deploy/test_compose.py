"""docker-compose.yml structure (no Docker engine here: read, not run)."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import yaml

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


def test_topics() -> None:
    spec = json.loads((DEPLOY / "topics.json").read_text())
    topics = {t["name"]: t for t in spec["topics"]}
    for action in ("view", "follow", "add_to_cart", "checkout"):
        topic = topics[f"seedloop.{action}"]
        assert topic["key"] == "user_id" and topic["partitions"] >= 2
        assert topic["config"]["cleanup.policy"] == "delete"
    assert topics["seedloop.bid_adjustments"]["config"]["cleanup.policy"] == "compact"
    assert topics["seedloop.bid_adjustments"]["key"] == "campaign_id"
    assert "seedloop.dead_letters" in topics
    # Co-partitioned action topics: one user's journey lands on the same partition number.
    assert (
        len({topics[f"seedloop.{a}"]["partitions"] for a in ("view", "follow", "add_to_cart", "checkout")})
        == 1
    )
