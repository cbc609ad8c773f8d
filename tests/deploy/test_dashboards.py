"""Grafana dashboards as code: no drift, every query parses and names real metrics; alert parity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy._support import (
    ALERTS,
    DASHBOARDS,
    GRAFANA_RULES,
    PROMETHEUS_BUILTINS,
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


def test_grafana_alert_rules_match_prometheus_rules() -> None:
    prometheus = {
        rule["alert"]: rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    grafana = yaml.safe_load(GRAFANA_RULES.read_text())
    assert grafana["apiVersion"] == 1
    rules = {rule["title"]: rule for group in grafana["groups"] for rule in group["rules"]}
    assert set(rules) == set(prometheus)
    uids = [rule["uid"] for rule in rules.values()]
    assert len(uids) == len(set(uids)) and all(len(uid) <= 40 for uid in uids)
    for name, rule in rules.items():
        query = next(d for d in rule["data"] if d["refId"] == "A")
        assert query["datasourceUid"] == "prometheus"
        assert query["model"]["expr"].strip() == prometheus[name]["expr"].strip(), name
        assert rule["for"] == prometheus[name]["for"], name
        assert rule["labels"] == prometheus[name]["labels"], name
        assert rule["condition"] in {d["refId"] for d in rule["data"]}, name
        assert set(rule["annotations"]) == set(prometheus[name]["annotations"]), name
