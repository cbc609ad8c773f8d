"""A real Prometheus and a real Alertmanager deliver the ROAS and target-down alerts to a webhook,
each notified once.

Both run from Debian's packages on free 127.0.0.1 ports, with test copies of the committed
configs: the rules are the real alerts.yml with `for:` shortened and a 1 s evaluation interval,
the Alertmanager config the real one with its webhook pointed at a receiver in this process. The
scrape targets are a prometheus_client server exporting the real metric classes of metrics.py and
a second "worker" on a port where nothing listens (a worker that is down).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from seedloop.embedded import stop_processes
from stream_processors.metrics import OptimizerMetrics, PipelineMetrics
from tests.deploy._support import ALERTMANAGER_CONFIG, ALERTS, PROM_CONFIG, binary

HOST = "127.0.0.1"
DEADLINE_S = 45


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Webhook:
    def __init__(self) -> None:
        self.payloads: list[dict] = []
        self.received = threading.Condition()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.received:
                    hook.payloads.append(json.loads(body))
                    hook.received.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def firing(self, alertname: str) -> list[dict]:
        return [
            alert
            for payload in self.payloads
            for alert in payload["alerts"]
            if alert["status"] == "firing" and alert["labels"]["alertname"] == alertname
        ]

    def wait_for(self, alertname: str, timeout: float) -> list[dict]:
        with self.received:
            self.received.wait_for(lambda: bool(self.firing(alertname)), timeout=timeout)
            return self.firing(alertname)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def short_for(duration: str) -> str:
    return "3s" if duration not in ("0s", "0m") else duration


def write_test_configs(
    tmp: Path, worker_targets: list[str], am_port: int, webhook_url: str
) -> tuple[Path, Path]:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = short_for(rule["for"])
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))

    prom = yaml.safe_load(PROM_CONFIG.read_text())
    prom["global"].update(scrape_interval="1s", evaluation_interval="1s")
    prom["rule_files"] = ["alerts.yml"]
    prom["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{am_port}"]}]}]}
    prom["scrape_configs"] = [
        {"job_name": "seedloop-worker", "static_configs": [{"targets": worker_targets}]}
    ]
    prom_path = tmp / "prometheus.yml"
    prom_path.write_text(yaml.safe_dump(prom, sort_keys=False))

    am = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = [am["route"], *am["route"].get("routes", [])]
    for route in routes:
        route.update(group_wait="1s", group_interval="1s")
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    am_path = tmp / "alertmanager.yml"
    am_path.write_text(yaml.safe_dump(am, sort_keys=False))
    return prom_path, am_path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    stop_processes(procs, 10)


@pytest.mark.integration
def test_roas_collapse_and_a_dead_worker_reach_the_webhook_once(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    prometheus_bin = binary("prometheus", "/usr/bin/prometheus")
    alertmanager_bin = binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager")

    # A worker and the optimizer, as they export: c1's ROAS collapsed (100 / 200 = 0.5 < 0.8 * 2),
    # c2 healthy (900 / 300 = 3). Events keep flowing, the optimizer keeps running.
    registry = CollectorRegistry()
    pipeline = PipelineMetrics(registry=registry)
    optimizer = OptimizerMetrics(registry=registry)
    for campaign, gmv, spend in (("c1", 100.0, 200.0), ("c2", 900.0, 300.0)):
        pipeline.campaign_gmv.labels(campaign=campaign, channel="feed", window="15m", model="last").set(gmv)
        pipeline.campaign_spend.labels(campaign=campaign, channel="feed", window="15m").set(spend)
        optimizer.target.labels(campaign=campaign, target_kind="roas").set(2.0)
    consumed = pipeline.events_consumed.labels(topic="seedloop.view")
    consumed.inc()
    optimizer.last_round.set_to_current_time()

    webhook = Webhook()
    metrics_port, prom_port, am_port = free_port(), free_port(), free_port()
    dead_worker = f"{HOST}:{free_port()}"  # nothing listens there
    server, server_thread = start_http_server(metrics_port, addr=HOST, registry=registry)
    stop = threading.Event()

    def keep_flowing() -> None:
        while not stop.wait(0.2):
            consumed.inc(10)
            optimizer.last_round.set_to_current_time()

    flow = threading.Thread(target=keep_flowing, daemon=True)
    flow.start()
    try:
        prom_cfg, am_cfg = write_test_configs(
            tmp_path, [f"{HOST}:{metrics_port}", dead_worker], am_port, webhook.url
        )
        with (tmp_path / "alertmanager.log").open("wb") as am_log:
            processes.append(
                subprocess.Popen(
                    [
                        alertmanager_bin,
                        f"--config.file={am_cfg}",
                        f"--storage.path={tmp_path / 'am'}",
                        f"--web.listen-address={HOST}:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    stdout=am_log,
                    stderr=subprocess.STDOUT,
                )
            )
        with (tmp_path / "prometheus.log").open("wb") as prom_log:
            processes.append(
                subprocess.Popen(
                    [
                        prometheus_bin,
                        f"--config.file={prom_cfg}",
                        f"--storage.tsdb.path={tmp_path / 'prom'}",
                        f"--web.listen-address={HOST}:{prom_port}",
                    ],
                    stdout=prom_log,
                    stderr=subprocess.STDOUT,
                )
            )

        start = time.monotonic()
        alerts = webhook.wait_for("SeedloopRoasBelowTarget", timeout=DEADLINE_S)
        down = webhook.wait_for("SeedloopTargetDown", timeout=max(1.0, DEADLINE_S - (time.monotonic() - start)))
        elapsed = time.monotonic() - start
        for proc in processes:
            assert proc.poll() is None, f"{proc.args!r} exited early"
        logs = "\n".join(
            f"--- {name}\n" + (tmp_path / name).read_text(errors="replace")[-3000:]
            for name in ("prometheus.log", "alertmanager.log")
        )
        assert alerts, (
            f"no SeedloopRoasBelowTarget notification within {DEADLINE_S}s; got {webhook.payloads}\n{logs}"
        )
        assert {a["labels"]["campaign"] for a in alerts} == {"c1"}
        alert = alerts[0]
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == "Campaign c1: ROAS 0.50 is below 80% of its target"
        # One worker of two is down: named, and the live one is not.
        assert {a["labels"]["instance"] for a in down} == {dead_worker}, down
        assert down[0]["labels"]["job"] == "seedloop-worker"
        assert down[0]["annotations"]["summary"] == f"seedloop-worker target {dead_worker} is down"
        # Notified once per firing: Alertmanager is the only notifier and does not repeat an
        # unchanged group before its repeat_interval (hours).
        time.sleep(3)
        assert len(webhook.firing("SeedloopRoasBelowTarget")) == 1, webhook.payloads
        assert len(webhook.firing("SeedloopTargetDown")) == 1, webhook.payloads
        # The pipeline is alive: nothing else should page.
        assert not webhook.firing("SeedloopNoEvents")
        assert not webhook.firing("SeedloopOptimizerStalled")
        assert elapsed < DEADLINE_S
    finally:
        stop.set()
        flow.join(timeout=5)
        server.shutdown()
        server.server_close()
        server_thread.join(timeout=5)
        webhook.close()
