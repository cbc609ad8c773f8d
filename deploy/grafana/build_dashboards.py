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
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import text as text_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

DEPLOY = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = DEPLOY / "grafana" / "dashboards"
ALERT_RULES_FILE = DEPLOY / "grafana" / "provisioning" / "alerting" / "rules.yml"
PROMETHEUS_RULES_FILE = DEPLOY / "prometheus" / "alerts.yml"

# The datasource provisioned by deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
DS = dash_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
FOLDER_UID = "seedloop"

# Spend, GMV and bids are in the scenario's base currency, yuan (seeds/campaigns.json: "CNY").
MONEY = "currencyCNY"

WINDOWS = ("1m", "5m", "15m", "60m")
MODELS = ("last", "first", "linear", "time_decay", "position", "markov")
KINDS = ("follow", "add_to_cart", "checkout")

# Selectors shared by campaign queries.
C = 'campaign=~"$campaign",window="$window"'
LOYAL = 'seedloop_campaign_loyalty_users{campaign=~"$campaign",segment="%s"}'
CM = f'{C},model="$model"'


# --------------------------------------------------------------------------- small helpers
def q(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prom_b.Dataquery:
    query = prom_b.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    return query.instant() if instant else query.range()


def timeseries(
    title: str,
    exprs: list[tuple[str, str]],
    unit: str = "short",
    description: str = "",
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_m.LegendDisplayMode.TABLE)
            .placement(common_m.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "mean"])
        )
    )
    if description:
        panel = panel.description(description)
    if stacked:
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    for i, (expr, legend) in enumerate(exprs):
        panel = panel.with_target(q(expr, legend, ref=chr(ord("A") + i)))
    return panel


def stat(
    title: str, expr: str, unit: str = "short", description: str = "", w: int = 6, h: int = 4
) -> stat_b.Panel:
    panel = (
        stat_b.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .color_mode(common_m.BigValueColorMode.VALUE)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(q(expr, "__auto", instant=False))
    )
    return panel.description(description) if description else panel


def table(
    title: str, exprs: list[tuple[str, str]], w: int = 24, h: int = 8, description: str = ""
) -> table_b.Panel:
    panel = table_b.Panel().title(title).datasource(DS).span(w).height(h)
    if description:
        panel = panel.description(description)
    for i, (expr, legend) in enumerate(exprs):
        panel = panel.with_target(
            q(expr, legend, ref=chr(ord("A") + i), instant=True).format(prom_m.PromQueryFormat.TABLE)
        )
    # One row per campaign, one column per query.
    return panel.with_transformation(
        dash_m.DataTransformerConfig(id_val="merge", options={})
    ).with_transformation(
        dash_m.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True},
                "renameByName": {
                    f"Value #{chr(ord('A') + i)}": legend for i, (_, legend) in enumerate(exprs)
                },
            },
        )
    )


def note(title: str, content: str, w: int = 24, h: int = 3) -> text_b.Panel:
    return text_b.Panel().title(title).mode(text_b.text.TextMode.MARKDOWN).content(content).span(w).height(h)


def campaign_variable() -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable("campaign")
        .label("Campaign")
        .datasource(DS)
        .query("label_values(seedloop_campaign_spend, campaign)")
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


def custom_variable(name: str, label: str, values: tuple[str, ...], default: str) -> dash_b.CustomVariable:
    return (
        dash_b.CustomVariable(name)
        .label(label)
        .values(",".join(values))
        .current(dash_m.VariableOption(selected=True, text=default, value=default))
    )


def window_variable() -> dash_b.CustomVariable:
    return custom_variable("window", "Window", WINDOWS, "15m")


def model_variable() -> dash_b.CustomVariable:
    return custom_variable("model", "Attribution model", MODELS, "last")


def base(uid: str, title: str, description: str, tags: list[str]) -> dash_b.Dashboard:
    return (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["seedloop", *tags])
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
    )


