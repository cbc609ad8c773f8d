"""The campaign dashboards: campaign overview, AIPL funnel, creators and channels."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_panels import (
    CM,
    LOYAL,
    MONEY,
    C,
    Section,
    base,
    campaign_variable,
    custom_variable,
    model_variable,
    multi_query_variable,
    per_series,
    ratio,
    stat,
    stats,
    sums_by,
    table,
    timeseries,
    window_variable,
    with_campaign_variables,
    with_sections,
)


def versus_target(title: str, value: str, target_kind: str, unit: str, description: str) -> Section:
    """A per-campaign efficiency figure (its legend: the target kind, upper case) plotted with the
    campaign's target of that kind."""
    target = (
        f'max by (campaign) (seedloop_campaign_target{{campaign=~"$campaign",target_kind="{target_kind}"}})'
    )
    legend = f"{{{{campaign}}}} {target_kind.upper()}"
    return timeseries(title, [(value, legend), (target, "{{campaign}} target")], unit, description)


def with_interval(metric: str) -> list[tuple[str, str]]:
    """A lift estimate per campaign and its 95% interval's bounds (metrics.py: every worker exports
    the same all-partition value, hence `max by`, not `sum by`)."""
    sel = 'campaign=~"$campaign",bound="{}"'
    return [
        (f"max by (campaign) ({metric}{{{sel.format(bound)}}})", f"{{{{campaign}}}}{suffix}")
        for bound, suffix in (("estimate", ""), ("low", " low (95%)"), ("high", " high (95%)"))
    ]


def lift_sections() -> list[Section]:
    """Conversion lift from holdout groups (stream_processors/lift.py), all-time cohorts."""
    by_group = 'max by (campaign, group) (seedloop_campaign_lift_{}{{campaign=~"$campaign"}})'
    note = (
        "Holdout (ghost) groups: a share of each campaign's users is never shown its ads. "
        "Exposed users x (exposed - held-out per-user figure), over users by their first view, "
        "all-time; the band is the 95% interval. No series until both groups have 2 users."
    )
    return [
        dash_b.Row("Conversion lift (holdout groups, all-time cohorts)"),
        timeseries(
            "Incremental GMV (95% interval)", with_interval("seedloop_campaign_incremental_gmv"), MONEY, note
        ),
        timeseries(
            "iROAS (95% interval)",
            with_interval("seedloop_campaign_iroas"),
            "none",
            "Incremental GMV / all-time spend: what each yuan of spend caused, not what attribution credited.",
        ),
        timeseries(
            "Incremental checkouts (95% interval)",
            with_interval("seedloop_campaign_incremental_checkouts"),
            "short",
        ),
        timeseries(
            "Checkouts per user: exposed vs held out",
            [(by_group.format("checkouts_per_user"), "{{campaign}} {{group}}")],
            "short",
            "Each group's conversion rate: checkouts of the campaign's products within the lift window.",
        ),
        timeseries(
            "GMV per user: exposed vs held out",
            [(by_group.format("gmv_per_user"), "{{campaign}} {{group}}")],
            MONEY,
        ),
        timeseries("Users per group", [(by_group.format("users"), "{{campaign}} {{group}}")], "short"),
    ]


def campaign_overview() -> dash_b.Dashboard:
    spend = f"seedloop_campaign_spend{{{C}}}"
    gmv = f"seedloop_campaign_gmv{{{CM}}}"
    views = f"seedloop_campaign_views{{{C}}}"
    checkouts = f'seedloop_campaign_conversions{{{CM},kind="checkout"}}'
    per_campaign = 'max by (campaign) (seedloop_campaign_{}{{campaign=~"$campaign"}})'
    sections: list[Section] = [
        dash_b.Row("Totals over the selected campaigns"),
        *stats(
            [
                ("Spend ($window)", f"sum({spend})", MONEY),
                ("Attributed GMV ($window, $model)", f"sum({gmv})", MONEY),
                ("ROAS ($window, $model)", f"sum({gmv}) / sum({spend})", "none"),
                ("Views ($window)", f"sum({views})", "short"),
            ]
        ),
        dash_b.Row("Efficiency against target"),
        versus_target(
            "ROAS vs target",
            ratio(gmv, spend),
            "roas",
            "none",
            "Attributed GMV / spend. SeedloopRoasBelowTarget fires under 80% of target for 15m.",
        ),
        versus_target(
            "CPA vs target",
            ratio(spend, checkouts),
            "cpa",
            MONEY,
            "Spend per attributed checkout. The SeedloopCpaAboveTarget alert fires over 125% of target.",
        ),
        timeseries(
            "eCPM", [(f"1000 * {ratio(spend, views)}", "{{campaign}}")], MONEY, "Spend per thousand views."
        ),
        timeseries(
            "Budget pace",
            [(per_campaign.format("budget_pace"), "{{campaign}}")],
            "percentunit",
            "Spend today / plan for the time of day (1 = on plan). Alert over 120%.",
        ),
        dash_b.Row("Volume"),
        *[
            timeseries(title, [(f"sum by ({by}) ({metric})", f"{{{{{by}}}}}")], MONEY, stacked=True)
            for title, by, metric in (
                ("Spend by campaign", "campaign", spend),
                ("Spend by channel (KBFS)", "channel", spend),
                ("Attributed GMV by campaign", "campaign", gmv),
            )
        ],
        timeseries("Daily budget", [(per_campaign.format("daily_budget"), "{{campaign}}")], MONEY),
        dash_b.Row("Attribution models compared"),
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
        ),
        *lift_sections(),
    ]
    dashboard = base(
        "seedloop-campaign-overview",
        "seedloop / Campaign overview",
        "Live spend, GMV and efficiency (ROAS, CPA, eCPM) per campaign against its target, over a "
        "rolling event-time window. Ratios divide sums over all workers.",
        ["campaigns"],
    )
    return with_sections(with_campaign_variables(dashboard), sections)


