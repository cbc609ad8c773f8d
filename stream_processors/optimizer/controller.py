"""The bid controller: from observed efficiency to a new bid. Pure.

Per campaign and channel, a PI controller on the log of the efficiency error (Zhang et al., WSDM
2016) steers an *efficiency bid*: the bid at which the channel's CPA (or ROAS) meets the target.
Log space makes a CPA twice the target and half the target symmetric moves and keeps bids
positive. The controller is written in velocity form, so its integral is the log of the bid
itself; anti-windup is integrator clamping (the efficiency bid stays inside [floor, cap]) plus
conditional integration (no upward integration while pacing, not efficiency, limits the bid).

Guardrails: a learning phase until `min_conversions`; Bayesian shrinkage of the window's
efficiency toward the campaign's pooled figure (worth `prior_strength` conversions); a deadband;
a maximum step per round; floors and caps; a cooldown after a large move. Pacing (pacing.py)
multiplies the efficiency bid by a campaign multiplier <= 1 when the day's budget would otherwise
run out early. Every decision carries its reason code and the figures it saw.

All state (ChannelState, PacingState) is JSON, so the service can keep it in Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from schemas.decisions import ReasonCode
from stream_processors.optimizer.pacing import (
    DAY_S,
    PacingDecision,
    PacingPolicy,
    PacingState,
    pace,
    shape_mass,
)


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
        out[k] = ChannelFigures(f.spend, f.conversions, f.gmv, f.add_to_carts, lagged.get(k, ChannelFigures()).spend)
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


def estimated_conversions(obs: Observation) -> float:
    """Checkouts in the window, the lower-variance way: add-to-carts times the long-run checkout
    ratio, blended with the direct count by inverse variance (relative variance 1/carts against
    1/checkouts: the direct count gets weight ratio / (1 + ratio))."""
    r = obs.checkout_ratio
    if r is None or r <= 0 or obs.add_to_carts <= 0:
        return obs.conversions
    direct = r / (1.0 + r)
    return direct * obs.conversions + (1.0 - direct) * obs.add_to_carts * r


def shrunk_efficiency(obs: Observation, policy: ControlPolicy) -> float | None:
    """The window's CPA/ROAS pulled toward the prior by `prior_strength` pseudo-conversions."""
    k = policy.prior_strength
    prior = obs.prior if obs.prior is not None and obs.prior > 0 else obs.target
    conv = estimated_conversions(obs)
    if obs.target_kind == "cpa":
        if conv + k <= 0:
            return None
        return (obs.spend + k * prior) / (conv + k)
    aov = obs.order_value if obs.order_value is not None and obs.order_value > 0 else None
    if aov is None and obs.conversions > 0 and obs.gmv > 0:
        aov = obs.gmv / obs.conversions
    if aov is None or aov <= 0:
        return None
    return (conv * aov + k * aov) / (obs.spend + k * aov / prior)


def _window_bid(st: ChannelState, rounds: int, lag: int) -> float | None:
    """Traffic-weighted geometric mean of the bids in force over `rounds` rounds ending `lag` ago."""
    h = st.history
    w = st.weights if len(st.weights) == len(h) else [1.0] * len(h)
    end = len(h) - lag
    start = max(0, end - max(1, rounds))
    if end <= start:
        return None
    num = den = 0.0
    for b, wt in zip(h[start:end], w[start:end], strict=True):
        if b > 0 and wt > 0:
            num += wt * math.log(b)
            den += wt
    return math.exp(num / den) if den > 0 else None


@dataclass(frozen=True, slots=True)
class _WindowEstimate:
    seconds: float
    carts: float
    conversions: float
    gmv: float
    cart_spend: float  # spend matched to the carts (lagged by the cart lag)
    conv_spend: float  # spend matched to the checkouts (lagged by the conversion lag)
    bid: float  # the bid that spend was bought at
    exposure: float  # cart_spend normalised to the bid now: carts per exposure is bid-free


