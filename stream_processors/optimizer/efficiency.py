"""The efficiency (CPA or ROAS) a control round acts on, and the evidence behind it. Pure.

Checkouts are few, so the estimate leans on add-to-carts (4-6x more frequent) times the long-run
checkout ratio, and shrinks the window's figure toward the campaign's pooled one. With several
windows (`Observation.memory`) the estimate has variable memory: it reads the longest window that
starts after the last change detected in the bid-normalised cart rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stream_processors.optimizer.control_types import ChannelFigures, ChannelState, ControlPolicy, Observation


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
class WindowEstimate:
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
) -> WindowEstimate:
    s0 = f.spend
    s1 = f.lagged_spend if f.lagged_spend is not None else f.spend
    lag = max(policy.conversion_lag_s, 1.0)
    # spend is smooth in time: interpolate between the unlagged and the lagged windows
    cart_spend = max(0.0, s0 + (policy.cart_lag_s / lag) * (s1 - s0))
    rounds = max(1, round(seconds / policy.round_s))
    bid = _window_bid(st, rounds, round(policy.cart_lag_s / policy.round_s)) or obs.bid
    exposure = cart_spend * (bid / obs.bid) ** -policy.elasticity
    return WindowEstimate(seconds, f.add_to_carts, f.conversions, f.gmv, cart_spend, s1, bid, exposure)


def _detect_change(windows: list[WindowEstimate], policy: ControlPolicy) -> WindowEstimate | None:
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


def choose_window(obs: Observation, st: ChannelState, policy: ControlPolicy) -> WindowEstimate | None:
    """Variable memory: the window the estimate reads, None without `obs.memory`. The memory grows a
    round at a time and goes back to the shortest window after a change (counted in `st.changes`);
    changes are looked for only once the channel has learned. Mutates `st`."""
    windows = [_window_estimate(obs, st, w, f, policy) for w, f in sorted(obs.memory, key=lambda x: x[0])]
    if not windows:
        return None
    if st.memory_s is not None:
        st.memory_s += policy.round_s
        if st.memory_s >= windows[-1].seconds:
            st.memory_s = None
    usable = [w for w in windows if st.memory_s is None or w.seconds <= st.memory_s + 1e-6] or windows[:1]
    if st.learned and _detect_change(usable, policy) is not None:
        st.memory_s = windows[0].seconds
        st.changes += 1
        usable = windows[:1]
    return usable[-1]


def _memory_efficiency(
    obs: Observation, w: WindowEstimate, policy: ControlPolicy
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


@dataclass(frozen=True, slots=True)
class Estimate:
    """The efficiency a round acts on, and how far to trust it."""

    value: float | None  # shrunk CPA/ROAS; None: nothing to go on
    evidence: float  # in add-to-carts (a checkout counts as 4)
    bid: float  # the bid the window's spend was bought at
    max_gain: float  # the step's gain with unlimited evidence ...
    evidence_half: float  # ... and the evidence at which it is half that


def round_estimate(
    obs: Observation, st: ChannelState, policy: ControlPolicy, chosen: WindowEstimate | None
) -> Estimate:
    """From the variable-memory window `chosen` when there is one, else from the single window."""
    if chosen is not None:
        value, evidence = _memory_efficiency(obs, chosen, policy)
        return Estimate(value, evidence, chosen.bid, policy.memory_gain, policy.memory_evidence_half)
    # The bid the window's spend was bought at (geometric mean of the bids then in force).
    lagged = st.history[: -policy.lag_rounds] if len(st.history) > policy.lag_rounds else st.history
    lagged = lagged[-policy.window_rounds :]
    bid = math.exp(sum(math.log(b) for b in lagged) / len(lagged)) if lagged else obs.bid
    evidence = obs.add_to_carts if obs.add_to_carts > 0 else 4.0 * obs.conversions
    return Estimate(shrunk_efficiency(obs, policy), evidence, bid, policy.max_gain, policy.evidence_half)


def log_error(obs: Observation, estimate: float) -> float:
    """How far the estimate is from the target, on the log scale; positive: room to bid higher."""
    # A difference of logs, not the log of a ratio: for a tiny positive estimate (5e-324, found by
    # hypothesis) the ratio underflows to 0 or overflows to inf, while each log stays finite.
    if obs.target_kind == "cpa":
        return math.log(obs.target) - math.log(estimate)
    return math.log(estimate) - math.log(obs.target)
