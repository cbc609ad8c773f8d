"""One control round for one campaign/channel: from observed efficiency to a new bid. Pure.

Per campaign and channel, a PI controller on the log of the efficiency error (Zhang et al., WSDM
2016) steers an *efficiency bid*: the bid at which the channel's CPA (or ROAS) meets the target.
Log space makes a CPA twice the target and half the target symmetric moves and keeps bids
positive. The controller is written in velocity form, so its integral is the log of the bid
itself; anti-windup is integrator clamping (the efficiency bid stays inside [floor, cap]) plus
conditional integration (no upward integration while pacing, not efficiency, limits the bid).

Guardrails: a learning phase until `min_conversions`; Bayesian shrinkage of the window's
efficiency toward the campaign's pooled figure (worth `prior_strength` conversions, efficiency.py);
a deadband; a maximum step per round; floors and caps; a cooldown after a large move. Pacing
(pacing.py) multiplies the efficiency bid by a campaign multiplier <= 1 when the day's budget would
otherwise run out early. Every decision carries its reason code and the figures it saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.decisions import ReasonCode
from stream_processors.optimizer.control_types import ChannelState, ControlPolicy, Decision, Observation
from stream_processors.optimizer.efficiency import Estimate, choose_window, log_error, round_estimate


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
    if obs.paused:
        return Decision(obs.bid, "paused", obs.observed)
    if obs.budget_exhausted:
        return Decision(obs.bid, "budget_exhausted", obs.observed)
    _remember_bid(obs, policy, st)
    m = _clamp(obs.pacing_multiplier, 1e-6, 1.0)
    st.eff_bid = _clamp(st.eff_bid, obs.bid_floor, obs.bid_cap)
    # Spend with no conversions at all is evidence too: once a CPA campaign has spent
    # min_conversions targets' worth without converting, it is too expensive.
    starved = (
        obs.target_kind == "cpa" and obs.conversions == 0 and obs.spend >= policy.min_conversions * obs.target
    )
    seen = max([obs.conversions] + [f.conversions for _, f in obs.memory])
    if not st.learned and (seen >= policy.min_conversions or starved):
        st.learned = True
    chosen = choose_window(obs, st, policy)
    paced = st.eff_bid * m
    moved_by_pacing = abs(paced - obs.bid) > 1e-9 * obs.bid
    if not st.learned:
        # No efficiency moves while learning; pacing may still lower the bid, and bring it back
        # up toward the starting (efficiency) bid once spend falls behind the plan.
        pacing_reason: ReasonCode = "pacing_ahead" if paced < obs.bid else "pacing_behind"
        return _finish(obs, policy, st, paced, pacing_reason if moved_by_pacing else "learning")
    if st.cooldown > 0:
        st.cooldown -= 1
        held_reason: ReasonCode = (
            ("pacing_ahead" if m < 1.0 else "pacing_behind") if moved_by_pacing else "cooldown"
        )
        return _finish(obs, policy, st, paced, held_reason, never_raise=True)
    return _efficiency_round(obs, policy, st, m, round_estimate(obs, st, policy, chosen), starved)


def _remember_bid(obs: Observation, policy: ControlPolicy, st: ChannelState) -> None:
    """Count the round and append the bid in force (and its traffic weight) to the history, kept
    as long as the longest window plus the lag needs."""
    st.rounds += 1
    longest = max([policy.window_rounds] + [round(w / policy.round_s) for w, _ in obs.memory])
    keep = longest + policy.lag_rounds + 2 if obs.memory else policy.window_rounds + policy.lag_rounds
    weights = st.weights if len(st.weights) == len(st.history) else [1.0] * len(st.history)
    st.history = [*st.history, obs.bid][-keep:]
    st.weights = [*weights, max(obs.traffic_weight, 1e-6)][-keep:]


@dataclass(frozen=True, slots=True)
class _Move:
    error: float  # log error at the bid in force now (positive: room to bid higher)
    move: float  # log move of the efficiency bid
    held: bool  # a cut the evidence does not support, held (ControlPolicy.bound_hold_z)


def _efficiency_move(
    obs: Observation, policy: ControlPolicy, st: ChannelState, m: float, est: Estimate, starved: bool
) -> _Move:
    limit = math.log(1 + policy.max_step)
    if starved:
        return _Move(-limit * policy.elasticity, -limit, False)
    if est.value is None or not 0 < est.value < math.inf:
        return _Move(0.0, 0.0, False)
    window_error = log_error(obs, est.value)
    # Model-based step: the window's efficiency implies the efficiency bid through the
    # elasticity (CPA ~ bid^elasticity); move part-way to it, more with more evidence.
    implied = est.bid * math.exp(window_error / policy.elasticity)
    evidence = est.evidence
    gain = est.max_gain * evidence / (evidence + est.evidence_half) if evidence > 0 else 0.0
    step = gain * math.log(implied / st.eff_bid) if 0 < implied < math.inf else 0.0
    move = _clamp(step if math.isfinite(step) else 0.0, -limit, limit)
    behind_plan = obs.budget_headroom is not None and obs.budget_headroom > 1.0 and m >= 1.0
    # A detected change (memory cut back to the short window) is already significant evidence:
    # the short window's few carts must not hold the cut it calls for.
    after_change = st.memory_s is not None
    held = False
    if move < 0 and obs.budget_bound and behind_plan and not after_change and evidence > 0:
        # the estimate's standard error is ~1/sqrt(carts) on the log scale
        held = -window_error < policy.bound_hold_z / math.sqrt(evidence)
        move = 0.0 if held else move
    # the error at the bid in force now, for the reason code and the decision log
    error = window_error - policy.elasticity * math.log(obs.bid / est.bid)
    return _Move(error, move, held)


def _efficiency_round(
    obs: Observation, policy: ControlPolicy, st: ChannelState, m: float, est: Estimate, starved: bool
) -> Decision:
    """Move the efficiency bid toward what the estimate implies; the bid is that times pacing's."""
    old_eff = st.eff_bid
    mv = _efficiency_move(obs, policy, st, m, est, starved)
    e = mv.error / policy.elasticity
    in_band = abs(mv.error) <= math.log(1 + policy.band)
    new_eff = _clamp(st.eff_bid * math.exp(mv.move), obs.bid_floor, obs.bid_cap)
    st.integral += math.log(new_eff / st.eff_bid)
    st.eff_bid = new_eff
    st.prev_error2, st.prev_error = st.prev_error, e
    # While pacing binds (m < 1) the bid is the budget's, not the efficiency's: a move of the
    # efficiency bid leaves it alone (the optimizer rescales the multiplier to match) unless the
    # efficiency bid falls below it.
    wanted = st.eff_bid * m if m >= 1.0 else min(st.eff_bid, old_eff * m)
    reason: ReasonCode
    if in_band and abs(math.log(wanted / obs.bid)) < 1e-9:
        reason = "within_band"
    elif m < 1.0 and wanted < obs.bid and (in_band or e >= 0):
        reason = "pacing_ahead"
    elif in_band:
        reason = "pacing_behind" if wanted > obs.bid else "within_band"
    elif mv.held:
        reason = "budget_hold"
    else:
        reason = "toward_target"
    return _finish(obs, policy, st, wanted, reason, est.value, mv.error)


def _finish(
    obs: Observation,
    policy: ControlPolicy,
    st: ChannelState,
    target_bid: float,
    reason: ReasonCode,
    estimate: float | None = None,
    error: float | None = None,
    never_raise: bool = False,
) -> Decision:
    """The bid through the guardrails (budget headroom, max step, floor and cap); a large move starts
    a cooldown; a move stopped by the floor or cap says so."""
    floor, cap = obs.bid_floor, obs.bid_cap
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
    return Decision(new_bid, reason, obs.observed, estimate, error)
