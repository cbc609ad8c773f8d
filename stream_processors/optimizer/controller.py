"""One control round over every campaign: shared by the service and the evaluation. Pure.

BidOptimizer holds the controller and pacing state of every campaign (JSON, so the service can
keep it in Redis) and, each round, paces each campaign's day (pacing.py), pools what its channels
share (the efficiency prior, the order value, the checkout/cart ratio) and decides each channel's
bid (decision.py). The controller's types and its per-channel decision are re-exported here, the
one import for the service, the evaluation and the baselines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from stream_processors.optimizer.control_types import (
    ChannelFigures,
    ChannelState,
    ControlPolicy,
    Decision,
    Observation,
    efficiency_window,
    spend_by_campaign,
    with_lagged_spend,
)
from stream_processors.optimizer.decision import decide, guarded_bid
from stream_processors.optimizer.efficiency import estimated_conversions, shrunk_efficiency
from stream_processors.optimizer.lift_steer import calibrated_figures
from stream_processors.optimizer.pacing import (
    DAY_S,
    PacingDecision,
    PacingPolicy,
    PacingState,
    pace,
    shape_mass,
)

__all__ = [
    "BidOptimizer",
    "CampaignSpec",
    "ChannelDecision",
    "ChannelFigures",
    "ChannelState",
    "ControlPolicy",
    "Decision",
    "Observation",
    "RoundInput",
    "decide",
    "efficiency_window",
    "estimated_conversions",
    "guarded_bid",
    "shrunk_efficiency",
    "spend_by_campaign",
    "with_lagged_spend",
]


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    campaign_id: str
    target_kind: Literal["cpa", "roas"]
    target: float
    daily_budget: float
    bid_floor: float
    bid_cap: float
    channels: tuple[str, ...]
    start_bids: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class RoundInput:
    seconds_into_day: float
    # (campaign, channel) -> figures over the efficiency window (spend lagged by the conversion lag)
    window: Mapping[tuple[str, str], ChannelFigures]
    spent_today: Mapping[str, float]
    recent_spend: Mapping[str, float]  # campaign -> spend over the last `recent_s`
    recent_s: float
    bids: Mapping[tuple[str, str], float]
    paused: Iterable[str] = ()
    overrides: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # (campaign, channel) -> figures over a long window (a day): the checkout/cart ratio and the
    # order value, both stable, are pooled over it. Empty: the efficiency window's own figures.
    long_window: Mapping[tuple[str, str], ChannelFigures] = field(default_factory=dict)
    # window seconds -> (campaign, channel) -> figures over [now - window, now], with `lagged_spend`
    # the spend over the same span shifted back by the conversion lag: the variable-memory
    # estimate (ControlPolicy.change_*). Empty: the single `window` above.
    windows: Mapping[float, Mapping[tuple[str, str], ChannelFigures]] = field(default_factory=dict)
    # campaign -> lift calibration factor k (lift_steer.py): every window's attributed checkouts and
    # GMV of the campaign are multiplied by it before any efficiency is computed. Empty: steer by
    # the attributed figures as they are.
    calibration: Mapping[str, float] = field(default_factory=dict)

    def calibrated(self) -> RoundInput:
        """This round's input with the lift calibration applied to every window (itself if none)."""
        k = self.calibration
        if not k:
            return self
        return dataclasses.replace(
            self,
            window=calibrated_figures(self.window, k),
            long_window=calibrated_figures(self.long_window, k),
            windows={w: calibrated_figures(per, k) for w, per in self.windows.items()},
            calibration={},
        )


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    campaign_id: str
    channel: str
    old_bid: float
    decision: Decision
    figures: ChannelFigures
    pacing: PacingDecision | None


