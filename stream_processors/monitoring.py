"""Live monitoring of a worker: Prometheus gauges of rolling windows, reach, and the HTTP routes.

Summing over workers. Campaign and creator gauges cover only the partitions this worker owns,
over windows that end at the global event-time watermark (all partitions), so every worker's
windows line up and `sum by (campaign)` over workers is the figure Redis holds for all partitions.
Labels are bounded: campaigns and creators outside the top N by all-time spend (ranked from the
totals of ALL partitions, so every worker ranks alike) are exported as `other`. Each refresh
replaces every figure gauge as a whole (no await between clearing and setting, so a scrape never
sees a half-refreshed set, and a campaign that left a window or a partition this worker lost
leaves no stale series behind).

Reach (unique users). The store keeps a set of users per partition, event-time bucket, campaign
and channel (and per campaign for users with an engaged view), written inside the batch's atomic
apply (from `processor.BatchSignals`); in Redis a HyperLogLog expiring after `reach_ttl_s` of wall
time (store/redis_lua.py). A window's reach on one partition is the size of the union of that
partition's sets of the window (in Redis one PFCOUNT, one hash slot: fine on Redis Cluster). Reach is
not summable in general, but here it is across partitions: messages are keyed by user_id, so a
user lives in exactly one partition and the partitions' user sets are disjoint. So the reach of
a campaign is the sum over partitions of per-partition unions, and each worker exports the sum
over the partitions it owns: `sum by (campaign)` over workers is the reach, exactly as it is for
views (up to HyperLogLog's 0.81% standard error per partition, exact for small sets). Within a
partition nothing is summed: a campaign's reach is the union over its channels, never the sum of
channel reaches. (The alternative, one global key per bucket written by every worker, would need
cross-slot unions on a cluster; exporting reach from one worker would make that worker special.)

Crashes. The reach writes are part of the batch's atomic apply, so a crash never loses or repeats
a batch's reach (adding a user to a set is idempotent anyway).

Conversion lift is the exception to summing: an estimate with an interval is no sum, so every worker
exports each top campaign's lift computed from all partitions' totals (`_add_lift`), the same value
on each worker; dashboards read it with `max by`.

Monitoring reads figures through the store's read-only protocol (`AsyncFigureSource`) and knows
of the worker only what `Monitored` names, so it imports neither the worker nor a backend.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import faust

from stream_processors.figures import (
    campaign_figures,
    campaign_lift,
    campaign_loyalty,
    campaign_spend,
    creator_figures,
    creator_followers,
    creator_spend,
    fold_campaigns,
    fold_creators,
    label_of,
    top_n,
)
from stream_processors.metrics import WINDOWS_MINUTES, PipelineMetrics
from stream_processors.store.base import AsyncFigureSource, window_bounds, window_buckets
from stream_processors.web import FigureView, register_routes

__all__ = ["Monitored", "collect_snapshot", "install_monitoring", "window_bounds", "window_buckets"]

log = logging.getLogger("seedloop.monitoring")

Labels = tuple[str, ...]


class Monitored(Protocol):
    """What monitoring and the worker's HTTP need of a worker (AttributionRuntime has it)."""

    @property
    def metrics(self) -> PipelineMetrics: ...

    @property
    def store(self) -> AsyncFigureSource: ...

    @property
    def owned(self) -> set[int]: ...

    @property
    def figure_view(self) -> FigureView: ...

    @property
    def metrics_refresh_s(self) -> float: ...


# --------------------------------------------------------------------------- gauges
Snapshot = dict[str, dict[Labels, float]]

KIND_ATTR = (("follow", "follows"), ("add_to_cart", "add_to_carts"), ("checkout", "checkouts"))


def empty_snapshot(metrics: PipelineMetrics) -> Snapshot:
    return {name: {} for name in metrics.figure_gauges}