def conversions(kind: str) -> str:
    return f'seedloop_campaign_conversions{{{CM},kind="{kind}"}}'


def funnel_sections() -> list[Section]:
    """Volumes per AIPL step, the step conversion rates and the cost of each step."""
    views = f"seedloop_campaign_views{{{C}}}"
    spend = f"seedloop_campaign_spend{{{C}}}"
    reach = f"seedloop_campaign_reach{{{C}}}"
    engaged = f"seedloop_campaign_engaged_reach{{{C}}}"
    follows, carts, checkouts = (conversions(kind) for kind in ("follow", "add_to_cart", "checkout"))
    volumes = [
        ("A", views, "views"),
        ("A", reach, "reach"),
        ("I", engaged, "engaged users"),
        ("I", follows, "follows"),
        ("P", carts, "add to cart"),
        ("P", checkouts, "checkouts"),
    ]
    # (step, its rate's title, its cost's title)
    steps = [
        (follows, "Follow rate (follows / views)", "Cost per follow"),
        (carts, "Add-to-cart rate (carts / views)", "Cost per add-to-cart"),
        (checkouts, "Checkout rate (checkouts / views)", "Cost per checkout (CPA)"),
    ]
    return [
        dash_b.Row("Funnel volume ($window, $model)"),
        *stats([(f"{step}: {legend}", f"sum({metric})", "short") for step, metric, legend in volumes], w=4),
        table(
            "Funnel by campaign",
            sums_by(
                "campaign",
                [
                    *((metric, legend) for _, metric, legend in volumes),
                    (f"seedloop_campaign_gmv{{{CM}}}", "GMV"),
                    (spend, "spend"),
                ],
            ),
        ),
        dash_b.Row("Step conversion rates"),
        *per_series([(rate_title, ratio(metric, views)) for metric, rate_title, _ in steps], "percentunit"),
        timeseries("Cart -> checkout", [(ratio(checkouts, carts), "{{campaign}}")], "percentunit", w=24),
        dash_b.Row("Cost per step"),
        *per_series([(cost_title, ratio(spend, metric)) for metric, _, cost_title in steps], MONEY),
        dash_b.Row("Awareness: reach and frequency ($window)"),
        timeseries(
            "Reach (unique users)",
            [(f"sum by (campaign) ({reach})", "{{campaign}}")],
            "short",
            "HyperLogLog estimate per partition; users are partitioned by user_id, so the sum over "
            "workers is the reach.",
            w=8,
        ),
        *per_series([("Frequency (views per reached user)", ratio(views, reach))], "short"),
        *per_series([("Cost per thousand reached users", f"1000 * {ratio(spend, reach)}")], MONEY),
        dash_b.Row("Interest: engagement"),
        timeseries(
            "Engaged users / reach",
            [(ratio(engaged, reach), "{{campaign}}")],
            "percentunit",
            "Users with an engaged view (opened, liked, commented) per reached user.",
            w=12,
        ),
        timeseries(
            "Reach by channel (KBFS)",
            [(f"sum by (channel) (seedloop_campaign_channel_reach{{{C}}})", "{{channel}}")],
            "short",
            "Per channel; a user reached on two channels counts on both, so these do not add up to "
            "the campaign reach.",
            w=12,
        ),
    ]


def loyalty_sections() -> list[Section]:
    """Loyalty per campaign (credited buyers and followers), then platform-wide."""
    segments = [
        ("buyers", "buyers"),
        ("repeat_buyers", "repeat buyers"),
        ("followers", "followers"),
        ("retained_followers", "retained followers"),
    ]
    return [
        dash_b.Row("Loyalty per campaign (all-time distinct users)"),
        table(
            "Loyalty by campaign",
            sums_by("campaign", [(LOYAL % segment, legend) for segment, legend in segments]),
            description="Buyers: users with a checkout credited to the campaign (it had an eligible "
            "touch); repeat buyers: two or more such checkouts. Followers: users whose follow was "
            "credited to it; retained: active again SEEDLOOP_RETENTION_S (default 1 day) after.",
            w=12,
        ),
        timeseries(
            "Repeat rate and follower retention",
            [
                (ratio(LOYAL % "repeat_buyers", LOYAL % "buyers"), "{{campaign}} repeat"),
                (ratio(LOYAL % "retained_followers", LOYAL % "followers"), "{{campaign}} retained"),
            ],
            "percentunit",
            w=12,
        ),
        dash_b.Row("Loyalty (all-time, platform-wide)"),
        *stats(
            [
                ("Buyers", "sum(seedloop_buyers)", "short"),
                ("Repeat buyers", "sum(seedloop_repeat_buyers)", "short"),
            ],
            w=8,
        ),
        stat(
            "Repeat rate",
            "sum(seedloop_repeat_buyers) / sum(seedloop_buyers)",
            "percentunit",
            "Buyers with two or more checkouts, whatever campaign they bought through.",
            w=8,
        ),
    ]