def ratio(num: str, den: str, by: str = "campaign") -> str:
    """sum-then-divide, the only correct way with per-worker partial figures."""
    return f"sum by ({by}) ({num})\n/\nsum by ({by}) ({den})"


# --------------------------------------------------------------------------- dashboards
def campaign_overview() -> dash_b.Dashboard:
    spend = f"seedloop_campaign_spend{{{C}}}"
    gmv = f"seedloop_campaign_gmv{{{CM}}}"
    views = f"seedloop_campaign_views{{{C}}}"
    checkouts = f'seedloop_campaign_conversions{{{CM},kind="checkout"}}'
    return (
        base(
            "seedloop-campaign-overview",
            "seedloop / Campaign overview",
            "Live spend, GMV and efficiency (ROAS, CPA, eCPM) per campaign against its target, over a "
            "rolling event-time window. Ratios divide sums over all workers.",
            ["campaigns"],
        )
        .with_variable(campaign_variable())
        .with_variable(window_variable())
        .with_variable(model_variable())
        .with_row(dash_b.Row("Totals over the selected campaigns"))
        .with_panel(stat("Spend ($window)", f"sum({spend})", MONEY))
        .with_panel(stat("Attributed GMV ($window, $model)", f"sum({gmv})", MONEY))
        .with_panel(stat("ROAS ($window, $model)", f"sum({gmv}) / sum({spend})", "none"))
        .with_panel(stat("Views ($window)", f"sum({views})", "short"))
        .with_row(dash_b.Row("Efficiency against target"))
        .with_panel(
            timeseries(
                "ROAS vs target",
                [
                    (ratio(gmv, spend), "{{campaign}} ROAS"),
                    (
                        'max by (campaign) (seedloop_campaign_target{campaign=~"$campaign",'
                        'target_kind="roas"})',
                        "{{campaign}} target",
                    ),
                ],
                "none",
                "Attributed GMV / spend. SeedloopRoasBelowTarget fires under 80% of target for 15m.",
            )
        )
        .with_panel(
            timeseries(
                "CPA vs target",
                [
                    (ratio(spend, checkouts), "{{campaign}} CPA"),
                    (
                        'max by (campaign) (seedloop_campaign_target{campaign=~"$campaign",'
                        'target_kind="cpa"})',
                        "{{campaign}} target",
                    ),
                ],
                MONEY,
                "Spend per attributed checkout. The SeedloopCpaAboveTarget alert fires over 125% of target.",
            )
        )
        .with_panel(
            timeseries(
                "eCPM",
                [(f"1000 * {ratio(spend, views)}", "{{campaign}}")],
                MONEY,
                "Spend per thousand views.",
            )
        )
        .with_panel(
            timeseries(
                "Budget pace",
                [
                    (
                        'max by (campaign) (seedloop_campaign_budget_pace{campaign=~"$campaign"})',
                        "{{campaign}}",
                    )
                ],
                "percentunit",
                "Spend today / plan for the time of day (1 = on plan). Alert over 120%.",
            )
        )
        .with_row(dash_b.Row("Volume"))
        .with_panel(
            timeseries(
                "Spend by campaign",
                [(f"sum by (campaign) ({spend})", "{{campaign}}")],
                MONEY,
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Spend by channel (KBFS)",
                [(f"sum by (channel) ({spend})", "{{channel}}")],
                MONEY,
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Attributed GMV by campaign",
                [(f"sum by (campaign) ({gmv})", "{{campaign}}")],
                MONEY,
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Daily budget",
                [
                    (
                        'max by (campaign) (seedloop_campaign_daily_budget{campaign=~"$campaign"})',
                        "{{campaign}}",
                    )
                ],
                MONEY,
            )
        )
        .with_row(dash_b.Row("Attribution models compared"))
        .with_panel(
            timeseries(
                "ROAS by attribution model",
                [
                    (
                        f"sum by (model) (seedloop_campaign_gmv{{{C}}})\n/ ignoring (model) group_left\n"
                        f"sum(seedloop_campaign_spend{{{C}}})",
                        "{{model}}",
                    )
                ],
                "none",
                "The same spend credited under each model; the Markov model is data-driven.",
                w=24,
            )
        )
    )


