"""Live monitoring of a worker: Prometheus gauges of rolling windows, reach, and the HTTP routes.

Summing over workers. Campaign and creator gauges cover only the partitions this worker owns,
over windows that end at the global event-time watermark (all partitions), so every worker's
windows line up and `sum by (campaign)` over workers is the figure Redis holds for all partitions.
Labels are bounded: campaigns and creators outside the top N by all-time spend (ranked from the
totals of ALL partitions, so every worker ranks alike) are exported as `other`. Each refresh
replaces every figure gauge as a whole (no await between clearing and setting, so a scrape never
sees a half-refreshed set, and a campaign that left a window or a partition this worker lost
leaves no stale series behind).

Reach (unique users). A HyperLogLog per partition, event-time bucket, campaign and channel:
`<ns>:{pN}:r:<bucket>:<campaign>:<channel>` (and `<ns>:{pN}:e:<bucket>:<campaign>` for users
with an engaged view), filled with PFADD inside the batch's atomic apply (apply_batch.lua, from
`processor.BatchSignals`) and expiring after `reach_ttl_s` of wall time. A window's reach on one partition is the PFCOUNT of the union of
that partition's keys of the window (one call, one hash slot: fine on Redis Cluster). Reach is
not summable in general, but here it is across partitions: messages are keyed by user_id, so a
user lives in exactly one partition and the partitions' user sets are disjoint. So the reach of
a campaign is the sum over partitions of per-partition unions, and each worker exports the sum
over the partitions it owns: `sum by (campaign)` over workers is the reach, exactly as it is for
views (up to HyperLogLog's 0.81% standard error per partition, exact for small sets). Within a
partition nothing is summed: a campaign's reach is the union over its channels, never the sum of
channel reaches. (The alternative, one global key per bucket written by every worker, would need
cross-slot unions on a cluster; exporting reach from one worker would make that worker special.)

Crashes. The PFADDs are part of the batch's atomic apply, so a crash never loses or repeats a
batch's reach (PFADD is idempotent anyway).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faust

from stream_processors.figures import (
    campaign_figures,
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
from stream_processors.redis_connect import AsyncClient
from stream_processors.state import Keys

if TYPE_CHECKING:
    from stream_processors.worker import AttributionRuntime

log = logging.getLogger("seedloop.monitoring")

Labels = tuple[str, ...]


# --------------------------------------------------------------------------- reach (HyperLogLog)
def reach_key(keys: Keys, partition: int, bucket: int, campaign: str, channel: str) -> str:
    return keys.prefix(partition) + Keys.reach_suffix(bucket, campaign, channel)


def engaged_key(keys: Keys, partition: int, bucket: int, campaign: str) -> str:
    return keys.prefix(partition) + Keys.engaged_reach_suffix(bucket, campaign)


def window_buckets(start: float, end: float, bucket_s: int) -> list[int]:
    """Bucket starts in [start, end): the same buckets as the figure windows (state.py)."""
    first = -(-int(start) // bucket_s) * bucket_s
    return list(range(first, int(end), bucket_s))


def window_bounds(now: float, minutes: int) -> tuple[float, float]:
    """The window of `minutes` ending at the watermark `now` (its bucket included)."""
    return now - minutes * 60 + 1, now + 1


# One call per batch instead of a PFADD and an EXPIRE per key: KEYS are the HyperLogLogs, ARGV[1]
# the TTL, ARGV[1 + k] the space-separated users of KEYS[k] (user ids have no spaces).
@dataclass(slots=True)
class Reach:
    """Reach of one window, summed over the partitions read."""

    campaign: dict[str, int] = field(default_factory=dict)
    channel: dict[tuple[str, str], int] = field(default_factory=dict)
    engaged: dict[str, int] = field(default_factory=dict)


async def read_reach(
    client: AsyncClient,
    keys: Keys,
    partitions: Iterable[int],
    buckets: list[int],
    campaign_channels: Mapping[str, Iterable[str]],
    label: Mapping[str, str] | None = None,
) -> Reach:
    """Per label (a campaign, or `other` for several): PFCOUNT of the union of each partition's
    keys over `buckets`, summed over partitions (disjoint user sets, see the module docstring)."""
    groups: dict[str, list[str]] = {}
    for campaign in campaign_channels:
        groups.setdefault((label or {}).get(campaign, campaign), []).append(campaign)
    out = Reach()
    if not buckets:
        return out
    queries: list[tuple[str, str, str | None]] = []  # (what, label, channel)
    async with client.pipeline(transaction=False) as pipe:
        for p in sorted(partitions):
            for name, members in sorted(groups.items()):
                by_channel: dict[str, list[str]] = {}
                for campaign in members:
                    for channel in campaign_channels[campaign]:
                        by_channel.setdefault(channel, []).extend(
                            reach_key(keys, p, b, campaign, channel) for b in buckets
                        )
                if not by_channel:
                    continue
                pipe.pfcount(*[k for ks in by_channel.values() for k in ks])
                queries.append(("campaign", name, None))
                for channel, ks in sorted(by_channel.items()):
                    pipe.pfcount(*ks)
                    queries.append(("channel", name, channel))
                pipe.pfcount(*[engaged_key(keys, p, b, c) for c in members for b in buckets])
                queries.append(("engaged", name, None))
        results = await pipe.execute() if queries else []
    for (what, group, on_channel), count in zip(queries, results, strict=True):
        n = int(count)
        if what == "campaign":
            out.campaign[group] = out.campaign.get(group, 0) + n
        elif what == "engaged":
            out.engaged[group] = out.engaged.get(group, 0) + n
        else:
            assert on_channel is not None
            out.channel[(group, on_channel)] = out.channel.get((group, on_channel), 0) + n
    return out


# --------------------------------------------------------------------------- gauges
Snapshot = dict[str, dict[Labels, float]]

KIND_ATTR = (("follow", "follows"), ("add_to_cart", "add_to_carts"), ("checkout", "checkouts"))


def empty_snapshot(metrics: PipelineMetrics) -> Snapshot:
    return {name: {} for name in metrics.figure_gauges}


async def collect_snapshot(runtime: AttributionRuntime) -> Snapshot:
    """Read Redis and compute every figure gauge's complete set of samples for this worker."""
    m = runtime.metrics
    snap = empty_snapshot(m)
    owned = set(runtime.owned)
    if not owned:
        return snap
    reader = runtime.reader
    now = await reader.watermark()
    if now is None:
        return snap
    cfg = runtime.cfg
    models = cfg.rules.engine.models
    all_time = await reader.totals()
    keep_campaigns = top_n(campaign_spend(all_time), cfg.metrics_top_n)
    keep_creators = top_n(creator_spend(all_time), cfg.metrics_top_n)
    catalogue = cfg.rules.catalogue.campaign_channels
    labels = {c: label_of(c, keep_campaigns) for c in catalogue}

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
        reach = await read_reach(
            runtime.redis,
            runtime.keys,
            owned,
            window_buckets(start, end, cfg.rules.engine.bucket_s),
            catalogue,
            labels,
        )
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


def apply_snapshot(metrics: PipelineMetrics, snap: Snapshot) -> None:
    """Replace every figure gauge's samples. Synchronous: a scrape sees the old set or the new."""
    for name, gauge in metrics.figure_gauges.items():
        samples = snap.get(name, {})
        gauge.clear()
        for labels, value in samples.items():
            child = gauge.labels(*labels) if labels else gauge
            child.set(value)


async def refresh_campaign_gauges(runtime: AttributionRuntime) -> None:
    started = time.perf_counter()
    snap = await collect_snapshot(runtime)
    apply_snapshot(runtime.metrics, snap)
    runtime.metrics.metrics_refresh.set(time.time())
    runtime.metrics.metrics_refresh_seconds.observe(time.perf_counter() - started)


def install_monitoring(app: faust.App, runtime: AttributionRuntime) -> None:
    from stream_processors.web import register_routes  # web.py reads reach through this module

    @app.timer(runtime.cfg.metrics_refresh_s)
    async def refresh_gauges() -> None:
        try:
            await refresh_campaign_gauges(runtime)
        except Exception:  # a Redis hiccup must not kill the timer; the next round retries
            log.exception("metrics refresh failed")

    register_routes(app, runtime)

