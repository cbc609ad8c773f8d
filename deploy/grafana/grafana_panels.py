"""Panel, variable and query builders shared by seedloop's dashboards (build_dashboards.py).

Panels are described as data where several share one shape (a row of stats, one ratio per
campaign, a table of sums): `stats`, `per_series` and `sums_by` turn those lists into panels, and
`with_sections` adds rows and panels to a dashboard in order (Grafana lays them out in that order).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m

# The datasource provisioned by deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE_UID = "prometheus"
DS = dash_m.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

# Spend, GMV and bids are in the scenario's base currency, yuan (seeds/campaigns.json: "CNY").
MONEY = "currencyCNY"

WINDOWS = ("1m", "5m", "15m", "60m")
MODELS = ("last", "first", "linear", "time_decay", "position", "markov")

# Selectors shared by campaign queries.
C = 'campaign=~"$campaign",window="$window"'
LOYAL = 'seedloop_campaign_loyalty_users{campaign=~"$campaign",segment="%s"}'
CM = f'{C},model="$model"'
RATE_INTERVAL = "$__rate_interval"

Series: TypeAlias = tuple[str, str]  # (PromQL, legend)
Panel: TypeAlias = ts_b.Panel | stat_b.Panel | table_b.Panel
Section: TypeAlias = dash_b.Row | Panel


def q(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prom_b.Dataquery:
    query = prom_b.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    return query.instant() if instant else query.range()


def ref_id(index: int) -> str:
    return chr(ord("A") + index)


def timeseries(
    title: str,
    exprs: list[Series],
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
        panel = panel.with_target(q(expr, legend, ref=ref_id(i)))
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


def table(title: str, exprs: list[Series], w: int = 24, h: int = 8, description: str = "") -> table_b.Panel:
    panel = table_b.Panel().title(title).datasource(DS).span(w).height(h)
    if description:
        panel = panel.description(description)
    for i, (expr, legend) in enumerate(exprs):
        panel = panel.with_target(
            q(expr, legend, ref=ref_id(i), instant=True).format(prom_m.PromQueryFormat.TABLE)
        )
    # One row per campaign, one column per query.
    return panel.with_transformation(
        dash_m.DataTransformerConfig(id_val="merge", options={})
    ).with_transformation(
        dash_m.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True},
                "renameByName": {f"Value #{ref_id(i)}": legend for i, (_, legend) in enumerate(exprs)},
            },
        )
    )


def stats(rows: Iterable[tuple[str, str, str]], w: int = 6) -> list[Section]:
    """One stat panel per (title, expr, unit), all of one width."""
    return [stat(title, expr, unit, w=w) for title, expr, unit in rows]


def per_series(
    rows: Iterable[tuple[str, str]], unit: str, legend: str = "{{campaign}}", w: int = 8
) -> list[Section]:
    """One single-query timeseries per (title, expr), e.g. one ratio per campaign."""
    return [timeseries(title, [(expr, legend)], unit, w=w) for title, expr in rows]


def sums_by(by: str, columns: Iterable[tuple[str, str]]) -> list[Series]:
    """Table columns `sum by (<by>) (<metric>)`, one per (metric, legend)."""
    return [(f"sum by ({by}) ({metric})", legend) for metric, legend in columns]


def ratio(num: str, den: str, by: str = "campaign") -> str:
    """sum-then-divide, the only correct way with per-worker partial figures."""
    return f"sum by ({by}) ({num})\n/\nsum by ({by}) ({den})"


def multi_query_variable(name: str, label: str, query: str) -> dash_b.QueryVariable:
    """A multi-value label selector whose `All` matches every value (`.*`)."""
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


def campaign_variable() -> dash_b.QueryVariable:
    return multi_query_variable("campaign", "Campaign", "label_values(seedloop_campaign_spend, campaign)")


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


def with_campaign_variables(dashboard: dash_b.Dashboard) -> dash_b.Dashboard:
    """The campaign, window and model selectors the campaign dashboards share."""
    return (
        dashboard.with_variable(campaign_variable())
        .with_variable(window_variable())
        .with_variable(model_variable())
    )


def with_sections(dashboard: dash_b.Dashboard, sections: Iterable[Section]) -> dash_b.Dashboard:
    """Add rows and panels in order: a panel goes into the row above it."""
    for section in sections:
        if isinstance(section, dash_b.Row):
            dashboard = dashboard.with_row(section)
        else:
            dashboard = dashboard.with_panel(section)
    return dashboard