def aipl_funnel() -> dash_b.Dashboard:
    views = f"seedloop_campaign_views{{{C}}}"
    spend = f"seedloop_campaign_spend{{{C}}}"
    reach = f"seedloop_campaign_reach{{{C}}}"
    engaged = f"seedloop_campaign_engaged_reach{{{C}}}"
    channel_reach = f"seedloop_campaign_channel_reach{{{C}}}"

    def conv(kind: str) -> str:
        return f'seedloop_campaign_conversions{{{CM},kind="{kind}"}}'

    dash = (
        base(
            "seedloop-aipl-funnel",
            "seedloop / AIPL funnel",
            "Awareness (views, reach) -> Interest (engaged users, follows) -> Purchase (add-to-cart, "
            "checkout) -> Loyalty (repeat buyers): volumes, step conversion rates and cost per step.",
            ["campaigns", "funnel"],
        )
        .with_variable(campaign_variable())
        .with_variable(window_variable())
        .with_variable(model_variable())
        .with_row(dash_b.Row("Funnel volume ($window, $model)"))
        .with_panel(stat("A: views", f"sum({views})", w=4))
        .with_panel(stat("A: reach", f"sum({reach})", w=4))
        .with_panel(stat("I: engaged users", f"sum({engaged})", w=4))
        .with_panel(stat("I: follows", f"sum({conv('follow')})", w=4))
        .with_panel(stat("P: add to cart", f"sum({conv('add_to_cart')})", w=4))
        .with_panel(stat("P: checkouts", f"sum({conv('checkout')})", w=4))
        .with_panel(
            table(
                "Funnel by campaign",
                [
                    (f"sum by (campaign) ({views})", "views"),
                    (f"sum by (campaign) ({reach})", "reach"),
                    (f"sum by (campaign) ({engaged})", "engaged users"),
                    (f"sum by (campaign) ({conv('follow')})", "follows"),
                    (f"sum by (campaign) ({conv('add_to_cart')})", "add to cart"),
                    (f"sum by (campaign) ({conv('checkout')})", "checkouts"),
                    (f"sum by (campaign) (seedloop_campaign_gmv{{{CM}}})", "GMV"),
                    (f"sum by (campaign) ({spend})", "spend"),
                ],
            )
        )
        .with_row(dash_b.Row("Step conversion rates"))
        .with_panel(
            timeseries(
                "Follow rate (follows / views)",
                [(ratio(conv("follow"), views), "{{campaign}}")],
                "percentunit",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Add-to-cart rate (carts / views)",
                [(ratio(conv("add_to_cart"), views), "{{campaign}}")],
                "percentunit",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Checkout rate (checkouts / views)",
                [(ratio(conv("checkout"), views), "{{campaign}}")],
                "percentunit",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cart -> checkout",
                [(ratio(conv("checkout"), conv("add_to_cart")), "{{campaign}}")],
                "percentunit",
                w=24,
            )
        )
        .with_row(dash_b.Row("Cost per step"))
        .with_panel(
            timeseries(
                "Cost per follow", [(ratio(spend, conv("follow")), "{{campaign}}")], MONEY, w=8
            )
        )
        .with_panel(
            timeseries(
                "Cost per add-to-cart",
                [(ratio(spend, conv("add_to_cart")), "{{campaign}}")],
                MONEY,
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cost per checkout (CPA)",
                [(ratio(spend, conv("checkout")), "{{campaign}}")],
                MONEY,
                w=8,
            )
        )
        .with_row(dash_b.Row("Awareness: reach and frequency ($window)"))
        .with_panel(
            timeseries(
                "Reach (unique users)",
                [(f"sum by (campaign) ({reach})", "{{campaign}}")],
                "short",
                "HyperLogLog estimate per partition; users are partitioned by user_id, so the sum over "
                "workers is the reach.",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Frequency (views per reached user)",
                [(ratio(views, reach), "{{campaign}}")],
                "short",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cost per thousand reached users",
                [(f"1000 * {ratio(spend, reach)}", "{{campaign}}")],
                MONEY,
                w=8,
            )
        )
        .with_row(dash_b.Row("Interest: engagement"))
        .with_panel(
            timeseries(
                "Engaged users / reach",
                [(ratio(engaged, reach), "{{campaign}}")],
                "percentunit",
                "Users with an engaged view (opened, liked, commented) per reached user.",
                w=12,
            )
        )
        .with_panel(
            timeseries(
                "Reach by channel (KBFS)",
                [(f"sum by (channel) ({channel_reach})", "{{channel}}")],
                "short",
                "Per channel; a user reached on two channels counts on both, so these do not add up to "
                "the campaign reach.",
                w=12,
            )
        )
        .with_row(dash_b.Row("Loyalty per campaign (all-time distinct users)"))
        .with_panel(
            table(
                "Loyalty by campaign",
                [
                    (f"sum by (campaign) ({LOYAL % 'buyers'})", "buyers"),
                    (f"sum by (campaign) ({LOYAL % 'repeat_buyers'})", "repeat buyers"),
                    (f"sum by (campaign) ({LOYAL % 'followers'})", "followers"),
                    (f"sum by (campaign) ({LOYAL % 'retained_followers'})", "retained followers"),
                ],
                description="Buyers: users with a checkout credited to the campaign (it had an eligible "
                "touch); repeat buyers: two or more such checkouts. Followers: users whose follow was "
                "credited to it; retained: active again SEEDLOOP_RETENTION_S (default 1 day) after.",
                w=12,
            )
        )
        .with_panel(
            timeseries(
                "Repeat rate and follower retention",
                [
                    (ratio(LOYAL % "repeat_buyers", LOYAL % "buyers"), "{{campaign}} repeat"),
                    (ratio(LOYAL % "retained_followers", LOYAL % "followers"), "{{campaign}} retained"),
                ],
                "percentunit",
                w=12,
            )
        )
        .with_row(dash_b.Row("Loyalty (all-time, platform-wide)"))
        .with_panel(stat("Buyers", "sum(seedloop_buyers)", "short", w=8))
        .with_panel(stat("Repeat buyers", "sum(seedloop_repeat_buyers)", "short", w=8))
        .with_panel(
            stat(
                "Repeat rate",
                "sum(seedloop_repeat_buyers) / sum(seedloop_buyers)",
                "percentunit",
                "Buyers with two or more checkouts, whatever campaign they bought through.",
                w=8,
            )
        )
    )
    return dash


