"""Every dashboard query and every alert expression answers on a healthy pipeline.

A worker, the optimizer and the simulator run against the embedded Kafka and Redis, each serving
its Prometheus metrics; a real Prometheus (Debian's /usr/bin/prometheus) scrapes them with
deploy/prometheus/prometheus.yml, only the targets moved to this test's free ports and the
intervals shortened to 1 s. Then every panel query and query variable of every dashboard and every
alert expression of deploy/prometheus/alerts.yml is sent to its HTTP API, and any that returns no
series fails the test: on a healthy pipeline a panel must show a figure (dead letters 0), never
"No data".

Dashboard variables take the value a user opening the dashboard gets (the `current` option of
each variable, `All` as its allValue); Grafana's interval variables are given values that cover
several 1 s scrapes.

Alert expressions compare and filter, so on a healthy pipeline they are meant to be empty. Each
comparison is sent with the `bool` modifier instead (`x > 0.01` becomes `x > bool 0.01`): the
same expression, evaluated for every series it watches, 0 where it does not fire. An alert whose
`bool` form is empty watches nothing and could never fire. Prometheus also evaluates the rule
file itself; every rule must report health "ok".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from seedloop.embedded import free_port, stop_processes
from seedloop.settings import Settings
from seedloop.topics import ensure_topics
from tests.conftest import REPO, WorkerProcess, settings_env, wait_for
from tests.deploy._support import ALERTS, DASHBOARDS, PROM_CONFIG, binary
from tests.integration.test_pipeline import produce_simulated

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
DEADLINE_S = 75.0
# Grafana's interval variables, for a 1 s scrape interval: $__rate_interval is at least four
# scrape intervals (Grafana's own rule), so a rate always has samples to work with.
INTERVALS = {"__rate_interval": "15s", "__interval": "5s", "__range": "1h", "__range_s": "3600"}
# The seedloop jobs of prometheus.yml and what serves each in this test.
SEEDLOOP_JOBS = {"seedloop-worker", "seedloop-optimizer", "seedloop-simulator"}


def http_get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


# ----------------------------------------------------------------------------- the queries
def _variable_values(dashboard: dict) -> dict[str, str]:
    """The value each template variable has when the dashboard is opened."""
    values: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        current = var.get("current", {}).get("value")
        if isinstance(current, list):
            current = current[0] if current else None
        if current in (None, "$__all"):
            current = var.get("allValue") or ".*"
        values[var["name"]] = str(current)
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    merged = {**INTERVALS, **values}

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in merged:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return merged[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target of every dashboard, variables substituted."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        values = _variable_values(dashboard)
        panels = []
        for panel in dashboard.get("panels", []):
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    where = f"{path.name} / {panel.get('title')} / {target.get('refId')}"
                    found.append((where, substitute(target["expr"], values)))
        # A query variable's options: Grafana's `label_values(metric, label)` is the label's
        # values over the metric's series, i.e. the groups of `count by (label) (metric)`.
        for var in dashboard.get("templating", {}).get("list", []):
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", str(var.get("query", "")).strip())
            if m:
                found.append((f"{path.name} / variable {var['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return found


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def with_bool(expr: str) -> str:
    """`expr` with every comparison given the `bool` modifier (outside label matchers and strings)."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        ch = expr[i]
        if ch == '"':  # a string literal, copied as is
            end = i + 1
            while end < len(expr) and expr[end] != '"':
                end += 2 if expr[end] == "\\" else 1
            out.append(expr[i : end + 1])
            i = end + 1
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        m = _COMPARISON.match(expr, i) if depth == 0 else None
        if m:
            out.append(f"{m.group(1)} bool")
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def alert_queries() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [
        (f"alert {rule['alert']}", with_bool(rule["expr"].strip()))
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_with_bool_rewrites_comparisons_only() -> None:
    assert (
        with_bool('sum(rate(x{a!="b",c=~"d>e"}[5m])) / 2 > 0.01 or absent(y{z="<"})')
        == 'sum(rate(x{a!="b",c=~"d>e"}[5m])) / 2 > bool 0.01 or absent(y{z="<"})'
    )
    assert with_bool("a < on (c) b") == "a < bool on (c) b"
    assert with_bool("a == bool 0") == "a == bool 0"
    assert with_bool("a >= 1") == "a >= bool 1"


def test_variables_take_the_value_a_dashboard_opens_with() -> None:
    values = {"campaign": ".*", "window": "15m"}
    assert substitute('x{c=~"$campaign",w="${window}"}[$__rate_interval]', values) == 'x{c=~".*",w="15m"}[15s]'
    queries = dashboard_queries()
    assert len(queries) > 100
    assert ("creators.json / variable creator", "count by (creator) (seedloop_creator_spend)") in queries
    assert not [q for _, q in queries if "$" in q]


# ----------------------------------------------------------------------------- the stack
class Processes:
    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, args: list[str], env: dict[str, str] | None, log_path: Path) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs.append((proc, log_path))
        return proc

    def assert_alive(self) -> None:
        for proc, log_path in self.procs:
            assert proc.poll() is None, f"{proc.args!r} exited:\n{log_path.read_text(errors='replace')[-3000:]}"

    def stop(self) -> None:
        stop_processes([proc for proc, _ in self.procs], 15)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    yield procs
    procs.stop()