def aipl_funnel() -> dash_b.Dashboard:
    dashboard = base(
        "seedloop-aipl-funnel",
        "seedloop / AIPL funnel",
        "Awareness (views, reach) -> Interest (engaged users, follows) -> Purchase (add-to-cart, "
        "checkout) -> Loyalty (repeat buyers): volumes, step conversion rates and cost per step.",
        ["campaigns", "funnel"],
    )
    return with_sections(with_campaign_variables(dashboard), [*funnel_sections(), *loyalty_sections()])


def creator_sections() -> list[Section]:
    """Per creator (top N by all-time spend, the rest `other`)."""
    kw = 'creator=~"$creator",window="$window"'
    spend = f"seedloop_creator_spend{{{kw}}}"
    gmv = f'seedloop_creator_gmv{{{kw},model="$model"}}'
    checkouts = f'seedloop_creator_checkouts{{{kw},model="$model"}}'
    followers = 'sum by (creator) (seedloop_creator_followers{creator=~"$creator"})'
    return [
        dash_b.Row("Creators ($window, $model)"),
        table(
            "Creators",
            [
                *sums_by(
                    "creator",
                    [
                        (spend, "spend"),
                        (f"seedloop_creator_views{{{kw}}}", "views"),
                        (checkouts, "checkouts"),
                        (gmv, "GMV"),
                    ],
                ),
                (ratio(gmv, spend, "creator"), "ROAS"),
                (followers, "followers"),
            ],
            description="Top creators by all-time spend (SEEDLOOP_METRICS_TOP_N); the rest are `other`.",
        ),
        *per_series(
            [
                ("Spend by creator", f"sum by (creator) ({spend})"),
                ("Attributed GMV by creator", f"sum by (creator) ({gmv})"),
                ("Cost per attributed checkout by creator", ratio(spend, checkouts, "creator")),
            ],
            MONEY,
            legend="{{creator}}",
        ),
        timeseries("Followers (all-time)", [(followers, "{{creator}}")], "short", w=24),
    ]


def channel_sections() -> list[Section]:
    """The creator-driven channel (KOL notes) against the other KBFS channels, per campaign."""
    ck = 'campaign=~"$campaign",window="$window",channel=~"$channel"'
    views = f"seedloop_campaign_views{{{ck}}}"
    spend = f"seedloop_campaign_spend{{{ck}}}"
    gmv = f'seedloop_campaign_gmv{{{ck},model="$model"}}'
    follows = f'seedloop_campaign_conversions{{{ck},model="$model",kind="follow"}}'
    by_channel = [
        ("Follows by channel", f"sum by (channel) ({follows})", "short"),
        ("Cost per follow by channel", ratio(spend, follows, "channel"), MONEY),
        ("ROAS by channel", ratio(gmv, spend, "channel"), "none"),
        ("Follow rate by channel", ratio(follows, views, "channel"), "percentunit"),
    ]
    return [
        dash_b.Row("Channels"),
        *[timeseries(title, [(expr, "{{channel}}")], unit, w=12) for title, expr, unit in by_channel],
        table(
            "Campaign x channel",
            sums_by(
                "campaign, channel", [(views, "views"), (follows, "follows"), (spend, "spend"), (gmv, "GMV")]
            ),
        ),
        timeseries(
            "Current bid by channel",
            [('avg by (channel) (seedloop_bid{campaign=~"$campaign",channel=~"$channel"})', "{{channel}}")],
            MONEY,
            w=24,
        ),
    ]


def creators() -> dash_b.Dashboard:
    dashboard = (
        base(
            "seedloop-creators",
            "seedloop / Creators & channels",
            "Per creator (KOL/KOS): spend, attributed checkouts and GMV, followers; then KOL notes against "
            "brand, feed and search ads per channel.",
            ["creators", "channels"],
        )
        .with_variable(campaign_variable())
        .with_variable(
            multi_query_variable("creator", "Creator", "label_values(seedloop_creator_spend, creator)")
        )
        .with_variable(
            custom_variable("channel", "Channel", ("kol", "brand", "feed", "search"), "kol")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(window_variable())
        .with_variable(model_variable())
    )
    return with_sections(dashboard, [*creator_sections(), *channel_sections()])
