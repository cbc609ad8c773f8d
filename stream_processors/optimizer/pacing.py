"""Budget pacing: spend follows the campaign's daily plan. Pure.

The plan is either even through the day or traffic-shaped (the platform's public hour-of-day
traffic curve). With a constant bid, spend follows the traffic-shaped plan by construction, so a
pacer that tracks that plan settles on the constant bid that spends exactly the budget: the
budget-limited best bid. Pacing only ever lowers bids below what the efficiency controller allows
(a multiplier in (0, 1]); the scheduler's hard daily cap stays the last line of defence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DAY_S = 86_400.0


def shape_mass(start_s: float, end_s: float, hour_shape: Sequence[float] | None) -> float:
    """Traffic mass between two times of day (seconds since midnight, 0 <= start <= end <= DAY)."""
    if end_s <= start_s:
        return 0.0
    if hour_shape is None:
        return (end_s - start_s) / 3600.0
    total, t = 0.0, start_s
    while t < end_s - 1e-9:
        hour = int(t // 3600) % 24
        nxt = min(end_s, (int(t // 3600) + 1) * 3600.0)
        total += hour_shape[hour] * (nxt - t) / 3600.0
        t = nxt
    return total


def plan_fraction(seconds_into_day: float, hour_shape: Sequence[float] | None = None) -> float:
    """Share of the daily budget the plan has spent by this time of day."""
    s = min(max(seconds_into_day, 0.0), DAY_S)
    return shape_mass(0.0, s, hour_shape) / shape_mass(0.0, DAY_S, hour_shape)


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    # The plan's shape: the relative traffic of each hour of the day (24 weights); None: an even plan.
    hour_shape: tuple[float, ...] | None = None
    gain: float = 0.7
    min_multiplier: float = 0.15
    max_step: float = 0.25
    # d log(spend) / d log(bid): more bid wins more auctions and pays more for each.
    elasticity: float = 1.5
    # A deviation from the plan is caught up over what is left of the day plus this share of a
    # day's traffic, so the last hours of a day do not amplify a small deviation into a big move.
    catch_up_floor: float = 0.35


@dataclass(slots=True)
class PacingState:
    multiplier: float = 1.0
    rounds_since_bound: int | None = None  # control rounds since pacing last held bids down

    def count_round(self) -> None:
        """Once per control round, after `pace`: pacing binds while its multiplier is below 1."""
        if self.multiplier < 1.0:
            self.rounds_since_bound = 0
        elif self.rounds_since_bound is not None:
            self.rounds_since_bound += 1

    def bound_within(self, rounds: int) -> bool:
        return self.rounds_since_bound is not None and self.rounds_since_bound <= rounds

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> PacingState:
        return cls(**json.loads(raw)) if raw else cls()


@dataclass(frozen=True, slots=True)
class PacingDecision:
    multiplier: float
    plan: float  # planned spend by now, campaign currency
    ratio: float | None  # remaining budget / projected remaining spend at current bids
    # The factor on today's bids at which the recent spend rate would keep to the plan (catching
    # up as the multiplier does): the efficiency controller may raise a bid at most this far.
    headroom: float | None = None


def pace(
    state: PacingState,
    policy: PacingPolicy,
    *,
    budget: float,
    spent_today: float,
    seconds_into_day: float,
    recent_spend: float,
    recent_s: float,
) -> PacingDecision:
    """Project today's remaining spend from the recent rate and the plan's shape; steer the multiplier."""
    plan = budget * plan_fraction(seconds_into_day, policy.hour_shape)
    s = min(max(seconds_into_day, 0.0), DAY_S)
    # The traffic mass the recent spend was bought in. Just past midnight part (or all) of that
    # stretch is yesterday's end of day: count its mass too, or the evening's heavier traffic
    # reads as overspending and the first round of a day cuts every bid.
    recent_mass = shape_mass(max(0.0, s - recent_s), s, policy.hour_shape)
    if recent_s > s:
        recent_mass += shape_mass(max(0.0, DAY_S - (recent_s - s)), DAY_S, policy.hour_shape)
    remaining_mass = shape_mass(s, DAY_S, policy.hour_shape)
    day_mass = shape_mass(0.0, DAY_S, policy.hour_shape)
    left = max(0.0, budget - spent_today)
    if recent_mass <= 0 or remaining_mass <= 0:
        return PacingDecision(state.multiplier, plan, None)
    # Two parts: the rate (today's whole budget over a whole day at the recent spend rate: at the
    # budget-limited bid this is 1 at every hour) and a damped catch-up on the deviation from plan.
    day_rate = recent_spend / recent_mass * day_mass
    projected = recent_spend / recent_mass * remaining_mass
    ratio = math.inf if projected <= 0 else left / projected
    limit = math.log(1 + policy.max_step)
    headroom: float | None = None
    if day_rate <= 0:
        step = limit
    elif left <= 0:
        step = -limit
        headroom = 1.0
    else:
        behind = (plan - spent_today) / budget  # positive: underspent
        remaining = remaining_mass / day_mass
        catch_up = max(0.05, 1.0 + behind / (remaining + policy.catch_up_floor))
        wanted = budget / day_rate * catch_up
        step = max(-limit, min(limit, policy.gain * math.log(wanted) / policy.elasticity))
        headroom = wanted ** (1.0 / policy.elasticity)
    m = min(1.0, max(policy.min_multiplier, state.multiplier * math.exp(step)))
    state.multiplier = m
    return PacingDecision(m, plan, None if ratio == math.inf else ratio, headroom)
