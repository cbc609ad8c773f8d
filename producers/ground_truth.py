"""What really caused each purchase: known to the simulator only, read by evaluations.

No live system knows this; the simulator does because it decides every outcome. It is public so
that evaluations score attribution and conversion-lift figures against it without hooking into
the simulator.

Memory stays flat in the run's length where it can: totals are per campaign, the first-view
times are one float per user and campaign (an array, 8 bytes each: 16 MB for 200k users and ten
campaigns), and the order record grows with the orders (a few thousand a simulated day at
volume 1), not with the views.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from dataclasses import dataclass, field

from producers.holdout import in_holdout

NEVER = math.inf  # a first-view time for users who never got a view of the campaign


@dataclass(frozen=True, slots=True)
class OrderCause:
    """One checkout's cause: the campaign and channel whose real (non-ghost) view caused it, or
    None for an organic purchase (no ad caused it). `at` is the checkout's event time; `gmv_minor`
    is its value in minor units of the base currency."""

    user_id: str
    campaign_id: str | None
    channel: str | None
    at: float
    gmv_minor: int


def user_index(user_id: str) -> int:
    """The simulator's user ids are u + the user's number (u0000042 -> 42)."""
    return int(user_id[1:])


@dataclass(slots=True)
class GroundTruth:
    """Per campaign: spend, views and the checkouts its views caused; every order's cause; the
    organic purchases by the campaign's audience; and each user's first (ghost or real) view of
    each campaign, from which the holdout group and cohort of the pair follow (in_holdout of
    `holdout_share` is the group: the assignment is a fixed hash, so it is the held_out flag of
    every view of the pair, the first included)."""

    users: int = 0
    holdout_share: float = 0.0
    caused_checkouts: dict[str, int] = field(default_factory=dict)
    caused_gmv_minor: dict[str, int] = field(default_factory=dict)
    spend_minor: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)  # real views (ghosts are not shown)
    ghost_views: dict[str, int] = field(default_factory=dict)
    # organic purchases, by the campaign whose audience (segments and products) the buyer was drawn from
    organic_checkouts: dict[str, int] = field(default_factory=dict)
    organic_gmv_minor: dict[str, int] = field(default_factory=dict)
    # checkout event_id -> its cause, recorded when the simulator schedules the checkout: `at` can
    # lie past the end of a run, so readers keep the orders with at <= their run's end
    orders: dict[str, OrderCause] = field(default_factory=dict)
    _first_view: dict[str, array[float]] = field(default_factory=dict)

    def record_view(self, campaign_id: str, user: int, at: float, ghost: bool) -> None:
        counts = self.ghost_views if ghost else self.views
        counts[campaign_id] = counts.get(campaign_id, 0) + 1
        first = self._first_view.get(campaign_id)
        if first is None:
            first = self._first_view[campaign_id] = array("d", [NEVER]) * self.users
        # views of one tick are drawn at random times within it, so the first drawn need not be
        # the earliest: keep the minimum
        if at < first[user]:
            first[user] = at

    def record_order(self, event_id: str, cause: OrderCause, audience_of: str) -> None:
        """A scheduled checkout and its cause; `audience_of` is the campaign whose ads caused it,
        or, for an organic purchase, whose audience the buyer was drawn from."""
        self.orders[event_id] = cause
        checkouts, gmv = (
            (self.caused_checkouts, self.caused_gmv_minor)
            if cause.campaign_id is not None
            else (self.organic_checkouts, self.organic_gmv_minor)
        )
        checkouts[audience_of] = checkouts.get(audience_of, 0) + 1
        gmv[audience_of] = gmv.get(audience_of, 0) + cause.gmv_minor

    def first_view_at(self, campaign_id: str, user_id: str) -> float | None:
        """When the user first got a (ghost or real) view of the campaign; None if never."""
        first = self._first_view.get(campaign_id)
        at = NEVER if first is None else first[user_index(user_id)]
        return None if at == NEVER else at

    def held_out(self, campaign_id: str, user_id: str) -> bool:
        return in_holdout(campaign_id, user_id, self.holdout_share)

    def first_exposures(self, campaign_id: str) -> dict[int, float]:
        """Users (by number) who got a view of the campaign -> the first one's time."""
        first = self._first_view.get(campaign_id)
        return {} if first is None else {u: at for u, at in enumerate(first) if at != NEVER}


def true_incremental_gmv(
    truth: GroundTruth, bucket_s: int, lift_window_s: float, until: float
) -> dict[tuple[str, int], int]:
    """(campaign, cohort bucket start) -> the GMV (base minor units) truly caused by the campaign's
    real views, bought by users of that cohort in the exposed group within the lift window of
    their first exposure, by `until` (the end of the run): what a conversion-lift estimate of the
    cohort must cover. The cohort bucket is that of the user's first (ghost or real) view of the
    campaign, as the stream engine buckets it."""
    out: dict[tuple[str, int], int] = defaultdict(int)
    for order in truth.orders.values():
        cid = order.campaign_id
        if cid is None or order.at > until or truth.held_out(cid, order.user_id):
            continue
        first = truth.first_view_at(cid, order.user_id)
        # a caused order always follows a real view of its campaign, so the user has a first view
        if first is None or not first <= order.at <= first + lift_window_s:
            continue
        out[(cid, int(first // bucket_s) * bucket_s)] += order.gmv_minor
    return dict(out)