def _window_estimate(
    obs: Observation, st: ChannelState, seconds: float, f: ChannelFigures, policy: ControlPolicy
) -> _WindowEstimate:
    s0 = f.spend
    s1 = f.lagged_spend if f.lagged_spend is not None else f.spend
    lag = max(policy.conversion_lag_s, 1.0)
    # spend is smooth in time: interpolate between the unlagged and the lagged windows
    cart_spend = max(0.0, s0 + (policy.cart_lag_s / lag) * (s1 - s0))
    rounds = max(1, round(seconds / policy.round_s))
    bid = _window_bid(st, rounds, round(policy.cart_lag_s / policy.round_s)) or obs.bid
    exposure = cart_spend * (bid / obs.bid) ** -policy.elasticity
    return _WindowEstimate(seconds, f.add_to_carts, f.conversions, f.gmv, cart_spend, s1, bid, exposure)


def _detect_change(windows: list[_WindowEstimate], policy: ControlPolicy) -> _WindowEstimate | None:
    """The shortest window whose bid-normalised cart rate differs from the rest of the longest one."""
    if len(windows) < 2:
        return None
    top = windows[-1]
    if top.exposure <= 0 or top.carts <= 0:
        return None
    for w in windows[:-1]:
        p = w.exposure / top.exposure
        if not 0 < p < 1:
            continue
        expected = top.carts * p
        rest_carts, rest_exposure = top.carts - w.carts, top.exposure - w.exposure
        if expected < policy.change_min_carts or rest_carts <= 0 or rest_exposure <= 0:
            continue
        z = (w.carts - expected) / math.sqrt(top.carts * p * (1 - p))
        ratio = (max(w.carts, 0.5) / w.exposure) / (rest_carts / rest_exposure)
        if abs(z) >= policy.change_z and abs(math.log(ratio)) >= math.log(1 + policy.change_ratio):
            return w
    return None


def _memory_efficiency(
    obs: Observation, w: _WindowEstimate, policy: ControlPolicy
) -> tuple[float | None, float]:
    """CPA/ROAS over one window (carts times the checkout ratio blended with the direct checkouts,
    each against its own lag-matched spend), shrunk toward the prior; and its evidence in carts."""
    r = obs.checkout_ratio
    if w.conv_spend <= 0 and w.cart_spend <= 0:
        return None, 0.0
    rate_direct = w.conversions / w.conv_spend if w.conv_spend > 0 else 0.0
    if r is not None and r > 0 and w.carts > 0 and w.cart_spend > 0:
        direct = r / (1.0 + r)
        rate = direct * rate_direct + (1.0 - direct) * w.carts * r / w.cart_spend
        evidence = w.carts
    else:
        rate = rate_direct
        evidence = 4.0 * w.conversions
    spend = w.conv_spend if w.conv_spend > 0 else w.cart_spend
    conv = rate * spend
    k = policy.prior_strength
    prior = obs.prior if obs.prior is not None and obs.prior > 0 else obs.target
    if obs.target_kind == "cpa":
        return ((spend + k * prior) / (conv + k) if conv + k > 0 else None), evidence
    aov = obs.order_value if obs.order_value is not None and obs.order_value > 0 else None
    if aov is None and w.conversions > 0 and w.gmv > 0:
        aov = w.gmv / w.conversions
    if aov is None:
        return None, evidence
    return (conv * aov + k * aov) / (spend + k * aov / prior), evidence


def _log_error(obs: Observation, estimate: float) -> float:
    # A difference of logs, not the log of a ratio: for a tiny positive estimate (5e-324, found by
    # hypothesis) the ratio underflows to 0 or overflows to inf, while each log stays finite.
    if obs.target_kind == "cpa":
        return math.log(obs.target) - math.log(estimate)
    return math.log(estimate) - math.log(obs.target)


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def guarded_bid(bid: float, wanted: float, floor: float, cap: float, max_step: float) -> float:
    """The guardrails every bid move passes: at most +-`max_step` from the bid in force, then inside
    [floor, cap]. Shared with the baseline controllers (baselines.py), so they are held to the same."""
    lo, hi = bid / (1 + max_step), bid * (1 + max_step)
    return _clamp(_clamp(_clamp(wanted, floor, cap), lo, hi), floor, cap)


