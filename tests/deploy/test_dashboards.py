"""Grafana dashboards as code: no drift, every query parses and names real metrics, stable panel
ids, money in yuan; Grafana evaluates and notifies no alert (Prometheus and Alertmanager do)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy._support import (
    ALERTMANAGER_CONFIG,
    DASHBOARDS,
    GRAFANA,
    GRAFANA_RULES,
    PROMETHEUS_BUILTINS,
    ROOT,
    exported_names,
    load_build_dashboards,
    metric_names_in,
    promtool,
    substitute_grafana_variables,
)

EXPECTED_DASHBOARDS = {
    "campaign_overview.json",
    "aipl_funnel.json",
    "creators.json",
    "pipeline_health.json",
    "optimizer_decisions.json",
}


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def queries() -> list[tuple[str, str]]:
    """(where, expr) of every panel target of every dashboard."""
    found = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"{name} / {panel.get('title')} / {target.get('refId')}", target["expr"]))
    return found


def test_committed_files_equal_generated() -> None:
    module = load_build_dashboards()
    stale = [
        str(path)
        for path, text in module.render_all().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"out of date, run `python deploy/grafana/build_dashboards.py`: {stale}"
    committed = {path.name for path in DASHBOARDS.glob("*.json")}
    assert committed == set(module.DASHBOARDS), "a dashboard JSON without a builder (or the reverse)"


def test_expected_dashboards_with_unique_uids() -> None:
    found = dashboards()
    assert set(found) == EXPECTED_DASHBOARDS
    uids = [d["uid"] for d in found.values()]
    assert len(uids) == len(set(uids))
    for name, dashboard in found.items():
        assert panels(dashboard), name
        for panel in panels(dashboard):
            if panel.get("targets"):
                assert panel["datasource"]["uid"] == "prometheus", (name, panel.get("title"))


def test_every_panel_query_parses(tmp_path: Path) -> None:
    found = queries()
    assert len(found) > 40
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [
                    {"record": f"seedloop:dashboard_query_{i}", "expr": substitute_grafana_variables(expr)}
                    for i, (_, expr) in enumerate(found)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = promtool("check", "rules", str(path))
    if result.returncode != 0:
        # Point at the panel: promtool names the rule index.
        index = {f"seedloop:dashboard_query_{i}": where for i, (where, _) in enumerate(found)}
        output = result.stdout + result.stderr
        culprits = [where for rec, where in index.items() if re.search(rf"\b{rec}\b", output)]
        pytest.fail(f"PromQL does not parse: {culprits or ''}\n{output}")


def test_every_panel_names_only_exported_metrics() -> None:
    valid = exported_names() | PROMETHEUS_BUILTINS
    problems = []
    for where, expr in queries():
        names = metric_names_in(substitute_grafana_variables(expr))
        assert names, f"{where}: no metric in {expr!r}"
        if names - valid:
            problems.append(f"{where}: {sorted(names - valid)}")
    for name, dashboard in dashboards().items():
        for variable in dashboard.get("templating", {}).get("list", []):
            m = re.match(r"label_values\((\w+)", str(variable.get("query", "")))
            if m and m.group(1) not in valid:
                problems.append(f"{name} / variable {variable['name']}: {m.group(1)}")
    assert not problems, "metrics that stream_processors/metrics.py does not export:\n" + "\n".join(problems)


def test_metric_name_extraction() -> None:
    assert metric_names_in(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b c", y=~"d"}[5m]))) > 1e-3 '
        "and on (campaign) group_left (channel) b_total offset 5m / ignoring (model) c unless bool d"
    ) == {"a_bucket", "b_total", "c", "d"}
    assert substitute_grafana_variables('rate(x{c=~"$campaign"}[$__rate_interval])') == 'rate(x{c=~"x"}[5m])'


def test_every_panel_has_a_stable_unique_id() -> None:
    module = load_build_dashboards()
    for name, dashboard in dashboards().items():
        ids = [panel.get("id") for panel in panels(dashboard)]
        assert all(isinstance(i, int) and i > 0 for i in ids), (name, ids)
        assert len(ids) == len(set(ids)), name
        # Derived from the title, so moving or adding panels does not change the others' ids.
        for panel in panels(dashboard):
            assert panel["id"] == module.panel_id(panel["title"]), (name, panel["title"])


def test_money_is_shown_in_yuan() -> None:
    currencies = {c["currency"] for c in json.loads((ROOT / "seeds" / "campaigns.json").read_text())}
    assert currencies == {"CNY"}, "the dashboards' money unit is currencyCNY; change MONEY in the builder"
    units = [
        (name, panel["title"], panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
    ]
    money = [u for u in units if u[2].startswith("currency")]
    assert len(money) >= 19
    assert {u[2] for u in money} == {"currencyCNY"}, [u for u in money if u[2] != "currencyCNY"]


def test_grafana_evaluates_and_notifies_no_alert() -> None:
    """One alerting path: Prometheus evaluates, Alertmanager notifies. Grafana provisions no alert
    rule, contact point or policy (it would notify every alert a second time), and removes the
    copies earlier versions provisioned."""
    module = load_build_dashboards()
    provisioned = [
        yaml.safe_load(path.read_text()) for path in sorted(GRAFANA_RULES.parent.glob("*.y*ml"))
    ]
    assert provisioned, GRAFANA_RULES.parent
    for doc in provisioned:
        assert doc["apiVersion"] == 1
        for key in ("groups", "contactPoints", "policies", "templates", "muteTimes"):
            assert not doc.get(key), f"Grafana alerting provisions {key}: alerts would be notified twice"
    rules = yaml.safe_load(GRAFANA_RULES.read_text())
    assert {r["uid"] for r in rules["deleteRules"]} == set(module.RETIRED_RULE_UIDS)
    assert rules["resetPolicies"] == [1]
    assert {c["uid"] for c in rules["deleteContactPoints"]} == {"seedloop-webhook"}
    # The Alertmanager datasource shows Alertmanager's alerts; Grafana forwards none of its own.
    datasources = [
        ds
        for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
        for ds in yaml.safe_load(path.read_text())["datasources"]
    ]
    am = [ds for ds in datasources if ds["type"] == "alertmanager"]
    assert len(am) == 1 and am[0]["jsonData"]["handleGrafanaManagedAlerts"] is False
    prom = next(ds for ds in datasources if ds["uid"] == "prometheus")
    assert prom["jsonData"]["alertmanagerUid"] == am[0]["uid"]
    # Every Prometheus alert reaches the one receiver, through one route.
    am_config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = [am_config["route"], *am_config["route"].get("routes", [])]
    assert {r["receiver"] for r in routes} == {r["name"] for r in am_config["receivers"]}
    assert all(not r.get("continue") for r in routes), "a matched alert must not go on to a second route"
