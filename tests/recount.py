"""An independent recount of produced events: plain loops over the whole input, in event time.

It shares only the attribution *models* (the arithmetic that tests/unit checks against the
`channelattribution` library) with the pipeline; none of the journey engine, the batch planner,
Redis or Kafka. Output uses the pipeline's integer field names so the comparison is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from schemas.events import AddToCart, Checkout, Follow, UserAction, View
from stream_processors.attribution.models import MODEL_NAMES, Lookback, Touch, allocate

MICRO = 1_000_000
KIND = {"follow": "follows", "add_to_cart": "add_to_carts", "checkout": "checkouts"}


def recount(
    events: Iterable[UserAction], lookback: Lookback, half_life_s: float, rates_to_base: Mapping[str, float]
) -> dict[str, int]:
    unique: dict[str, UserAction] = {}
    for e in events:
        unique.setdefault(e.event_id, e)
    by_user: dict[str, list[UserAction]] = defaultdict(list)
    for e in unique.values():
        by_user[e.user_id].append(e)
    out: dict[str, int] = defaultdict(int)
    for user_events in by_user.values():
        n_checkouts = sum(1 for e in user_events if isinstance(e, Checkout))
        out["t|buyers"] += n_checkouts >= 1
        out["t|repeat_buyers"] += n_checkouts >= 2
        views = [e for e in user_events if isinstance(e, View)]
        follows = [e for e in user_events if isinstance(e, Follow)]
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
            if isinstance(conv, AddToCart | Checkout):
                value = round(conv.value_minor * rates_to_base[conv.currency])
            out[f"t|{KIND[conv.action]}"] += 1
            if isinstance(conv, Checkout):
                out["t|gmv"] += value
            touches = []
            for v in views:
                # Engaged: clicked, or its creator followed by this user between the view and the conversion.
                engaged = v.engaged or any(
                    f.creator_id == v.creator_id and v.event_ts <= f.event_ts <= at for f in follows
                )
                touches.append(
                    Touch(v.event_ts, v.campaign_id, v.channel, v.creative_id, v.creator_id, engaged)
                )
            for model in MODEL_NAMES:
                counts = allocate(model, touches, at, MICRO, lookback=lookback, half_life_s=half_life_s)
                if not counts:
                    if model == MODEL_NAMES[0]:
                        out[f"u|{KIND[conv.action]}"] += 1
                    continue
                values = allocate(model, touches, at, value, lookback=lookback, half_life_s=half_life_s)
                for (t, micro), (_, val) in zip(counts, values, strict=True):
                    out[f"c|{t.campaign_id}|{t.channel}|{model}|{KIND[conv.action]}"] += micro
                    if isinstance(conv, Checkout):
                        out[f"c|{t.campaign_id}|{t.channel}|{model}|gmv"] += val
    return {k: v for k, v in out.items() if v}
