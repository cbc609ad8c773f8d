"""The operations dashboards: pipeline health and optimizer decisions."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_panels import (
    MONEY,
    RATE_INTERVAL,
    Section,
    base,
    campaign_variable,
    stat,
    stats,
    table,
    timeseries,
    with_sections,
)


def rate_by(by: str, counter: str, legend: str = "") -> tuple[str, str]:
    """Per-second rate of a counter summed by one label; the legend is that label by default."""
    return f"sum by ({by}) (rate({counter}[{RATE_INTERVAL}]))", legend or f"{{{{{by}}}}}"


def throughput_sections() -> list[Section]:
    ri = RATE_INTERVAL
    return [
        dash_b.Row("Throughput"),
        *stats(
            [
                ("Consumed / s", f"sum(rate(seedloop_events_consumed_total[{ri}]))", "ops"),
                ("Applied / s", f"sum(rate(seedloop_events_applied_total[{ri}]))", "ops"),
                ("Dead letters / s", f"sum(rate(seedloop_dead_letters_total[{ri}]))", "ops"),
            ]
        ),
        stat(
            "Targets down",
            'count(up{job=~"seedloop-.*"} == 0) or vector(0)',
            "short",
            "Scrape targets of the seedloop jobs that do not answer (0 when all do); "
            "SeedloopTargetDown names each one after 2 minutes.",
        ),
        timeseries(
            "Consumed by topic", [rate_by("topic", "seedloop_events_consumed_total")], "ops", stacked=True
        ),
        timeseries(
            "Applied by action", [rate_by("action", "seedloop_events_applied_total")], "ops", stacked=True
        ),
        timeseries("Consumed by worker", [rate_by("instance", "seedloop_events_consumed_total")], "ops"),
        timeseries(
            "Produced by the simulator",
            [
                rate_by("topic", "seedloop_sim_events_produced_total"),
                rate_by("topic", "seedloop_sim_delivery_failures_total", "{{topic}} failed"),
            ],
            "ops",
        ),
        dash_b.Row("Data quality"),
        *[
            timeseries(title, series, "ops", w=8)
            for title, series in (
                ("Dead letters by reason", [rate_by("reason", "seedloop_dead_letters_total")]),
                (
                    "Duplicates and replays",
                    [
                        rate_by("action", "seedloop_duplicate_events_total", "duplicate {{action}}"),
                        rate_by("topic", "seedloop_replayed_events_total", "replayed {{topic}}"),
                    ],
                ),
                ("Late events", [rate_by("action", "seedloop_late_events_total")]),
            )
        ],
    ]


def p99_by_instance(histogram: str) -> tuple[str, str]:
    return (
        f"histogram_quantile(0.99, sum by (le, instance) (rate({histogram}_bucket[{RATE_INTERVAL}])))",
        "p99 {{instance}}",
    )


def latency_sections() -> list[Section]:
    ri = RATE_INTERVAL
    latency = [
        (
            f"histogram_quantile({p}, sum by (le) (rate(seedloop_event_to_redis_latency_seconds_bucket[{ri}])))",
            f"p{int(p * 100)}",
        )
        for p in (0.5, 0.95, 0.99)
    ]
    apply_mean = f"sum(rate(seedloop_batch_apply_seconds_sum[{ri}])) / sum(rate(seedloop_batch_apply_seconds_count[{ri}]))"
    return [
        dash_b.Row("Latency and lag"),
        timeseries(
            "Event -> Redis latency",
            latency,
            "s",
            "The SeedloopPipelineLatencyHigh alert fires when p99 stays above 5 s.",
        ),
        timeseries(
            "Batch apply time", [p99_by_instance("seedloop_batch_apply_seconds"), (apply_mean, "mean")], "s"
        ),
        timeseries(
            "Consumer lag by topic",
            [("sum by (topic) (max by (topic, partition) (seedloop_consumer_lag))", "{{topic}}")],
            "short",
            "Max per partition first: two workers may report one after a rebalance.",
        ),
        timeseries(
            "Seconds since last applied batch",
            [("time() - seedloop_last_apply_timestamp_seconds", "{{instance}}")],
            "s",
        ),
        timeseries(
            "Campaign gauges: seconds since refresh, refresh p99",
            [
                ("time() - seedloop_metrics_refresh_timestamp_seconds", "age {{instance}}"),
                p99_by_instance("seedloop_metrics_refresh_seconds"),
            ],
            "s",
            "Each worker re-reads its partitions' windows and reach from Redis every SEEDLOOP_METRICS_REFRESH_S.",
        ),
        timeseries(
            "Owned partitions", [("seedloop_owned_partitions", "{{instance}}")], "short", stacked=True
        ),
        timeseries(
            "Event-time watermark (simulated clock)",
            [("max by (instance) (seedloop_event_time_watermark_seconds) * 1000", "{{instance}}")],
            "dateTimeAsIso",
        ),
    ]


def pipeline_health() -> dash_b.Dashboard:
    dashboard = base(
        "seedloop-pipeline-health",
        "seedloop / Pipeline health",
        "Throughput, dead letters, duplicates and replays, event-to-Redis latency, consumer lag and "
        "partition ownership of the Faust workers; production by the simulator.",
        ["pipeline"],
    )
    return with_sections(dashboard, [*throughput_sections(), *latency_sections()])


def observed_versus_target(target_kind: str, unit: str) -> Section:
    cc = 'campaign=~"$campaign"'
    return timeseries(
        f"Observed vs target: {target_kind.upper()}",
        [
            (
                f'max by (campaign, channel) (seedloop_optimizer_observed{{{cc},target_kind="{target_kind}"}})',
                "{{campaign}} / {{channel}} observed",
            ),
            (
                f'max by (campaign) (seedloop_campaign_target{{{cc},target_kind="{target_kind}"}})',
                "{{campaign}} target",
            ),
        ],
        unit,
    )


def optimizer_sections() -> list[Section]:
    ri = RATE_INTERVAL
    cc = 'campaign=~"$campaign"'
    bids = f"max by (campaign, channel) (seedloop_bid{{{cc}}})"
    decisions = f"seedloop_optimizer_decisions_total{{{cc}}}"
    per_minute = [
        ("Rounds / min", "seedloop_optimizer_rounds_total"),
        ("Adjustments published / min", "seedloop_bid_adjustments_published_total"),
        ("Adjustments applied by the scheduler / min", "seedloop_sim_bid_adjustments_applied_total"),
    ]
    return [
        stat(
            "Seconds since last round",
            "time() - max(seedloop_optimizer_last_round_timestamp_seconds)",
            "s",
            "The SeedloopOptimizerStalled alert fires after 300 s.",
        ),
        *stats([(title, f"60 * sum(rate({counter}[{ri}]))", "short") for title, counter in per_minute]),
        timeseries("Bids", [(bids, "{{campaign}} / {{channel}}")], MONEY, w=24),
        observed_versus_target("roas", "none"),
        observed_versus_target("cpa", MONEY),
        timeseries(
            "Decisions by reason",
            [(f"sum by (reason) (increase({decisions}[{ri}]))", "{{reason}}")],
            "short",
            stacked=True,
        ),
        timeseries(
            "Budget pace",
            [(f"max by (campaign) (seedloop_campaign_budget_pace{{{cc}}})", "{{campaign}}")],
            "percentunit",
        ),
        table(
            "Latest decision inputs",
            [
                (bids, "bid"),
                (
                    f"max by (campaign, channel, target_kind) (seedloop_optimizer_observed{{{cc}}})",
                    "observed",
                ),
                (f"sum by (campaign, channel) (increase({decisions}[1h]))", "decisions (1h)"),
            ],
        ),
    ]


def optimizer_decisions() -> dash_b.Dashboard:
    dashboard = base(
        "seedloop-optimizer-decisions",
        "seedloop / Optimizer decisions",
        "What the bid optimizer saw, what it decided and why: bids, observed efficiency against targets, "
        "decisions by reason, control rounds and published adjustments.",
        ["optimizer"],
    )
    return with_sections(dashboard.with_variable(campaign_variable()), optimizer_sections())