@dataclass(frozen=True, slots=True)
class _CampaignRound:
    """What the channels of one campaign share in one round."""

    spec: CampaignSpec
    paused: bool
    exhausted: bool  # today's budget is spent
    pacing_state: PacingState  # its multiplier is read per channel: an override resets it
    pacing: PacingDecision | None  # None: paused or exhausted, pacing did not run
    bound: bool  # pacing held the campaign's bids down lately
    prior: float | None  # the campaign's pooled efficiency over the window (None: too few checkouts)
    order_value: float | None
    checkout_ratio: float  # the campaign's checkouts per cart, shrunk toward the generic prior
    long_figures: tuple[ChannelFigures, ...]  # per channel of `spec`, over the long window
    traffic_weight: float  # the plan's traffic share of the round just ended


class BidOptimizer:
    """Controller and pacing state of every campaign, and one round over all of them. Pure."""

    def __init__(
        self, campaigns: Iterable[CampaignSpec], policy: ControlPolicy, pacing: PacingPolicy
    ) -> None:
        self.campaigns = list(campaigns)
        self.policy = policy
        self.pacing_policy = pacing
        self.channel_states: dict[tuple[str, str], ChannelState] = {}
        self.pacing_states: dict[str, PacingState] = {}

    def dump_state(self) -> dict[str, str]:
        out = {f"{c}|{ch}": s.to_json() for (c, ch), s in self.channel_states.items()}
        out.update({f"pace|{c}": s.to_json() for c, s in self.pacing_states.items()})
        return out

    def load_state(self, raw: Mapping[str, str | bytes]) -> None:
        for key, value in raw.items():
            if key.startswith("pace|"):
                self.pacing_states[key[5:]] = PacingState.from_json(value)
            elif "|" in key:
                c, ch = key.split("|", 1)
                self.channel_states[(c, ch)] = ChannelState.from_json(value)

    def step(self, inp: RoundInput) -> list[ChannelDecision]:
        inp = inp.calibrated()
        paused = set(inp.paused)
        weight = self._traffic_weight(inp.seconds_into_day)
        out: list[ChannelDecision] = []
        for c in self.campaigns:
            campaign = self._campaign_round(c, inp, c.campaign_id in paused, weight)
            eff_before = {ch: st.eff_bid for (k, ch), st in self.channel_states.items() if k == c.campaign_id}
            for ch, long_figures in zip(c.channels, campaign.long_figures, strict=True):
                out.append(self._channel_decision(campaign, ch, long_figures, inp))
            if not campaign.paused:
                self._rescale_multiplier(c, campaign.pacing_state, eff_before)
        return out

    def _traffic_weight(self, seconds_into_day: float) -> float:
        """The traffic share of the round just ended: weights the bids of the variable memory."""
        sid, rs = seconds_into_day, self.policy.round_s
        shape = self.pacing_policy.hour_shape
        weight = shape_mass(max(0.0, sid - rs), min(sid, DAY_S), shape)
        if sid < rs:
            weight += shape_mass(DAY_S - (rs - sid), DAY_S, shape)
        return weight

    def _campaign_round(
        self, c: CampaignSpec, inp: RoundInput, paused: bool, traffic_weight: float
    ) -> _CampaignRound:
        """Pace the campaign's day, then pool what its channels share."""
        cid = c.campaign_id
        spent = inp.spent_today.get(cid, 0.0)
        exhausted = spent >= c.daily_budget * 0.999
        pstate = self.pacing_states.setdefault(cid, PacingState())
        pacing: PacingDecision | None = None
        if not paused and not exhausted:
            pacing = pace(
                pstate,
                self.pacing_policy,
                budget=c.daily_budget,
                spent_today=spent,
                seconds_into_day=inp.seconds_into_day,
                recent_spend=inp.recent_spend.get(cid, 0.0),
                recent_s=inp.recent_s,
            )
            pstate.count_round()
        bound = pstate.bound_within(self.policy.bound_memory_rounds)
        window = [inp.window.get((cid, ch), ChannelFigures()) for ch in c.channels]
        pooled_spend = sum(f.spend for f in window)
        pooled_conversions = sum(f.conversions for f in window)
        pooled_gmv = sum(f.gmv for f in window)
        prior: float | None = None
        if pooled_conversions >= self.policy.min_conversions:
            if c.target_kind == "cpa":
                prior = pooled_spend / pooled_conversions
            elif pooled_spend > 0:
                prior = pooled_gmv / pooled_spend
        long = inp.long_window or inp.window
        lf = tuple(long.get((cid, ch), ChannelFigures()) for ch in c.channels)
        long_carts = sum(f.add_to_carts for f in lf)
        long_conv = sum(f.conversions for f in lf)
        long_gmv = sum(f.gmv for f in lf)
        # checkout/cart ratio: the campaign's, shrunk toward a generic prior
        k_prior, r_prior = self.policy.ratio_prior_strength, self.policy.ratio_prior
        campaign_ratio = (long_conv + k_prior * r_prior) / (long_carts + k_prior)
        aov = long_gmv / long_conv if long_conv > 0 else None
        if aov is None and pooled_conversions > 0:
            aov = pooled_gmv / pooled_conversions
        return _CampaignRound(
            c, paused, exhausted, pstate, pacing, bound, prior, aov, campaign_ratio, lf, traffic_weight
        )

    def _channel_decision(
        self, campaign: _CampaignRound, ch: str, long_figures: ChannelFigures, inp: RoundInput
    ) -> ChannelDecision:
        c = campaign.spec
        cid = c.campaign_id
        key = (cid, ch)
        bid = inp.bids.get(key, c.start_bids[ch])
        figs = inp.window.get(key, ChannelFigures())
        st = self.channel_states.setdefault(key, ChannelState(eff_bid=bid))
        if key in inp.overrides and not campaign.paused:
            manual = min(c.bid_cap, max(c.bid_floor, inp.overrides[key]))
            st.eff_bid, st.cooldown = manual, 0
            st.prev_error = st.prev_error2 = None
            campaign.pacing_state.multiplier = 1.0
            return ChannelDecision(
                cid, ch, bid, Decision(manual, "manual_override", None), figs, campaign.pacing
            )
        strength = self.policy.ratio_channel_strength
        ratio = (long_figures.conversions + strength * campaign.checkout_ratio) / (
            long_figures.add_to_carts + strength
        )
        memory = tuple((w, per.get(key, ChannelFigures(lagged_spend=0.0))) for w, per in inp.windows.items())
        obs = Observation(
            campaign_id=cid,
            channel=ch,
            bid=bid,
            target_kind=c.target_kind,
            target=c.target,
            bid_floor=c.bid_floor,
            bid_cap=c.bid_cap,
            checkout_ratio=ratio if (figs.add_to_carts > 0 or memory) else None,
            spend=figs.spend,
            conversions=figs.conversions,
            gmv=figs.gmv,
            add_to_carts=figs.add_to_carts,
            memory=memory,
            paused=campaign.paused,
            budget_exhausted=campaign.exhausted,
            prior=campaign.prior,
            budget_headroom=campaign.pacing.headroom if campaign.pacing is not None else None,
            order_value=campaign.order_value,
            budget_bound=campaign.bound,
            traffic_weight=campaign.traffic_weight,
            pacing_multiplier=campaign.pacing_state.multiplier,
        )
        return ChannelDecision(cid, ch, bid, decide(obs, self.policy, st), figs, campaign.pacing)

    def _rescale_multiplier(
        self, c: CampaignSpec, pstate: PacingState, eff_before: Mapping[str, float]
    ) -> None:
        """The bids pacing holds stay put when the efficiency bids move (decide): rescale the
        multiplier to match, so next round's pacing starts from the bids really in force."""
        if pstate.multiplier >= 1.0:
            return
        moves = [
            math.log(eff_before[ch] / self.channel_states[(c.campaign_id, ch)].eff_bid)
            for ch in c.channels
            if ch in eff_before and self.channel_states[(c.campaign_id, ch)].eff_bid > 0
        ]
        if moves:
            pstate.multiplier = min(1.0, pstate.multiplier * math.exp(sum(moves) / len(moves)))
