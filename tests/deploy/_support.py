"""Shared helpers of the deploy tests: paths, promtool, the metric names metrics.py registers."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry

from stream_processors import metrics as metrics_module

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM_DIR = DEPLOY / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
GRAFANA_RULES = GRAFANA / "provisioning" / "alerting" / "rules.yml"
COMPOSE = ROOT / "docker-compose.yml"

INSTALL_HINT = "install Debian's prometheus package: apt-get install -y prometheus prometheus-alertmanager"


def binary(name: str, debian_path: str) -> str:
    """A Prometheus tool from Debian's packages; fails (never skips) when it is missing."""
    found = shutil.which(name) or (debian_path if Path(debian_path).is_file() else None)
    if not found:
        pytest.fail(f"{name} not found ({debian_path}): {INSTALL_HINT}", pytrace=False)
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool", "/usr/bin/promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def metric_classes() -> list[type]:
    """Every class of metrics.py that builds its metrics on a `registry` it is given (the metric
    sets; not single metric types such as BatchHistogram, which need a name too)."""

    def only_needs_registry(cls: type) -> bool:
        params = inspect.signature(cls).parameters
        required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
        return "registry" in params and set(required) <= {"registry"}

    return [
        cls
        for _, cls in inspect.getmembers(metrics_module, inspect.isclass)
        if cls.__module__ == metrics_module.__name__ and only_needs_registry(cls)
    ]


@cache
def exported_names() -> frozenset[str]:
    """Sample names the registries of metrics.py really export (counter `_total`, histogram series)."""
    names: set[str] = set()
    for cls in metric_classes():
        registry = CollectorRegistry()
        cls(registry=registry)
        for family in registry.collect():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
            elif family.type == "summary":
                names |= {family.name, f"{family.name}_sum", f"{family.name}_count", f"{family.name}_created"}
            else:
                names.add(family.name)
    return frozenset(names)


# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)


def metric_names_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (string literals, matchers, ranges, grouping removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names


def substitute_grafana_variables(expr: str) -> str:
    """Make a dashboard query plain PromQL: interval variables become 5m, others a placeholder."""
    expr = re.sub(
        r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}", "5m", expr
    )
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", "x", expr)


def load_build_dashboards() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
