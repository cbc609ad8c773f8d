"""Prometheus config and alert rules: promtool checks, unit tests, coverage of every alert."""

from __future__ import annotations

import yaml

from tests.deploy._support import (
    ALERTS,
    ALERTS_TEST,
    PROM_CONFIG,
    PROM_DIR,
    PROMETHEUS_BUILTINS,
    exported_names,
    metric_names_in,
    promtool,
)

REQUIRED_ALERTS = {
    "SeedloopRoasBelowTarget",
    "SeedloopCpaAboveTarget",
    "SeedloopOverspendPace",
    "SeedloopNoEvents",
    "SeedloopPipelineLatencyHigh",
    "SeedloopConsumerLagHigh",
    "SeedloopDeadLetterRateHigh",
    "SeedloopOptimizerStalled",
    "SeedloopTargetDown",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_config() -> None:
    result = promtool("check", "config", str(PROM_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name, cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_required_alerts_exist_with_severity_and_annotations() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].strip()) > 40, rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - quiet == set(), "alerts without a not-firing test case"


def test_alert_expressions_use_only_exported_metrics() -> None:
    valid = exported_names() | PROMETHEUS_BUILTINS
    for rule in alert_rules():
        unknown = metric_names_in(rule["expr"]) - valid
        assert not unknown, f"{rule['alert']} uses metrics metrics.py does not export: {sorted(unknown)}"