async def collect_snapshot(
    reader: AsyncFigureSource, view: FigureView, owned: set[int], metrics: PipelineMetrics
) -> Snapshot:
    """Read the store and compute every figure gauge's complete set of samples for this worker
    (it owns the partitions `owned`)."""
    snap = empty_snapshot(metrics)
    owned = set(owned)
    if not owned:
        return snap
    now = await reader.watermark()
    if now is None:
        return snap
    models = view.models
    all_time = await reader.totals()
    keep_campaigns = top_n(campaign_spend(all_time), view.top_n)
    keep_creators = top_n(creator_spend(all_time), view.top_n)
    catalogue = view.campaign_channels
    labels = {c: label_of(c, keep_campaigns) for c in catalogue}

    _add_lift(snap, all_time, keep_campaigns)

    mine = await reader.totals(owned)
    snap["buyers"][()] = mine.get("t|buyers", 0)
    snap["repeat_buyers"][()] = mine.get("t|repeat_buyers", 0)
    followers: dict[str, int] = {}
    for creator, n in creator_followers(mine).items():
        lab = label_of(creator, keep_creators)
        followers[lab] = followers.get(lab, 0) + n
    snap["creator_followers"] = {(c,): n for c, n in followers.items()}
    loyal: dict[Labels, float] = {}
    for campaign, segments in campaign_loyalty(mine).items():
        lab = label_of(campaign, keep_campaigns)
        for segment, n in segments.items():
            loyal[(lab, segment)] = loyal.get((lab, segment), 0) + n
    snap["campaign_loyalty"] = loyal

    for minutes in WINDOWS_MINUTES:
        window = f"{minutes}m"
        start, end = window_bounds(now, minutes)
        fields = await reader.window(start, end, owned)
        for campaign, figs in fold_campaigns(campaign_figures(fields, models), keep_campaigns).items():
            for channel, per_model in figs.by_channel.items():
                base = per_model[models[0]]
                snap["campaign_views"][(campaign, channel, window)] = base.views
                snap["campaign_spend"][(campaign, channel, window)] = base.spend
                for model, eff in per_model.items():
                    snap["campaign_gmv"][(campaign, channel, window, model)] = eff.gmv
                    for kind, attr in KIND_ATTR:
                        snap["campaign_conversions"][(campaign, channel, window, model, kind)] = getattr(
                            eff, attr
                        )
        per_creator = {
            model: fold_creators(creator_figures(fields, model), keep_creators) for model in models
        }
        for creator, eff in per_creator[models[0]].items():
            snap["creator_views"][(creator, window)] = eff.views
            snap["creator_spend"][(creator, window)] = eff.spend
        for model, figs_by_creator in per_creator.items():
            for creator, eff in figs_by_creator.items():
                snap["creator_checkouts"][(creator, window, model)] = eff.checkouts
                snap["creator_gmv"][(creator, window, model)] = eff.gmv
        reach = await reader.reach(owned, window_buckets(start, end, view.bucket_s), catalogue, labels)
        for campaign, n in reach.campaign.items():
            if n:
                snap["campaign_reach"][(campaign, window)] = n
        for (campaign, channel), n in reach.channel.items():
            if n:
                snap["campaign_channel_reach"][(campaign, channel, window)] = n
        for campaign, n in reach.engaged.items():
            if reach.campaign.get(campaign):
                snap["campaign_engaged_reach"][(campaign, window)] = n
    return snap


LIFT_GROUP_GAUGES = (
    ("campaign_lift_users", "users"),
    ("campaign_lift_checkouts_per_user", "checkouts_per_user"),
    ("campaign_lift_gmv_per_user", "gmv_per_user"),
)
LIFT_ESTIMATE_GAUGES = (
    ("campaign_incremental_checkouts", "incremental_checkouts"),
    ("campaign_incremental_gmv", "incremental_gmv"),
    ("campaign_iroas", "iroas"),
)


def _add_lift(snap: Snapshot, all_time: dict[str, int], keep: frozenset[str]) -> None:
    """Lift of the top campaigns from ALL partitions' totals: an estimate with its interval does not
    sum over workers (nor fold into `other`), so each worker exports the global one (metrics.py)."""
    for campaign, row in campaign_lift(all_time).items():
        if campaign not in keep:
            continue
        for gauge, key in LIFT_GROUP_GAUGES:
            for group in ("exposed", "held_out"):
                value = row[group][key]
                if value is not None:
                    snap[gauge][(campaign, group)] = value
        for gauge, key in LIFT_ESTIMATE_GAUGES:
            if row[key] is not None:
                low, high = row[f"{key}_ci"]
                snap[gauge].update(
                    {(campaign, "estimate"): row[key], (campaign, "low"): low, (campaign, "high"): high}
                )


def apply_snapshot(metrics: PipelineMetrics, snap: Snapshot) -> None:
    """Replace every figure gauge's samples. Synchronous: a scrape sees the old set or the new."""
    for name, gauge in metrics.figure_gauges.items():
        samples = snap.get(name, {})
        gauge.clear()
        for labels, value in samples.items():
            child = gauge.labels(*labels) if labels else gauge
            child.set(value)


async def refresh_campaign_gauges(runtime: Monitored) -> None:
    started = time.perf_counter()
    snap = await collect_snapshot(runtime.store, runtime.figure_view, runtime.owned, runtime.metrics)
    apply_snapshot(runtime.metrics, snap)
    runtime.metrics.metrics_refresh.set(time.time())
    runtime.metrics.metrics_refresh_seconds.observe(time.perf_counter() - started)


def install_monitoring(app: faust.App, runtime: Monitored) -> None:
    @app.timer(runtime.metrics_refresh_s)
    async def refresh_gauges() -> None:
        try:
            await refresh_campaign_gauges(runtime)
        except Exception:  # a store hiccup must not kill the timer; the next round retries
            log.exception("metrics refresh failed")

    register_routes(app, runtime.store, runtime.metrics, runtime.figure_view)
