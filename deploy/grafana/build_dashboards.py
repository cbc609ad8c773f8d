#!/usr/bin/env python3
"""Generate seedloop's Grafana dashboards and Grafana alert rules as code.

    python deploy/grafana/build_dashboards.py          # rewrite the committed files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a committed file differs

Dashboards are built with the `grafana-foundation-sdk` (typed builders generated from Grafana's
own schemas) and written to deploy/grafana/dashboards/*.json; Grafana loads them through
deploy/grafana/provisioning/dashboards/dashboards.yml. The Grafana-managed alert rules
(deploy/grafana/provisioning/alerting/rules.yml) are derived from the Prometheus rules in
deploy/prometheus/alerts.yml, so the two alerting paths cannot drift apart.

tests/deploy checks that the committed files equal what this script generates now, that every
panel's PromQL parses (promtool) and that it names only metrics registered in
stream_processors/metrics.py.

Conventions of the queries:
- Campaign gauges are exported per worker for the partitions it owns: always `sum by (...)` over
  workers first, then divide (ROAS, CPA, eCPM and conversion rates are ratios of sums).
- `$window` is the rolling event-time window label ("1m", "5m", "15m", "60m"), `$model` the
  attribution model, `$campaign` a multi-value campaign selector.
"""

from __future__ import annotations

import argparse
import sys
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
        .with_panel(stat("Spend ($window)", f"sum({spend})", "currencyUSD"))
        .with_panel(stat("Attributed GMV ($window, $model)", f"sum({gmv})", "currencyUSD"))
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
                "currencyUSD",
                "Spend per attributed checkout. The SeedloopCpaAboveTarget alert fires over 125% of target.",
            )
        )
        .with_panel(
            timeseries(
                "eCPM",
                [(f"1000 * {ratio(spend, views)}", "{{campaign}}")],
                "currencyUSD",
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
                "currencyUSD",
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Spend by channel (KBFS)",
                [(f"sum by (channel) ({spend})", "{{channel}}")],
                "currencyUSD",
                stacked=True,
            )
        )
        .with_panel(
            timeseries(
                "Attributed GMV by campaign",
                [(f"sum by (campaign) ({gmv})", "{{campaign}}")],
                "currencyUSD",
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
                "currencyUSD",
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
                "Cost per follow", [(ratio(spend, conv("follow")), "{{campaign}}")], "currencyUSD", w=8
            )
        )
        .with_panel(
            timeseries(
                "Cost per add-to-cart",
                [(ratio(spend, conv("add_to_cart")), "{{campaign}}")],
                "currencyUSD",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cost per checkout (CPA)",
                [(ratio(spend, conv("checkout")), "{{campaign}}")],
                "currencyUSD",
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
                "currencyUSD",
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
                "Spend by creator", [(f"sum by (creator) ({k_spend})", "{{creator}}")], "currencyUSD", w=8
            )
        )
        .with_panel(
            timeseries(
                "Attributed GMV by creator",
                [(f"sum by (creator) ({k_gmv})", "{{creator}}")],
                "currencyUSD",
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Cost per attributed checkout by creator",
                [(ratio(k_spend, k_checkouts, "creator"), "{{creator}}")],
                "currencyUSD",
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
                "currencyUSD",
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
                "currencyUSD",
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
                "Targets up",
                'sum(up{job=~"seedloop-.*"})',
                "short",
                "Scrape targets of the seedloop jobs that answer.",
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
                "currencyUSD",
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
                "currencyUSD",
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


def render_dashboard(builder: dash_b.Dashboard) -> str:
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(builder.build())
    return encoded + "\n"


# --------------------------------------------------------------------------- Grafana alert rules
def _grafana_template(text: str) -> str:
    # Prometheus' `$value` is the alert expression's value; Grafana exposes it per query refId.
    return text.replace("$value", "$values.A.Value")


def grafana_alert_rules() -> dict[str, Any]:
    """Grafana file-provisioned alert rules equivalent to deploy/prometheus/alerts.yml.

    Each Prometheus alert expression already filters to the series that breach (a PromQL comparison),
    so query A is the same expression, and condition B is true for every series A returns
    (`is_number || is_inf`: a CPA with zero checkouts is +Inf). No data means no breach (OK).
    Format: https://grafana.com/docs/grafana/latest/alerting/set-up/provision-alerting-resources/file-provisioning/
    """
    prom = yaml.safe_load(PROMETHEUS_RULES_FILE.read_text())
    groups = []
    for group in prom["groups"]:
        rules = []
        for rule in group["rules"]:
            name = rule["alert"]
            rules.append(
                {
                    "uid": "seedloop-"
                    + "".join("-" + ch.lower() if ch.isupper() else ch for ch in name)
                    .strip("-")
                    .replace("seedloop-", "", 1),
                    "title": name,
                    "condition": "B",
                    "data": [
                        {
                            "refId": "A",
                            "relativeTimeRange": {"from": 900, "to": 0},
                            "datasourceUid": DATASOURCE_UID,
                            "model": {
                                "refId": "A",
                                "expr": rule["expr"].strip(),
                                "instant": True,
                                "range": False,
                                "intervalMs": 1000,
                                "maxDataPoints": 43200,
                            },
                        },
                        {
                            "refId": "B",
                            "datasourceUid": "__expr__",
                            "model": {
                                "refId": "B",
                                "type": "math",
                                "expression": "is_number($A) || is_inf($A)",
                                "datasource": {"type": "__expr__", "uid": "__expr__"},
                            },
                        },
                    ],
                    "noDataState": "OK",
                    "execErrState": "Error",
                    "for": rule.get("for", "0s"),
                    "annotations": {k: _grafana_template(v.strip()) for k, v in rule["annotations"].items()},
                    "labels": dict(rule.get("labels", {})),
                    "isPaused": False,
                }
            )
        groups.append(
            {
                "orgId": 1,
                "name": group["name"],
                "folder": "seedloop",
                "interval": group.get("interval", "1m"),
                "rules": rules,
            }
        )
    return {
        "apiVersion": 1,
        "groups": groups,
        "contactPoints": [
            {
                "orgId": 1,
                "name": "seedloop-webhook",
                "receivers": [
                    {
                        "uid": "seedloop-webhook",
                        "type": "webhook",
                        "settings": {"url": "http://alert-sink:8080/grafana", "httpMethod": "POST"},
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": "seedloop-webhook",
                "group_by": ["alertname", "campaign", "topic"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            }
        ],
    }


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as YAML literal blocks, readable in review."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_representer)


def render_alert_rules() -> str:
    header = (
        "# GENERATED by deploy/grafana/build_dashboards.py from deploy/prometheus/alerts.yml: do not edit.\n"
        "# Grafana-managed alert rules, contact point and notification policy (file provisioning,\n"
        "# Grafana 10/11): https://grafana.com/docs/grafana/latest/alerting/set-up/"
        "provision-alerting-resources/file-provisioning/\n"
    )
    return header + yaml.dump(
        grafana_alert_rules(), Dumper=_BlockDumper, sort_keys=False, width=110, allow_unicode=True
    )


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