def prometheus_config(tmp: Path, prom_port: int, targets: dict[str, str]) -> Path:
    """deploy/prometheus/prometheus.yml with this test's targets; jobs of services this test does
    not run (Kafka and Redis exporters, Grafana, Alertmanager) are left out."""
    config = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {j for j in jobs if j.startswith("seedloop")} == SEEDLOOP_JOBS, "update this test's targets"
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config.pop("alerting", None)
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = ["alerts.yml"]
    targets = {**targets, "prometheus": f"{HOST}:{prom_port}"}
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": [targets[job["job_name"]]]}]}
        for job in config["scrape_configs"]
        if job["job_name"] in targets
    ]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def query(base: str, expr: str) -> tuple[str, list[dict]]:
    """(error or "", result) of an instant query."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = json.loads(http_get(url))
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300]!r}", []
    if body["status"] != "success":
        return str(body.get("error")), []
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return "", [{"value": result}]
    return "", result


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_every_dashboard_query_and_alert_answers_on_a_healthy_pipeline(
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    processes: Processes,
    tmp_path: Path,
) -> None:
    prometheus_bin = binary("prometheus", "/usr/bin/prometheus")
    ensure_topics(settings)
    worker = start_worker("worker-1", SEEDLOOP_METRICS_REFRESH_S="0.5")
    # Twenty simulated minutes with a holdout (ghost views) first, so the conversion-lift panels
    # have both groups; another seed than the simulator's below, so no event id repeats.
    produce_simulated(settings, sim_seconds=1200, holdout_share=0.2, seed=101)
    opt_port, sim_port, prom_port = free_port(), free_port(), free_port()
    seedloop = [sys.executable, "-m", "seedloop"]
    processes.start(
        [*seedloop, "optimize"],
        settings_env(settings, SEEDLOOP_OPTIMIZER_PORT=str(opt_port), SEEDLOOP_OPTIMIZER_INTERVAL_S="1"),
        tmp_path / "optimizer.log",
    )
    # A modest rate: the machine running the tests is shared.
    processes.start(
        [*seedloop, "simulate", "--duration", "300"],
        settings_env(settings, SEEDLOOP_SIMULATOR_PORT=str(sim_port), SEEDLOOP_RATE="300"),
        tmp_path / "simulator.log",
    )
    config = prometheus_config(
        tmp_path,
        prom_port,
        {
            "seedloop-worker": f"{HOST}:{worker.port}",
            "seedloop-optimizer": f"{HOST}:{opt_port}",
            "seedloop-simulator": f"{HOST}:{sim_port}",
        },
    )
    processes.start(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={HOST}:{prom_port}",
        ],
        None,
        tmp_path / "prometheus.log",
    )
    base = f"http://{HOST}:{prom_port}"

    def ready() -> bool:
        try:
            return http_get(f"{base}/-/ready", 1).startswith(b"Prometheus")
        except OSError:
            return False

    wait_for(ready, 30, "Prometheus to be ready")

    queries = dashboard_queries() + alert_queries()
    empty: dict[str, str] = {}

    def all_answer() -> bool:
        processes.assert_alive()
        empty.clear()
        for where, expr in queries:
            error, result = query(base, expr)
            if error or not result:
                empty[where] = f"{error or 'no series'}: {expr}"
        return not empty

    started = time.monotonic()
    try:
        wait_for(all_answer, DEADLINE_S, "every query to return a series", interval=1.0)
    except AssertionError:
        targets = json.loads(http_get(f"{base}/api/v1/targets"))["data"]["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t.get("lastError")) for t in targets}
        pytest.fail(
            f"{len(empty)} of {len(queries)} queries return nothing on a healthy pipeline "
            f"(targets {health}):\n" + "\n".join(f"  {w}: {e}" for w, e in sorted(empty.items())),
            pytrace=False,
        )
    print(f"all {len(queries)} queries answered after {time.monotonic() - started:.0f}s")

    # Prometheus evaluates the committed rules themselves without error.
    groups = json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {name for _, name in [w.split(" ", 1) for w, _ in alert_queries()]} == set(rules)

    def evaluated() -> bool:
        groups = json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]
        return all(r["health"] == "ok" for g in groups for r in g["rules"])

    wait_for(evaluated, 10, f"every rule to evaluate with health ok: {rules}")
