"""What the bid controller is told, remembers and answers, per campaign and channel. Pure.

ControlPolicy holds the controller's settings; ChannelState its memory of one campaign/channel,
JSON so the service can keep it in Redis; Observation one round's figures; Decision the answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from schemas.decisions import ReasonCode


@dataclass(frozen=True, slots=True)
class ControlPolicy:
    gain: float = 0.05  # proportional gain on the change of the log error (kp)
    integral_gain: float = 0.12  # ki: share of the log error corrected per round
    derivative_gain: float = 0.0  # kd
    max_step: float = 0.25  # at most +-25% per round
    min_conversions: float = 5.0  # learning phase
    band: float = 0.03  # within +-3% of target: hold
    prior_strength: float = 4.0  # the prior is worth this many conversions
    cooldown_step: float = 0.2  # a move of +-20% or more ...
    cooldown_rounds: int = 1  # ... is followed by this many held rounds
    # d log(CPA) / d log(bid) assumed by the controller: scales the log error to a bid move.
    elasticity: float = 1.4
    # Model-based step: the window's efficiency, moved to the current bid through the elasticity,
    # implies the efficiency bid; the efficiency bid moves toward it by a gain that grows with
    # the evidence (add-to-carts in the window): gain = max_gain * n / (n + evidence_half).
    max_gain: float = 0.5
    evidence_half: float = 40.0
    window_rounds: int = 16  # rounds in the efficiency window (8 h of 30-minute rounds)
    lag_rounds: int = 2  # rounds the window's spend is lagged by (the conversion lag)
    ratio_prior: float = 0.25  # checkouts per add-to-cart before any are seen ...
    ratio_prior_strength: float = 40.0  # ... worth this many carts
    ratio_channel_strength: float = 150.0  # a channel's ratio shrinks to its campaign's by this many carts
    # Variable memory (used when the round carries several windows, `Observation.memory`): the
    # estimate reads the longest window that starts after the last detected change; a change is a
    # shorter window's cart rate (bid-normalised) differing from the rest of the memory by more than
    # `change_ratio` and `change_z` standard errors (a two-sample Poisson test).
    round_s: float = 1800.0
    conversion_lag_s: float = 3600.0  # the windows' `lagged_spend` is shifted back by this
    cart_lag_s: float = 1800.0  # carts follow the view sooner than checkouts do
    change_z: float = 3.0
    change_ratio: float = 0.3
    change_min_carts: float = 8.0  # a shorter window needs this many expected carts to be tested
    memory_gain: float = 0.8  # the largest share of the way to the implied bid moved per round
    memory_evidence_half: float = 25.0  # carts at which the gain is half of memory_gain
    # A campaign whose budget bound recently and that is now behind its plan lowers an efficiency
    # bid only on evidence: an estimate at least this many standard errors (1/sqrt(carts)) worse
    # than the target. Its reference is the budget-limited efficiency, often a few percent better
    # than the target, so a noise-driven cut leaves budget unspent for nothing.
    bound_hold_z: float = 3.0
    bound_memory_rounds: int = 96  # "recently": within this many rounds (two days of 30 min)


@dataclass(slots=True)
class ChannelState:
    """Controller memory of one campaign/channel; JSON in Redis (`<ns>:optimizer:state`)."""

    eff_bid: float
    integral: float = 0.0  # sum of the integral moves (log of eff_bid / starting bid)
    prev_error: float | None = None
    prev_error2: float | None = None
    learned: bool = False
    cooldown: int = 0
    rounds: int = 0
    history: list[float] = field(default_factory=list)  # bids in force, oldest first
    weights: list[float] = field(default_factory=list)  # traffic share of each history round
    memory_s: float | None = None  # memory since the last detected change; None: no change seen
    changes: int = 0  # changes detected so far

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ChannelState:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    """One campaign/channel's attributed figures over a window, campaign currency."""

    spend: float = 0.0
    conversions: float = 0.0
    gmv: float = 0.0
    add_to_carts: float = 0.0
    # spend over the same span shifted back by the conversion lag (None: not read)
    lagged_spend: float | None = None


def with_lagged_spend(
    current: Mapping[tuple[str, str], ChannelFigures], lagged: Mapping[tuple[str, str], ChannelFigures]
) -> dict[tuple[str, str], ChannelFigures]:
    """A window's figures with `lagged_spend` taken from the same span shifted back by the lag."""
    out: dict[tuple[str, str], ChannelFigures] = {}
    for k in set(current) | set(lagged):
        f = current.get(k, ChannelFigures())
        out[k] = ChannelFigures(
            f.spend, f.conversions, f.gmv, f.add_to_carts, lagged.get(k, ChannelFigures()).spend
        )
    return out


def efficiency_window(
    converted: Mapping[tuple[str, str], ChannelFigures], lagged: Mapping[tuple[str, str], ChannelFigures]
) -> dict[tuple[str, str], ChannelFigures]:
    """The efficiency window: conversions, carts and GMV over [now - window, now] (`converted`)
    against the spend over the same span shifted back by the conversion lag (`lagged`), the spend
    that caused them."""
    window = {
        k: ChannelFigures(lagged.get(k, ChannelFigures()).spend, v.conversions, v.gmv, v.add_to_carts)
        for k, v in converted.items()
    }
    for k, v in lagged.items():
        window.setdefault(k, ChannelFigures(v.spend, 0.0, 0.0))
    return window


def spend_by_campaign(figures: Mapping[tuple[str, str], ChannelFigures]) -> dict[str, float]:
    """Spend summed over each campaign's channels."""
    out: dict[str, float] = {}
    for (cid, _), f in figures.items():
        out[cid] = out.get(cid, 0.0) + f.spend
    return out


@dataclass(frozen=True, slots=True)
class Observation:
    campaign_id: str
    channel: str
    target_kind: Literal["cpa", "roas"]
    target: float
    bid: float
    bid_floor: float
    bid_cap: float
    spend: float
    conversions: float
    gmv: float
    paused: bool = False
    budget_exhausted: bool = False
    # The campaign's pooled efficiency over the same window (the shrinkage prior); None: the target.
    prior: float | None = None
    pacing_multiplier: float = 1.0
    order_value: float | None = None  # the campaign's average order value, for the ROAS prior
    add_to_carts: float = 0.0  # in the window: a leading indicator, 4-6x more frequent than checkouts
    checkout_ratio: float | None = None  # checkouts per add-to-cart, pooled over a long window
    # (window seconds, figures with unlagged `spend` and `lagged_spend`), shortest first: when
    # given, the estimate uses variable memory over these instead of the single window above.
    memory: tuple[tuple[float, ChannelFigures], ...] = ()
    traffic_weight: float = 1.0  # the plan's traffic share of the round just ended
    # pacing's bid factor at which spend keeps to the plan: no raise beyond bid * headroom
    budget_headroom: float | None = None
    budget_bound: bool = False  # pacing has held the campaign's bids below efficiency lately

    @property
    def observed(self) -> float | None:
        if self.target_kind == "cpa":
            return self.spend / self.conversions if self.conversions > 0 else None
        return self.gmv / self.spend if self.spend > 0 else None


@dataclass(frozen=True, slots=True)
class Decision:
    new_bid: float
    reason: ReasonCode
    observed: float | None
    estimate: float | None = None  # the shrunk efficiency the controller acted on
    error: float | None = None  # log error (positive: room to bid higher)