def decide(obs: Observation, policy: ControlPolicy, state: ChannelState | None = None) -> Decision:
    """One round for one campaign/channel. Mutates `state` (a fresh one if None)."""
    st = state if state is not None else ChannelState(eff_bid=obs.bid)
    observed = obs.observed
    if obs.paused:
        return Decision(obs.bid, "paused", observed)
    if obs.budget_exhausted:
        return Decision(obs.bid, "budget_exhausted", observed)
    st.rounds += 1
    longest = max([policy.window_rounds] + [round(w / policy.round_s) for w, _ in obs.memory])
    keep = longest + policy.lag_rounds + 2 if obs.memory else policy.window_rounds + policy.lag_rounds
    weights = st.weights if len(st.weights) == len(st.history) else [1.0] * len(st.history)
    st.history = [*st.history, obs.bid][-keep:]
    st.weights = [*weights, max(obs.traffic_weight, 1e-6)][-keep:]
    limit = math.log(1 + policy.max_step)
    m = _clamp(obs.pacing_multiplier, 1e-6, 1.0)
    floor, cap = obs.bid_floor, obs.bid_cap
    st.eff_bid = _clamp(st.eff_bid, floor, cap)

    def final(
        target_bid: float,
        reason: ReasonCode,
        estimate: float | None,
        error: float | None,
        never_raise: bool = False,
    ) -> Decision:
        wanted = _clamp(target_bid, floor, cap)
        if never_raise:
            wanted = min(wanted, obs.bid)
        if obs.budget_headroom is not None and wanted > obs.bid:
            wanted = max(obs.bid, min(wanted, obs.bid * obs.budget_headroom))
        new_bid = guarded_bid(obs.bid, wanted, floor, cap, policy.max_step)
        move = math.log(new_bid / obs.bid)
        if abs(move) >= math.log(1 + policy.cooldown_step) - 1e-12:
            st.cooldown = policy.cooldown_rounds
        if reason in ("toward_target", "pacing_ahead", "pacing_behind"):
            if new_bid <= floor * (1 + 1e-9) and move < 0:
                reason = "at_floor"
            elif new_bid >= cap * (1 - 1e-9) and move > 0:
                reason = "at_cap"
        return Decision(new_bid, reason, observed, estimate, error)

    pace_reason: ReasonCode = "pacing_ahead" if m < 1.0 else "pacing_behind"
    # Spend with no conversions at all is evidence too: once a CPA campaign has spent
    # min_conversions targets' worth without converting, it is too expensive.
    starved = (
        obs.target_kind == "cpa" and obs.conversions == 0 and obs.spend >= policy.min_conversions * obs.target
    )
    seen = max([obs.conversions] + [f.conversions for _, f in obs.memory])
    if not st.learned and (seen >= policy.min_conversions or starved):
        st.learned = True
    # variable memory: grows a round at a time, back to the shortest window after a change
    windows = [_window_estimate(obs, st, w, f, policy) for w, f in sorted(obs.memory, key=lambda x: x[0])]
    chosen: _WindowEstimate | None = None
    if windows:
        if st.memory_s is not None:
            st.memory_s += policy.round_s
            if st.memory_s >= windows[-1].seconds:
                st.memory_s = None
        usable = [w for w in windows if st.memory_s is None or w.seconds <= st.memory_s + 1e-6] or windows[:1]
        if st.learned and _detect_change(usable, policy) is not None:
            st.memory_s = windows[0].seconds
            st.changes += 1
            usable = windows[:1]
        chosen = usable[-1]
    if not st.learned:
        # No efficiency moves while learning; pacing may still lower the bid, and bring it back
        # up toward the starting (efficiency) bid once spend falls behind the plan.
        moved = abs(st.eff_bid * m - obs.bid) > 1e-9 * obs.bid
        reason: ReasonCode = (
            ("pacing_ahead" if st.eff_bid * m < obs.bid else "pacing_behind") if moved else "learning"
        )
        return final(st.eff_bid * m, reason, None, None)
    if st.cooldown > 0:
        st.cooldown -= 1
        reason = pace_reason if abs(st.eff_bid * m - obs.bid) > 1e-9 * obs.bid else "cooldown"
        return final(st.eff_bid * m, reason, None, None, never_raise=True)
    evidence: float
    if chosen is not None:
        estimate, evidence = _memory_efficiency(obs, chosen, policy)
        window_bid = chosen.bid
        max_gain, half = policy.memory_gain, policy.memory_evidence_half
    else:
        estimate = shrunk_efficiency(obs, policy)
        # The bid the window's spend was bought at (geometric mean of the bids then in force).
        lagged = st.history[: -policy.lag_rounds] if len(st.history) > policy.lag_rounds else st.history
        lagged = lagged[-policy.window_rounds :]
        window_bid = math.exp(sum(math.log(b) for b in lagged) / len(lagged)) if lagged else obs.bid
        evidence = obs.add_to_carts if obs.add_to_carts > 0 else 4.0 * obs.conversions
        max_gain, half = policy.max_gain, policy.evidence_half
    old_eff = st.eff_bid
    held = False
    if starved:
        error = -limit * policy.elasticity
        move = -limit
    elif estimate is None or not 0 < estimate < math.inf:
        error, move = 0.0, 0.0
    else:
        window_error = _log_error(obs, estimate)
        # Model-based step: the window's efficiency implies the efficiency bid through the
        # elasticity (CPA ~ bid^elasticity); move part-way to it, more with more evidence.
        implied = window_bid * math.exp(window_error / policy.elasticity)
        gain = max_gain * evidence / (evidence + half) if evidence > 0 else 0.0
        step = gain * math.log(implied / st.eff_bid) if 0 < implied < math.inf else 0.0
        move = _clamp(step if math.isfinite(step) else 0.0, -limit, limit)
        behind_plan = obs.budget_headroom is not None and obs.budget_headroom > 1.0 and m >= 1.0
        # A detected change (memory cut back to the short window) is already significant evidence:
        # the short window's few carts must not hold the cut it calls for.
        after_change = st.memory_s is not None
        if move < 0 and obs.budget_bound and behind_plan and not after_change and evidence > 0:
            # the estimate's standard error is ~1/sqrt(carts) on the log scale
            held = -window_error < policy.bound_hold_z / math.sqrt(evidence)
            move = 0.0 if held else move
        # the error at the bid in force now, for the reason code and the decision log
        error = window_error - policy.elasticity * math.log(obs.bid / window_bid)
    e = error / policy.elasticity
    in_band = abs(error) <= math.log(1 + policy.band)
    new_eff = _clamp(st.eff_bid * math.exp(move), floor, cap)
    st.integral += math.log(new_eff / st.eff_bid)
    st.eff_bid = new_eff
    st.prev_error2, st.prev_error = st.prev_error, e
    # While pacing binds (m < 1) the bid is the budget's, not the efficiency's: a move of the
    # efficiency bid leaves it alone (the optimizer rescales the multiplier to match) unless the
    # efficiency bid falls below it.
    wanted = st.eff_bid * m if m >= 1.0 else min(st.eff_bid, old_eff * m)
    if in_band and abs(math.log(wanted / obs.bid)) < 1e-9:
        return final(wanted, "within_band", estimate, error)
    if m < 1.0 and wanted < obs.bid and (in_band or e >= 0):
        return final(wanted, "pacing_ahead", estimate, error)
    if in_band:
        return final(wanted, "pacing_behind" if wanted > obs.bid else "within_band", estimate, error)
    if held:
        return final(wanted, "budget_hold", estimate, error)
    return final(wanted, "toward_target", estimate, error)


