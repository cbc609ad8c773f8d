"""An independent recount of produced events: plain loops over the whole input, in event time.

It shares only the attribution *models* (the arithmetic that tests/unit checks against the
`channelattribution` library) with the pipeline; none of the journey engine, the batch planner,
Redis or Kafka. Output uses the pipeline's integer field names (the lift ones from
stream_processors/lift.py) so the comparison is exact.

Identity: an event is its `event_id`; a repeat of an id counts once (the first one read). Ids are
compared within the Kafka partition of the user (each user's events all reach that partition,
and that is where the pipeline remembers ids), so with `partitions` given, two users of different
partitions may each count an id once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from confluent_kafka import murmur2

from producers.scenario import load_scenario
from schemas.events import AddToCart, Checkout, Follow, UserAction, View
from seedloop.settings import Settings
from stream_processors.attribution.models import MODEL_NAMES, Lookback, Touch, allocate
from stream_processors.lift import gmv_square, group_of, lift_field

MICRO = 1_000_000
KIND = {"follow": "follows", "add_to_cart": "add_to_carts", "checkout": "checkouts"}


def recount(
    events: Iterable[UserAction],
    lookback: Lookback,
    half_life_s: float,
    rates_to_base: Mapping[str, float],
    campaign_lookbacks: Mapping[str, Lookback] | None = None,
    retention_s: float = 86_400.0,
    campaign_products: Mapping[str, frozenset[str]] | None = None,
    partitions: int | None = None,
    lift_window_s: float = 7 * 86_400.0,
) -> dict[str, int]:
    per_campaign = campaign_lookbacks or {}
    products = campaign_products or {}
    unlimited = Lookback(float("inf"), float("inf"))
    unique: dict[tuple[int, str], UserAction] = {}
    for e in events:
        partition = murmur2(e.user_id.encode(), partitions) if partitions else 0
        unique.setdefault((partition, e.event_id), e)
    by_user: dict[str, list[UserAction]] = defaultdict(list)
    for e in unique.values():
        by_user[e.user_id].append(e)
    out: dict[str, int] = defaultdict(int)
    for user_events in by_user.values():
        n_checkouts = sum(1 for e in user_events if isinstance(e, Checkout))
        out["t|buyers"] += n_checkouts >= 1
        out["t|repeat_buyers"] += n_checkouts >= 2
        all_views = [e for e in user_events if isinstance(e, View)]
        # A ghost view (held_out) is no touch: no views, spend or credit; it counts for lift only.
        views = [v for v in all_views if not v.held_out]
        out["t|ghost_views"] += len(all_views) - len(views)
        if lift_window_s:
            _recount_lift(out, all_views, user_events, rates_to_base, products, lift_window_s)
        follows = [e for e in user_events if isinstance(e, Follow)]
        # Loyalty per campaign: conversions with an eligible touch of the campaign.
        campaign_checkouts: dict[str, int] = defaultdict(int)
        first_follow: dict[str, float] = {}
        for v in views:
            out["t|views"] += 1
            out["t|spend"] += v.cost_minor
            out[f"c|{v.campaign_id}|{v.channel}|views"] += 1
            out[f"c|{v.campaign_id}|{v.channel}|spend"] += v.cost_minor
        for conv in user_events:
            if isinstance(conv, View):
                continue
            at = conv.event_ts
            value = 0
            spu: str | None = None
            if isinstance(conv, AddToCart | Checkout):
                value = round(conv.value_minor * rates_to_base[conv.currency])
                spu = conv.spu_id
            out[f"t|{KIND[conv.action]}"] += 1
            if isinstance(conv, Checkout):
                out["t|gmv"] += value
            touches = []
            for v in views:
                # Engaged: clicked, or its creator followed by this user between the view and the conversion.
                engaged = v.engaged or any(
                    f.creator_id == v.creator_id and v.event_ts <= f.event_ts <= at for f in follows
                )
                # A product is only credited to ads of campaigns that promote it.
                if spu is not None and v.campaign_id in products and spu not in products[v.campaign_id]:
                    continue
                lb = per_campaign.get(v.campaign_id, lookback)
                if not (v.event_ts <= at and at - v.event_ts <= (lb.engaged_s if engaged else lb.view_s)):
                    continue
                touches.append(
                    Touch(v.event_ts, v.campaign_id, v.channel, v.creative_id, v.creator_id, engaged)
                )
            for campaign in {t.campaign_id for t in touches}:
                if isinstance(conv, Checkout):
                    campaign_checkouts[campaign] += 1
                elif isinstance(conv, Follow):
                    first_follow[campaign] = min(at, first_follow.get(campaign, at))
            for model in MODEL_NAMES:
                counts = allocate(model, touches, at, MICRO, lookback=unlimited, half_life_s=half_life_s)
                if not counts:
                    if model == MODEL_NAMES[0]:
                        out[f"u|{KIND[conv.action]}"] += 1
                    continue
                values = allocate(model, touches, at, value, lookback=unlimited, half_life_s=half_life_s)
                for (t, micro), (_, val) in zip(counts, values, strict=True):
                    out[f"c|{t.campaign_id}|{t.channel}|{model}|{KIND[conv.action]}"] += micro
                    out[f"v|{t.creative_id}|{model}|{KIND[conv.action]}"] += micro
                    if isinstance(conv, Checkout):
                        out[f"c|{t.campaign_id}|{t.channel}|{model}|gmv"] += val
                        out[f"v|{t.creative_id}|{model}|gmv"] += val
        last = max(e.event_ts for e in user_events)
        for campaign, n in campaign_checkouts.items():
            out[f"l|{campaign}|buyers"] += 1
            out[f"l|{campaign}|repeat_buyers"] += n >= 2
        for campaign, at in first_follow.items():
            out[f"l|{campaign}|followers"] += 1
            out[f"l|{campaign}|retained_followers"] += last >= at + retention_s
    return {k: v for k, v in out.items() if v}


def _recount_lift(
    out: dict[str, int],
    views: list[View],
    user_events: list[UserAction],
    rates_to_base: Mapping[str, float],
    products: Mapping[str, frozenset[str]],
    window: float,
) -> None:
    """One user's lift cohorts, in event time: per campaign, an episode starts at the first view
    (ghost or not, whose flag is the group), the next at the first view after its window closes;
    each counts the checkouts of the campaign's products dated inside its window. `gmv_sq` sums
    gmv_square (capped whole major units), the stored field's definition (stream_processors/lift.py)."""
    checkouts = [e for e in user_events if isinstance(e, Checkout)]
    by_campaign: dict[str, list[View]] = defaultdict(list)
    # At one instant a ghost view comes first: a tie of a real and a ghost first view puts the user
    # in the holdout group (the engine's rule, stream_processors/attribution/lift_cohorts.py).
    for v in sorted(views, key=lambda v: (v.event_ts, not v.held_out, v.event_id)):
        by_campaign[v.campaign_id].append(v)
    for campaign, seen in by_campaign.items():
        starts: list[View] = []
        for v in seen:
            if not starts or v.event_ts > starts[-1].event_ts + window:
                starts.append(v)
        for first in starts:
            begin = first.event_ts
            counted = [
                round(c.value_minor * rates_to_base[c.currency])
                for c in checkouts
                if begin <= c.event_ts <= begin + window
                and (campaign not in products or c.spu_id in products[campaign])
            ]
            group = group_of(first.held_out)
            n, g = len(counted), sum(counted)
            for measure, amount in (
                ("users", 1),
                ("checkouts", n),
                ("checkouts_sq", n * n),
                ("gmv", g),
                ("gmv_sq", gmv_square(g)),
            ):
                out[lift_field(campaign, group, measure)] += amount


def recount_for(settings: Settings, events: Iterable[UserAction]) -> dict[str, int]:
    """The recount under the same settings and scenario (lookbacks, rates) as the pipeline under test."""
    scenario = load_scenario(settings.seeds_dir)
    per_campaign = {
        c.campaign_id: Lookback(c.lookback_view_s, c.lookback_engaged_s)
        for c in scenario.campaigns
        if c.lookback_view_s is not None and c.lookback_engaged_s is not None
    }
    products = scenario.campaign_products() if settings.attribution_scope == "product" else {}
    return recount(
        events,
        Lookback(settings.lookback_view_s, settings.lookback_engaged_s),
        settings.half_life_s,
        scenario.rates_to_base(),
        per_campaign,
        settings.retention_s,
        products,
        settings.partitions,
        # as seedloop.runtime.processing_rules: no holdout, no lift state
        settings.lift_window_s if settings.holdout_share > 0 else 0.0,
    )