def creators() -> dash_b.Dashboard:
    # Per creator (top N by all-time spend, the rest `other`), then the creator-driven channel (KOL
    # notes) against the other KBFS channels, per campaign.
    kw = 'creator=~"$creator",window="$window"'
    k_spend = f"seedloop_creator_spend{{{kw}}}"
    k_gmv = f'seedloop_creator_gmv{{{kw},model="$model"}}'
    k_checkouts = f'seedloop_creator_checkouts{{{kw},model="$model"}}'
    k_views = f"seedloop_creator_views{{{kw}}}"
    ck = 'campaign=~"$campaign",window="$window",channel=~"$channel"'
    views = f"seedloop_campaign_views{{{ck}}}"
    spend = f"seedloop_campaign_spend{{{ck}}}"
    gmv = f'seedloop_campaign_gmv{{{ck},model="$model"}}'
    follows = f'seedloop_campaign_conversions{{{ck},model="$model",kind="follow"}}'
    return (
        base(
            "seedloop-creators",
            "seedloop / Creators & channels",
            "Per creator (KOL/KOS): spend, attributed checkouts and GMV, followers; then KOL notes against "
            "brand, feed and search ads per channel.",
            ["creators", "channels"],
        )
        .with_variable(campaign_variable())
        .with_variable(
            dash_b.QueryVariable("creator")
            .label("Creator")
            .datasource(DS)
            .query("label_values(seedloop_creator_spend, creator)")
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_variable(
            custom_variable("channel", "Channel", ("kol", "brand", "feed", "search"), "kol")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(window_variable())
        .with_variable(model_variable())
        .with_row(dash_b.Row("Creators ($window, $model)"))
        .with_panel(
            table(
                "Creators",
                [
                    (f"sum by (creator) ({k_spend})", "spend"),
                    (f"sum by (creator) ({k_views})", "views"),
                    (f"sum by (creator) ({k_checkouts})", "checkouts"),
                    (f"sum by (creator) ({k_gmv})", "GMV"),
                    (ratio(k_gmv, k_spend, "creator"), "ROAS"),
                    ('sum by (creator) (seedloop_creator_followers{creator=~"$creator"})', "followers"),
                ],
                description="Top creators by all-time spend (SEEDLOOP_METRICS_TOP_N); the rest are `other`.",
            )
        )
        .with_panel(
            timeseries(
                "Spend by creator", [(f"sum by (creator) ({k_spend})", "{{creator}}")], MONEY, w=8
            )
        )
        .with_panel(
            timeseries(
                "Attributed GMV by creator",
                [(f"sum by (creator) ({k_gmv})", "{{creator}}")],
                MONEY,
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cost per attributed checkout by creator",
                [(ratio(k_spend, k_checkouts, "creator"), "{{creator}}")],
                MONEY,
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Followers (all-time)",
                [('sum by (creator) (seedloop_creator_followers{creator=~"$creator"})', "{{creator}}")],
                "short",
                w=24,
            )
        )
        .with_row(dash_b.Row("Channels"))
        .with_panel(
            timeseries("Follows by channel", [(f"sum by (channel) ({follows})", "{{channel}}")], w=12)
        )
        .with_panel(
            timeseries(
                "Cost per follow by channel",
                [(ratio(spend, follows, "channel"), "{{channel}}")],
                MONEY,
                w=12,
            )
        )
        .with_panel(
            timeseries("ROAS by channel", [(ratio(gmv, spend, "channel"), "{{channel}}")], "none", w=12)
        )
        .with_panel(
            timeseries(
                "Follow rate by channel",
                [(ratio(follows, views, "channel"), "{{channel}}")],
                "percentunit",
                w=12,
            )
        )
        .with_panel(
            table(
                "Campaign x channel",
                [
                    (f"sum by (campaign, channel) ({views})", "views"),
                    (f"sum by (campaign, channel) ({follows})", "follows"),
                    (f"sum by (campaign, channel) ({spend})", "spend"),
                    (f"sum by (campaign, channel) ({gmv})", "GMV"),
                ],
            )
        )
        .with_panel(
            timeseries(
                "Current bid by channel",
                [
                    (
                        'avg by (channel) (seedloop_bid{campaign=~"$campaign",channel=~"$channel"})',
                        "{{channel}}",
                    )
                ],
                MONEY,
                w=24,
            )
        )
    )


def pipeline_health() -> dash_b.Dashboard:
    ri = "$__rate_interval"
    return (
        base(
            "seedloop-pipeline-health",
            "seedloop / Pipeline health",
            "Throughput, dead letters, duplicates and replays, event-to-Redis latency, consumer lag and "
            "partition ownership of the Faust workers; production by the simulator.",
            ["pipeline"],
        )
        .with_row(dash_b.Row("Throughput"))
        .with_panel(stat("Consumed / s", f"sum(rate(seedloop_events_consumed_total[{ri}]))", "ops"))
        .with_panel(stat("Applied / s", f"sum(rate(seedloop_events_applied_total[{ri}]))", "ops"))
        .with_panel(stat("Dead letters / s", f"sum(rate(seedloop_dead_letters_total[{ri}]))", "ops"))
        .with_panel(
            stat(
                "Targets down",
                'count(up{job=~"seedloop-.*"} == 0) or vector(0)',
                "short",
                "Scrape targets of the seedloop jobs that do not answer (0 when all do); "
                "SeedloopTargetDown names each one after 2 minutes.",
            )
        )
        .with_panel(
            timeseries(
                "Consumed by topic",
                [(f"sum by (topic) (rate(seedloop_events_consumed_total[{ri}]))", "{{topic}}")],
                "ops",
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Applied by action",
                [(f"sum by (action) (rate(seedloop_events_applied_total[{ri}]))", "{{action}}")],
                "ops",
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Consumed by worker",
                [(f"sum by (instance) (rate(seedloop_events_consumed_total[{ri}]))", "{{instance}}")],
                "ops",
            )
        )
        .with_panel(
            timeseries(
                "Produced by the simulator",
                [
                    (f"sum by (topic) (rate(seedloop_sim_events_produced_total[{ri}]))", "{{topic}}"),
                    (
                        f"sum by (topic) (rate(seedloop_sim_delivery_failures_total[{ri}]))",
                        "{{topic}} failed",
                    ),
                ],
                "ops",
            )
        )
        .with_row(dash_b.Row("Data quality"))
        .with_panel(
            timeseries(
                "Dead letters by reason",
                [(f"sum by (reason) (rate(seedloop_dead_letters_total[{ri}]))", "{{reason}}")],
                "ops",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Duplicates and replays",
                [
                    (
                        f"sum by (action) (rate(seedloop_duplicate_events_total[{ri}]))",
                        "duplicate {{action}}",
                    ),
                    (f"sum by (topic) (rate(seedloop_replayed_events_total[{ri}]))", "replayed {{topic}}"),
                ],
                "ops",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Late events",
                [(f"sum by (action) (rate(seedloop_late_events_total[{ri}]))", "{{action}}")],
                "ops",
                w=8,
            )
        )
        .with_row(dash_b.Row("Latency and lag"))
        .with_panel(
            timeseries(
                "Event -> Redis latency",
                [
                    (
                        f"histogram_quantile({p}, sum by (le) "
                        f"(rate(seedloop_event_to_redis_latency_seconds_bucket[{ri}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.95, 0.99)
                ],
                "s",
                "The SeedloopPipelineLatencyHigh alert fires when p99 stays above 5 s.",
            )
        )
        .with_panel(
            timeseries(
                "Batch apply time",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le, instance) "
                        f"(rate(seedloop_batch_apply_seconds_bucket[{ri}])))",
                        "p99 {{instance}}",
                    ),
                    (
                        f"sum(rate(seedloop_batch_apply_seconds_sum[{ri}])) / "
                        f"sum(rate(seedloop_batch_apply_seconds_count[{ri}]))",
                        "mean",
                    ),
                ],
                "s",
            )
        )
        .with_panel(
            timeseries(
                "Consumer lag by topic",
                [("sum by (topic) (max by (topic, partition) (seedloop_consumer_lag))", "{{topic}}")],
                "short",
                "Max per partition first: two workers may report one after a rebalance.",
            )
        )
        .with_panel(
            timeseries(
                "Seconds since last applied batch",
                [("time() - seedloop_last_apply_timestamp_seconds", "{{instance}}")],
                "s",
            )
        )
        .with_panel(
            timeseries(
                "Campaign gauges: seconds since refresh, refresh p99",
                [
                    ("time() - seedloop_metrics_refresh_timestamp_seconds", "age {{instance}}"),
                    (
                        f"histogram_quantile(0.99, sum by (le, instance) "
                        f"(rate(seedloop_metrics_refresh_seconds_bucket[{ri}])))",
                        "p99 {{instance}}",
                    ),
                ],
                "s",
                "Each worker re-reads its partitions' windows and reach from Redis every "
                "SEEDLOOP_METRICS_REFRESH_S.",
            )
        )
        .with_panel(
            timeseries(
                "Owned partitions", [("seedloop_owned_partitions", "{{instance}}")], "short", stacked=True
            )
        )
        .with_panel(
            timeseries(
                "Event-time watermark (simulated clock)",
                [("max by (instance) (seedloop_event_time_watermark_seconds) * 1000", "{{instance}}")],
                "dateTimeAsIso",
            )
        )
    )