# --- one control round over every campaign: shared by the service and the evaluation ------------


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


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    campaign_id: str
    channel: str
    old_bid: float
    decision: Decision
    figures: ChannelFigures
    pacing: PacingDecision | None


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
        paused = set(inp.paused)
        out: list[ChannelDecision] = []
        # the traffic share of the round just ended: weights the bids of the variable memory
        sid, rs = inp.seconds_into_day, self.policy.round_s
        shape = self.pacing_policy.hour_shape
        weight = shape_mass(max(0.0, sid - rs), min(sid, DAY_S), shape)
        if sid < rs:
            weight += shape_mass(DAY_S - (rs - sid), DAY_S, shape)
        for c in self.campaigns:
            cid = c.campaign_id
            spent = inp.spent_today.get(cid, 0.0)
            exhausted = spent >= c.daily_budget * 0.999
            pstate = self.pacing_states.setdefault(cid, PacingState())
            pacing: PacingDecision | None = None
            if cid not in paused and not exhausted:
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
            pooled = ChannelFigures(
                spend=sum(inp.window.get((cid, ch), ChannelFigures()).spend for ch in c.channels),
                conversions=sum(inp.window.get((cid, ch), ChannelFigures()).conversions for ch in c.channels),
                gmv=sum(inp.window.get((cid, ch), ChannelFigures()).gmv for ch in c.channels),
            )
            prior: float | None = None
            if pooled.conversions >= self.policy.min_conversions:
                prior = (
                    pooled.spend / pooled.conversions
                    if c.target_kind == "cpa"
                    else (pooled.gmv / pooled.spend if pooled.spend > 0 else None)
                )
            long = inp.long_window or inp.window
            lf = [long.get((cid, ch), ChannelFigures()) for ch in c.channels]
            long_carts = sum(f.add_to_carts for f in lf)
            long_conv = sum(f.conversions for f in lf)
            long_gmv = sum(f.gmv for f in lf)
            # checkout/cart ratio: the campaign's, shrunk toward a generic prior
            k_prior, r_prior = self.policy.ratio_prior_strength, self.policy.ratio_prior
            campaign_ratio = (long_conv + k_prior * r_prior) / (long_carts + k_prior)
            aov = long_gmv / long_conv if long_conv > 0 else None
            if aov is None and pooled.conversions > 0:
                aov = pooled.gmv / pooled.conversions
            eff_before = {ch: st.eff_bid for (k, ch), st in self.channel_states.items() if k == cid}
            for ch, lfig in zip(c.channels, lf, strict=True):
                key = (cid, ch)
                bid = inp.bids.get(key, c.start_bids[ch])
                ratio = (lfig.conversions + self.policy.ratio_channel_strength * campaign_ratio) / (
                    lfig.add_to_carts + self.policy.ratio_channel_strength
                )
                figs = inp.window.get(key, ChannelFigures())
                memory = [(w, per.get(key, ChannelFigures(lagged_spend=0.0))) for w, per in inp.windows.items()]
                st = self.channel_states.setdefault(key, ChannelState(eff_bid=bid))
                if key in inp.overrides and cid not in paused:
                    manual = min(c.bid_cap, max(c.bid_floor, inp.overrides[key]))
                    st.eff_bid, st.cooldown = manual, 0
                    st.prev_error = st.prev_error2 = None
                    self.pacing_states[cid].multiplier = 1.0
                    d = Decision(manual, "manual_override", None)
                else:
                    obs = Observation(
                        campaign_id=cid,
                        channel=ch,
                        target_kind=c.target_kind,
                        target=c.target,
                        bid=bid,
                        bid_floor=c.bid_floor,
                        bid_cap=c.bid_cap,
                        spend=figs.spend,
                        conversions=figs.conversions,
                        gmv=figs.gmv,
                        paused=cid in paused,
                        budget_exhausted=exhausted,
                        prior=prior,
                        pacing_multiplier=pstate.multiplier,
                        order_value=aov,
                        add_to_carts=figs.add_to_carts,
                        checkout_ratio=ratio if (figs.add_to_carts > 0 or memory) else None,
                        memory=tuple((w, f) for w, f in memory),
                        budget_headroom=pacing.headroom if pacing is not None else None,
                        budget_bound=bound,
                        traffic_weight=weight,
                    )
                    d = decide(obs, self.policy, st)
                out.append(ChannelDecision(cid, ch, bid, d, figs, pacing))
            # The bids pacing holds stay put when the efficiency bids move (decide): rescale the
            # multiplier to match, so next round's pacing starts from the bids really in force.
            if pstate.multiplier < 1.0 and cid not in paused:
                moves = [
                    math.log(eff_before[ch] / self.channel_states[(cid, ch)].eff_bid)
                    for ch in c.channels
                    if ch in eff_before and self.channel_states[(cid, ch)].eff_bid > 0
                ]
                if moves:
                    pstate.multiplier = min(1.0, pstate.multiplier * math.exp(sum(moves) / len(moves)))
        return out
