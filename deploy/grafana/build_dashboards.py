#!/usr/bin/env python3
"""Generate seedloop's Grafana dashboards and Grafana alert rules as code.

    python deploy/grafana/build_dashboards.py          # rewrite the committed files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file differs

Dashboards are built with the `grafana-foundation-sdk` (typed builders generated from Grafana's
own schemas) and written to deploy/grafana/dashboards/*.json; Grafana loads them through
deploy/grafana/provisioning/dashboards/dashboards.yml. Alerts are Prometheus rules
(deploy/prometheus/alerts.yml) notified by Alertmanager only; the generated
deploy/grafana/provisioning/alerting/rules.yml removes the Grafana-managed copies earlier versions
provisioned (they notified every alert a second time). Every panel gets an id derived from its
title, so links to a panel stay valid when others are added or moved.

tests/deploy checks that the committed files equal what this script generates now, that every
panel's PromQL parses (promtool) and names only metrics registered in
stream_processors/metrics.py, and (test_dashboard_queries_live.py) that every panel query returns
a series from a real Prometheus scraping a healthy worker, optimizer and simulator.

Conventions of the queries:
- Campaign gauges are exported per worker for the partitions it owns: always `sum by (...)` over
  workers first, then divide (ROAS, CPA, eCPM and conversion rates are ratios of sums).
- `$window` is the rolling event-time window label ("1m", "5m", "15m", "60m"), `$model` the
  attribution model, `$campaign` a multi-value campaign selector.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m

# The panel and dashboard modules sit next to this file, which runs as a script or is loaded from
# its path (tests/deploy): either way, they import from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from grafana_campaign_dashboards import aipl_funnel, campaign_overview, creators
from grafana_ops_dashboards import optimizer_decisions, pipeline_health
from grafana_panels import DATASOURCE_UID

# DATASOURCE_UID: the provisioned datasource (provisioning/datasources/prometheus.yml) names it here.
__all__ = ["DASHBOARDS", "DATASOURCE_UID", "RETIRED_RULE_UIDS", "main", "panel_id", "render_all"]

DEPLOY = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
ALERT_RULES_FILE = DEPLOY / "grafana" / "provisioning" / "alerting" / "rules.yml"

DASHBOARDS = {
    "campaign_overview.json": campaign_overview,
    "aipl_funnel.json": aipl_funnel,
    "creators.json": creators,
    "pipeline_health.json": pipeline_health,
    "optimizer_decisions.json": optimizer_decisions,
}


def panel_id(title: str) -> int:
    """A panel's id, from its title: links to a panel (`viewPanel=<id>`) survive panels being
    added, removed or moved around it, and the generated JSON does not change when nothing did."""
    return zlib.crc32(title.encode()) % 1_000_000 + 1


def assign_panel_ids(dashboard: dash_m.Dashboard) -> None:
    """Every panel and row gets its id; titles are unique per dashboard, and so are the ids."""
    seen: dict[int, str] = {}
    for panel in dashboard.panels or []:
        for p in [panel, *(getattr(panel, "panels", None) or [])]:
            title = p.title or ""
            pid = panel_id(title)
            if pid in seen:
                raise ValueError(
                    f"{dashboard.title}: panels {seen[pid]!r} and {title!r} get id {pid}; retitle one"
                )
            seen[pid] = title
            p.id_val = pid


def render_dashboard(builder: dash_b.Dashboard) -> str:
    dashboard = builder.build()
    assign_panel_ids(dashboard)
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(dashboard)
    return encoded + "\n"


# --------------------------------------------------------------------------- Grafana alerting
# One alerting path: Prometheus evaluates deploy/prometheus/alerts.yml and Alertmanager notifies
# (deploy/alertmanager/alertmanager.yml). Grafana evaluates nothing and notifies nobody; it shows
# Prometheus' rules (the Prometheus datasource, manageAlerts) and Alertmanager's alerts and
# silences (the Alertmanager datasource). Earlier versions also provisioned Grafana-managed copies
# of every alert with a policy to the same webhook, so each alert arrived twice; Grafana keeps
# provisioned resources when their file entries go, so this file deletes them explicitly.
RETIRED_RULE_UIDS = (
    "seedloop-roas-below-target",
    "seedloop-cpa-above-target",
    "seedloop-overspend-pace",
    "seedloop-no-events",
    "seedloop-pipeline-latency-high",
    "seedloop-consumer-lag-high",
    "seedloop-campaign-metrics-stale",
    "seedloop-dead-letter-rate-high",
    "seedloop-event-time-outliers",
    "seedloop-optimizer-stalled",
)
RETIRED_CONTACT_POINT_UIDS = ("seedloop-webhook",)


def grafana_alerting() -> dict[str, Any]:
    """Grafana alerting file provisioning that removes the Grafana-managed copies of the alerts,
    their contact point, and resets the notification policy tree to Grafana's default.
    Format: https://grafana.com/docs/grafana/latest/alerting/set-up/provision-alerting-resources/file-provisioning/
    """
    return {
        "apiVersion": 1,
        "deleteRules": [{"orgId": 1, "uid": uid} for uid in RETIRED_RULE_UIDS],
        # The reset policy tree routes to Grafana's default contact point, so nothing references
        # the webhook any more when it is deleted.
        "resetPolicies": [1],
        "deleteContactPoints": [{"orgId": 1, "uid": uid} for uid in RETIRED_CONTACT_POINT_UIDS],
    }


def render_alert_rules() -> str:
    header = (
        "# GENERATED by deploy/grafana/build_dashboards.py: do not edit.\n"
        "# Grafana does not evaluate or notify seedloop's alerts: Prometheus evaluates\n"
        "# deploy/prometheus/alerts.yml and Alertmanager notifies, once per firing. This file removes\n"
        "# the Grafana-managed copies (and their contact point and policy) that earlier versions\n"
        "# provisioned, which notified the same webhook a second time.\n"
    )
    return header + yaml.safe_dump(grafana_alerting(), sort_keys=False, width=110)


# --------------------------------------------------------------------------- entry point
def render_all() -> dict[Path, str]:
    files = {DASHBOARD_DIR / name: render_dashboard(build()) for name, build in DASHBOARDS.items()}
    files[ALERT_RULES_FILE] = render_alert_rules()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(DEPLOY.parent)}")
    if stale:
        print(
            "out of date (run python deploy/grafana/build_dashboards.py):",
            *stale,
            sep="\n  ",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
