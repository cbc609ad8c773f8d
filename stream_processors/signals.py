"""What a batch's applied events add to reach and the remarketing audiences (audiences.py),
collected by the planner (processor.py) and written with the batch (apply_batch.lua)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.events import AddToCart, Checkout, View
from stream_processors.messages import Decoded


@dataclass(slots=True)
class BatchSignals:
    """What the applied events add to reach and to the remarketing audiences (written with the
    batch, see apply_batch.lua)."""

    # (bucket, campaign, channel) -> users who viewed; (bucket, campaign) -> users with an engaged view
    reach: dict[tuple[int, str, str], set[str]] = field(default_factory=dict)
    engaged_reach: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    # user -> latest event time in the batch of: a checkout, an add-to-cart, an engagement
    # (an engaged view or a follow)
    checkouts: dict[str, float] = field(default_factory=dict)
    carts: dict[str, float] = field(default_factory=dict)
    engagements: dict[str, float] = field(default_factory=dict)


def collect_signals(applied: Sequence[Decoded], bucket_s: int) -> BatchSignals:
    out = BatchSignals()
    reach, engaged_reach = out.reach, out.engaged_reach
    for d in applied:
        event, at = d.event, d.at
        user = event.user_id
        if type(event) is View:
            bucket = int(at // bucket_s) * bucket_s
            key = (bucket, event.campaign_id, event.channel)
            users = reach.get(key)
            if users is None:
                reach[key] = {user}
            else:
                users.add(user)
            if event.engaged:
                engaged_reach.setdefault((bucket, event.campaign_id), set()).add(user)
                _latest(out.engagements, user, at)
        elif type(event) is Checkout:
            _latest(out.checkouts, user, at)
        elif type(event) is AddToCart:
            _latest(out.carts, user, at)
        else:
            _latest(out.engagements, user, at)  # a follow
    return out


def _latest(times: dict[str, float], user: str, at: float) -> None:
    if at > times.get(user, float("-inf")):
        times[user] = at