def optimizer_decisions() -> dash_b.Dashboard:
    ri = "$__rate_interval"
    cc = 'campaign=~"$campaign"'
    return (
        base(
            "seedloop-optimizer-decisions",
            "seedloop / Optimizer decisions",
            "What the bid optimizer saw, what it decided and why: bids, observed efficiency against targets, "
            "decisions by reason, control rounds and published adjustments.",
            ["optimizer"],
        )
        .with_variable(campaign_variable())
        .with_panel(
            stat(
                "Seconds since last round",
                "time() - max(seedloop_optimizer_last_round_timestamp_seconds)",
                "s",
                "The SeedloopOptimizerStalled alert fires after 300 s.",
            )
        )
        .with_panel(stat("Rounds / min", f"60 * sum(rate(seedloop_optimizer_rounds_total[{ri}]))", "short"))
        .with_panel(
            stat(
                "Adjustments published / min",
                f"60 * sum(rate(seedloop_bid_adjustments_published_total[{ri}]))",
                "short",
            )
        )
        .with_panel(
            stat(
                "Adjustments applied by the scheduler / min",
                f"60 * sum(rate(seedloop_sim_bid_adjustments_applied_total[{ri}]))",
                "short",
            )
        )
        .with_panel(
            timeseries(
                "Bids",
                [(f"max by (campaign, channel) (seedloop_bid{{{cc}}})", "{{campaign}} / {{channel}}")],
                MONEY,
                w=24,
            )
        )
        .with_panel(
            timeseries(
                "Observed vs target: ROAS",
                [
                    (
                        f"max by (campaign, channel) "
                        f'(seedloop_optimizer_observed{{{cc},target_kind="roas"}})',
                        "{{campaign}} / {{channel}} observed",
                    ),
                    (
                        f'max by (campaign) (seedloop_campaign_target{{{cc},target_kind="roas"}})',
                        "{{campaign}} target",
                    ),
                ],
                "none",
            )
        )
        .with_panel(
            timeseries(
                "Observed vs target: CPA",
                [
                    (
                        f'max by (campaign, channel) (seedloop_optimizer_observed{{{cc},target_kind="cpa"}})',
                        "{{campaign}} / {{channel}} observed",
                    ),
                    (
                        f'max by (campaign) (seedloop_campaign_target{{{cc},target_kind="cpa"}})',
                        "{{campaign}} target",
                    ),
                ],
                MONEY,
            )
        )
        .with_panel(
            timeseries(
                "Decisions by reason",
                [
                    (
                        f"sum by (reason) (increase(seedloop_optimizer_decisions_total{{{cc}}}[{ri}]))",
                        "{{reason}}",
                    )
                ],
                "short",
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Budget pace",
                [(f"max by (campaign) (seedloop_campaign_budget_pace{{{cc}}})", "{{campaign}}")],
                "percentunit",
            )
        )
        .with_panel(
            table(
                "Latest decision inputs",
                [
                    (f"max by (campaign, channel) (seedloop_bid{{{cc}}})", "bid"),
                    (
                        f"max by (campaign, channel, target_kind) (seedloop_optimizer_observed{{{cc}}})",
                        "observed",
                    ),
                    (
                        f"sum by (campaign, channel) "
                        f"(increase(seedloop_optimizer_decisions_total{{{cc}}}[1h]))",
                        "decisions (1h)",
                    ),
                ],
            )
        )
    )


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
                raise ValueError(f"{dashboard.title}: panels {seen[pid]!r} and {title!r} get id {pid}; retitle one")
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
