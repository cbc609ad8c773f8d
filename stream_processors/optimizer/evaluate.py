"""`seedloop evaluate` for the bid optimizer: the seeded scenario as a pure simulation.

The same code as the live loop (producers.simulator.Simulator, producers.scheduler.AdScheduler,
producers.traffic.TrafficModel, this package's BidOptimizer), on a simulated clock, without Kafka
or Redis. Policies:

- `static`: the seeded starting bids, never moved (the scheduler's hard daily cap still applies);
- `optimizer`: a control round every `round_s` simulated seconds (default 30 minutes). Its input
  is what the live pipeline would see: the simulated events attributed last-touch by the
  attribution engine itself (journey.apply_events), summed into event-time buckets, read over the
  same windows as the service;
- `oracle`: constant bids chosen knowing the true funnel: per campaign, the bids (grid search over
  every channel) that maximise expected GMV while meeting the CPA/ROAS target and the daily budget;
- `pid` and `pacing`: the controllers the field uses (baselines.py): Zhang et al.'s PID on the
  efficiency error, and bid modification to a traffic-shaped budget plan alone (Smart Pacing). They
  read the same attributed figures, pass the same guardrails and see the same market draws.

Outcomes are scored by ground truth (the GMV the simulator knows each campaign's ads caused), not
by attribution: attribution is noisy and biased across campaigns, the advertiser's real return is
not. Settling is judged on the *true* expected efficiency of the bids in force (from the traffic
model), because the window's observed CPA of a few conversions is noise, not the state of the
controller: a campaign has settled at round r when from r on its true CPA/ROAS stays within +-10%
of its reference: the target, or, where the budget binds first, the oracle's budget-limited
efficiency. A shock scenario halves one campaign's true conversion rate mid-run.

One seed's outcome is one draw of a noisy process (a small campaign's day of checkouts is +-15%
noise against the +-10% band), so `run_evaluate_seeds` runs several seeds and summarises them
(median and worst). The simulator's random streams are per campaign, channel and minute, so two
controllers on the same seed see the same luck wherever they bid alike (common random numbers).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from producers.scenario import Campaign, Scenario, load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, Truth, load_truth
from schemas.decisions import BidAdjustment
from schemas.events import Channel
from stream_processors.attribution.journey import EngineConfig, Increments, UserState, apply_events
from stream_processors.attribution.models import Lookback
from stream_processors.figures import campaign_figures
from stream_processors.optimizer import scorecard
from stream_processors.optimizer.baselines import CONTROLLED, PidGains, make_controller
from stream_processors.optimizer.controller import (
    ChannelFigures,
    ControlPolicy,
    RoundInput,
    with_lagged_spend,
)
from stream_processors.optimizer.levers import LeverHeadroom, PartCurves, lever_headroom
from stream_processors.optimizer.pacing import PacingPolicy, plan_fraction
from stream_processors.optimizer.specs import campaign_specs, catalogue_price
from stream_processors.processor import BatchPlan, Catalogue, _in_base_currency
from stream_processors.store.memory import MemoryState

DAY_S = 86_400.0
BAND = math.log(1.10)
# the share of campaign-rounds in band is counted from this round on (the settle target's horizon)
IN_BAND_FROM_ROUND = 20
# pid and pacing: the controllers the field uses (baselines.py), on the same seeds and draws
POLICIES = ("static", "optimizer", "oracle", "pid", "pacing")
SHOCKED = ("optimizer", "static", "pid", "pacing")


@dataclass(frozen=True, slots=True)
class EvalConfig:
    days: float = 2.0
    seed: int = 7
    round_s: float = 1800.0
    window_s: float = 8 * 3600.0
    conversion_lag_s: float = 3600.0
    users: int = 200_000
    shock_campaign: str = "c_pmpm_launch"
    shock_multiplier: float = 0.5
    policy: ControlPolicy = field(default_factory=ControlPolicy)
    traffic_shaped_plan: bool = True
    pace_window_s: float = 3600.0
    long_window_s: float = DAY_S  # the checkout/cart ratio and order value are pooled over this
    # the variable-memory windows of the efficiency estimate (controller.ControlPolicy.change_*)
    memory_windows_s: tuple[float, ...] = (4 * 3600.0, 8 * 3600.0, DAY_S)
    attribution_scope: Literal["product", "any"] = "product"  # as Settings.attribution_scope
    # Market size: every channel's ad inventory, every daily budget and the user base times this.
    # Bids, rates and targets are unchanged, so the same controller sees this many times the
    # conversions per round: how settling depends on the evidence a round carries.
    volume: float = 1.0
    # the PID baseline's gains (tuned on seeds 3 and 5, never on the evaluation seeds: baselines.py)
    pid_gains: PidGains = field(default_factory=PidGains)


# --- the truth side: expected daily figures and the oracle -------------------------------------


class Economics:
    """Expected daily spend, checkouts and GMV of a bid, from the traffic model (the hidden truth)."""

    def __init__(self, scenario: Scenario, traffic: TrafficModel) -> None:
        self.scenario = scenario
        self.traffic = traffic
        self.day_mass = sum(traffic.truth.hour_shape)
        shares = {s.segment_id: s.share for s in scenario.segments}
        self.weights = {c.campaign_id: {g: shares[g] for g in c.segments} for c in scenario.campaigns}
        self.price = {c.campaign_id: catalogue_price(scenario, c) for c in scenario.campaigns}

    @classmethod
    def load(cls, seeds_dir: Path, volume: float = 1.0) -> Economics:
        """The seeded market (scaled by `volume`, see scaled_market) and a fresh traffic model."""
        scenario, truth = scaled_market(load_scenario(seeds_dir), load_truth(seeds_dir), volume)
        return cls(scenario, TrafficModel(truth))

    def daily(
        self, cid: str, ch: str, bid: float, segment: str | None = None, hour: int | None = None
    ) -> tuple[float, float, float]:
        """Expected (spend, checkouts, GMV) per day at `bid`; of one segment's or one hour's share
        of the auctions only, when given (the parts a segment or hour bid multiplier would split)."""
        ct = self.traffic.channel(cid, ch)
        weights = self.weights[cid]
        mass = self.day_mass if hour is None else self.traffic.truth.hour_shape[hour]
        share = 1.0 if segment is None else weights[segment] / sum(weights.values())
        views = ct.inventory_per_hour * (1 - math.exp(-bid / ct.bid_scale)) * mass * share
        per_view = self.traffic.expected_checkouts_per_view(
            cid, ch, bid, weights if segment is None else {segment: 1.0}
        )
        conv = views * per_view
        spend = views * max(1, round(bid / 10)) / 100.0
        return spend, conv, conv * self.price[cid]

    def lever_headroom(self, c: Campaign, lever: Literal["segment", "hour"], points: int = 60) -> LeverHeadroom:
        """GMV headroom of a bid per segment (or per hour) over one bid per channel, with perfect
        knowledge of the truth (levers.lever_headroom)."""
        grid = np.geomspace(c.bid_floor, c.bid_cap, points)
        parts = list(self.weights[c.campaign_id]) if lever == "segment" else [str(h) for h in range(24)]

        def curves(ch: str, part: str, bids: np.ndarray) -> PartCurves:
            rows = [
                self.daily(c.campaign_id, ch, float(b), segment=part)
                if lever == "segment"
                else self.daily(c.campaign_id, ch, float(b), hour=int(part))
                for b in bids
            ]
            a = np.array(rows)
            return a[:, 0], a[:, 1], a[:, 2]

        return lever_headroom(
            list(c.channels), parts, curves, grid, budget=c.daily_budget, target_kind=c.target_kind, target=c.target
        )

    def efficiency(self, c: Campaign, bids: Mapping[str, float]) -> float:
        s = cv = g = 0.0
        for ch, b in bids.items():
            sp, co, gm = self.daily(c.campaign_id, ch, b)
            s, cv, g = s + sp, cv + co, g + gm
        return s / cv if c.target_kind == "cpa" else g / s

    def oracle(self, c: Campaign, points: int = 60) -> tuple[dict[str, float], float, bool]:
        """Bids maximising expected GMV under the target and the budget; their efficiency; budget-bound?"""
        chans = list(c.channels)
        grid = np.geomspace(c.bid_floor, c.bid_cap, points if len(chans) < 3 else 36)
        per = [np.array([self.daily(c.campaign_id, ch, float(b)) for b in grid]) for ch in chans]
        mesh = np.meshgrid(*[np.arange(len(grid))] * len(chans), indexing="ij")
        spend = sum(per[i][mesh[i], 0] for i in range(len(chans)))
        conv = sum(per[i][mesh[i], 1] for i in range(len(chans)))
        gmv = sum(per[i][mesh[i], 2] for i in range(len(chans)))
        budget = c.daily_budget * 0.97  # a margin: Poisson days above the mean hit the hard cap
        ok = spend <= budget
        ok &= (spend <= c.target * conv) if c.target_kind == "cpa" else (gmv >= c.target * spend)
        if not ok.any():
            idx = tuple(int(i) for i in np.zeros(len(chans), dtype=int))
        else:
            score = np.where(ok, gmv, -1.0)
            idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), score.shape))
        bids: dict[str, float] = {str(ch): float(grid[idx[i]]) for i, ch in enumerate(chans)}
        if ok.any():
            bids = self._refine(c, chans, grid, idx, budget)
        eff = self.efficiency(c, bids)
        total = sum(self.daily(c.campaign_id, ch, b)[0] for ch, b in bids.items())
        bound = total >= budget * 0.95
        return bids, eff, bound

    def _refine(
        self, c: Campaign, chans: Sequence[str], grid: np.ndarray, idx: tuple[int, ...], budget: float
    ) -> dict[str, float]:
        """A finer grid around the coarse optimum: the coarse grid steps bids by ~5%, which is ~7%
        of CPA/ROAS, most of the +-10% band the controller is judged by."""
        axes = []
        for i in idx:
            lo, hi = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
            axes.append(np.geomspace(lo, hi, 25 if len(chans) < 3 else 13))
        per = [np.array([self.daily(c.campaign_id, ch, float(b)) for b in axes[k]]) for k, ch in enumerate(chans)]
        mesh = np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")
        spend = sum(per[k][mesh[k], 0] for k in range(len(chans)))
        conv = sum(per[k][mesh[k], 1] for k in range(len(chans)))
        gmv = sum(per[k][mesh[k], 2] for k in range(len(chans)))
        ok = spend <= budget
        ok &= (spend <= c.target * conv) if c.target_kind == "cpa" else (gmv >= c.target * spend)
        score = np.where(ok, gmv, -1.0)
        best = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), score.shape))
        return {str(ch): float(axes[k][best[k]]) for k, ch in enumerate(chans)}


def in_band_bound(carts: float) -> float:
    """The most probability any controller has of a campaign's true efficiency being within +-10%
    when all it has learned of the campaign's conversion rate is `carts` expected add-to-carts.

    CPA ~ bid^e / k for an unknown conversion scale k: a controller aiming at the target through an
    estimate k^ reaches an efficiency off by exactly k^/k, whatever the elasticity e. Add-to-carts
    are Poisson (the more frequent signal; the checkout ratio is taken as known, which only helps),
    so by the Cramer-Rao bound an unbiased log k^ has a standard error of at least 1/sqrt(N), and
    P(|log k^/k| <= log 1.1) <= 2 Phi(log 1.1 * sqrt(N)) - 1. A prior as good as the truth would
    beat it; the seeded starting bids are 10-45% off the reference, so they are not."""
    if carts <= 0:
        return 0.0
    return math.erf(BAND * math.sqrt(carts) / math.sqrt(2.0))


def evidence_by_round(seeds_dir: Path, cfg: EvalConfig, rounds: int = IN_BAND_FROM_ROUND) -> dict[str, Any]:
    """Expected add-to-carts and checkouts each campaign's ads cause in the first `rounds` control
    rounds at the oracle's bids (from the traffic model, the same for every seed), and the bound
    they put on being within +-10% of the reference at that round (`in_band_bound`)."""
    econ = Economics.load(seeds_dir, cfg.volume)
    scenario, traffic = econ.scenario, econ.traffic
    start = SimConfig(seed=cfg.seed).start_ts
    rows: dict[str, dict[str, float]] = {}
    everyone = 1.0
    for c in scenario.campaigns:
        bids = econ.oracle(c)[0]
        carts = checkouts = 0.0
        for ch, b in bids.items():
            ct = traffic.channel(c.campaign_id, ch)
            per_view = traffic.expected_checkouts_per_view(c.campaign_id, ch, b, econ.weights[c.campaign_id])
            for r in range(rounds):
                views = traffic.views_per_hour(c.campaign_id, ch, b, start + r * cfg.round_s) * cfg.round_s / 3600.0
                checkouts += views * per_view
                carts += views * per_view / ct.p_checkout
        bound = in_band_bound(carts)
        everyone *= bound
        rows[c.campaign_id] = {
            "carts": round(carts, 1),
            "checkouts": round(checkouts, 1),
            "in_band_bound": round(bound, 4),
        }
    return {"rounds": rounds, "volume": cfg.volume, "campaigns": rows, "all_in_band_bound": round(everyone, 4)}


@functools.lru_cache(maxsize=8)  # the same for every seed and policy: once per market and horizon
def mean_in_band_bound(seeds_dir: Path, volume: float, round_s: float, rounds: int) -> float | None:
    """The mean, over campaigns and rounds IN_BAND_FROM_ROUND .. rounds-1 (the rounds the in-band
    share counts), of the bound on being within +-10% of the reference given the add-to-carts the
    campaign's ads cause by that round at the oracle's bids (evidence_by_round, per round)."""
    econ = Economics.load(seeds_dir, volume)
    traffic = econ.traffic
    start = SimConfig().start_ts  # the simulation's clock starts here whatever the seed
    total = count = 0.0
    for c in econ.scenario.campaigns:
        bids = econ.oracle(c)[0]
        carts = 0.0
        for r in range(rounds):
            if r >= IN_BAND_FROM_ROUND:
                total += in_band_bound(carts)
                count += 1
            for ch, b in bids.items():
                ct = traffic.channel(c.campaign_id, ch)
                per_view = traffic.expected_checkouts_per_view(c.campaign_id, ch, b, econ.weights[c.campaign_id])
                views = traffic.views_per_hour(c.campaign_id, ch, b, start + r * round_s) * round_s / 3600.0
                carts += views * per_view / ct.p_checkout
    return total / count if count else None  # a run shorter than 20 rounds counts none


@functools.lru_cache(maxsize=4)  # the same for every seed: computed once per scenario and volume
def lever_report(seeds_dir: Path, volume: float, points: int = 120) -> dict[str, Any]:
    """Per campaign, the perfect-knowledge GMV headroom of a bid per user segment and of a bid per
    hour of the day over one bid per channel (Economics.lever_headroom). The truth gives hours no
    effect on conversion, so the hour figure is the method's own resolution: a lever pays only if
    its headroom clearly exceeds it (and the seed-to-seed noise of the evaluation)."""
    econ = Economics.load(seeds_dir, volume)
    scenario = econ.scenario
    rows: dict[str, dict[str, float]] = {}
    totals = {"segment": [0.0, 0.0], "hour": [0.0, 0.0]}
    for c in scenario.campaigns:
        row: dict[str, float] = {}
        for lever in ("segment", "hour"):
            h = econ.lever_headroom(c, lever, points)
            row[lever] = round(h.gain, 4)
            totals[lever][0] += h.split_gmv
            totals[lever][1] += h.uniform_gmv
        rows[c.campaign_id] = row
    overall = {k: round(v[0] / v[1] - 1.0, 4) if v[1] > 0 else 0.0 for k, v in totals.items()}
    return {"campaigns": rows, "overall": overall}


# --- in-process attribution: the figures the live optimizer would read from Redis ---------------


class FigureStore:
    """Attributes the simulation's events in process, as the worker would, and keeps the figures
    in the in-memory state store (store/memory.py), read by event-time window as the live
    optimizer reads Redis. One partition: figures are sums, so partitioning would not change them."""

    def __init__(self, bucket_s: int, catalogue: Catalogue, campaign_products: Mapping[str, frozenset[str]]) -> None:
        self.bucket_s = bucket_s
        self.catalogue = catalogue
        self.cfg = EngineConfig(
            lookback=Lookback(view_s=DAY_S, engaged_s=7 * DAY_S),
            half_life_s=6 * 3600.0,
            lateness_s=3600.0,
            bucket_s=bucket_s,
            models=("last",),
            campaign_products=campaign_products,
        )
        self.users: dict[str, UserState] = defaultdict(UserState)
        self.state = MemoryState(partitions=1, bucket_s=bucket_s)
        self._epoch = self.state.claim(0)

    def apply(self, events: Sequence[Any], now: float) -> None:
        out = Increments()
        horizon = now - 2 * 3600.0
        for raw in events:
            e = _in_base_currency(raw, self.catalogue)  # as the worker does before attributing
            apply_events(self.users[e.user_id], [e], self.cfg, out, horizon=horizon)
        # Only the figures go to the store (the users' states stay decoded above, and there are no
        # offsets to skip: the simulation hands every event over once).
        figures = BatchPlan(0, {}, {}, out, Counter(), [], [], [], Counter())
        self.state.apply(figures, self._epoch)

    def window_with_lag(self, start: float, end: float, lag: float) -> dict[tuple[str, str], ChannelFigures]:
        """Figures over [start, end) with `lagged_spend`, the spend over the span shifted back by `lag`."""
        return with_lagged_spend(self.window(start, end), self.window(start - lag, end - lag))

    def window(self, start: float, end: float) -> dict[tuple[str, str], ChannelFigures]:
        fields = self.state.window(start, end)
        out: dict[tuple[str, str], ChannelFigures] = {}
        for cid, fig in campaign_figures(fields, ("last",)).items():
            for ch, per_model in fig.by_channel.items():
                e = per_model["last"]
                out[(cid, ch)] = ChannelFigures(e.spend, e.checkouts, e.gmv, e.add_to_carts)
        return out


# --- one run --------------------------------------------------------------------------------------


def scaled_market(scenario: Scenario, truth: Truth, volume: float) -> tuple[Scenario, Truth]:
    """The same market `volume` times as large: inventory and budgets scaled, all else equal."""
    if volume == 1.0:
        return scenario, truth
    campaigns = [c.model_copy(update={"daily_budget": c.daily_budget * volume}) for c in scenario.campaigns]
    per = {
        cid: {ch: t.model_copy(update={"inventory_per_hour": t.inventory_per_hour * volume}) for ch, t in chans.items()}
        for cid, chans in truth.campaigns.items()
    }
    return scenario.model_copy(update={"campaigns": campaigns}), truth.model_copy(update={"campaigns": per})


def _run(seeds_dir: Path, cfg: EvalConfig, policy: str, shock: bool) -> dict[str, Any]:
    econ = Economics.load(seeds_dir, cfg.volume)
    scenario, traffic = econ.scenario, econ.traffic
    scheduler = AdScheduler(scenario)
    sim = Simulator(scenario, traffic, scheduler, SimConfig(seed=cfg.seed, users=round(cfg.users * cfg.volume)))
    start = sim.now
    n_rounds = max(1, round(cfg.days * DAY_S / cfg.round_s))
    shock_round = n_rounds // 2 if shock else None
    oracle = {c.campaign_id: econ.oracle(c) for c in scenario.campaigns}
    pacing = PacingPolicy(hour_shape=tuple(traffic.truth.hour_shape) if cfg.traffic_shaped_plan else None)
    optimizer = (
        make_controller(policy, campaign_specs(scenario), cfg.policy, pacing, cfg.pid_gains)
        if policy in CONTROLLED
        else None
    )
    catalogue = Catalogue(scenario.campaign_channels(), scenario.fx.base, scenario.rates_to_base())
    products = scenario.campaign_products() if cfg.attribution_scope == "product" else {}
    store = FigureStore(int(cfg.round_s), catalogue, products) if optimizer is not None else None
    if policy == "oracle":
        _set_bids(scheduler, {c.campaign_id: oracle[c.campaign_id][0] for c in scenario.campaigns})
    trace: dict[str, dict[str, list[Any]]] = {
        c.campaign_id: {"eff": [], "ref": [], "spent": [], "plan": [], "bids": []} for c in scenario.campaigns
    }
    reasons: dict[str, int] = defaultdict(int)
    for r in range(1, n_rounds + 1):
        if shock_round is not None and r == shock_round + 1:
            traffic.set_conversion_multiplier(cfg.shock_campaign, cfg.shock_multiplier)
            c = scenario.campaign(cfg.shock_campaign)
            oracle[c.campaign_id] = econ.oracle(c)
            if policy == "oracle":
                _set_bids(scheduler, {c.campaign_id: oracle[c.campaign_id][0]})
        t = start + r * cfg.round_s
        events = sim.advance(t)
        day_start = (t // DAY_S) * DAY_S if (t % DAY_S) else t - DAY_S
        if store is not None and optimizer is not None:
            store.apply(events, t)
            lagged = store.window(t - cfg.window_s - cfg.conversion_lag_s, t - cfg.conversion_lag_s)
            convs = store.window(t - cfg.window_s, t)
            window = {
                k: ChannelFigures(lagged.get(k, ChannelFigures()).spend, v.conversions, v.gmv, v.add_to_carts)
                for k, v in convs.items()
            }
            for k, v in lagged.items():
                window.setdefault(k, ChannelFigures(v.spend, 0.0, 0.0))
            today = store.window(day_start, t)
            recent = store.window(t - cfg.pace_window_s, t)
            inp = RoundInput(
                seconds_into_day=t - day_start,
                window=window,
                spent_today=_by_campaign(today),
                recent_spend=_by_campaign(recent),
                recent_s=cfg.pace_window_s,
                bids=dict(scheduler.bids),
                # only the optimizer reads these: the baselines are spared the reads (run time)
                long_window=store.window(t - cfg.long_window_s, t) if policy == "optimizer" else {},
                windows={w: store.window_with_lag(t - w, t, cfg.conversion_lag_s) for w in cfg.memory_windows_s}
                if policy == "optimizer"
                else {},
            )
            at = datetime.fromtimestamp(t, UTC)
            for d in optimizer.step(inp):
                reasons[d.decision.reason] += 1
                c = scenario.campaign(d.campaign_id)
                scheduler.apply(
                    BidAdjustment(
                        decision_id=f"{d.campaign_id}:{d.channel}:{r}",
                        campaign_id=d.campaign_id,
                        channel=cast(Channel, d.channel),
                        decided_at=at,
                        as_of=at,
                        round=r,
                        old_bid=d.old_bid,
                        new_bid=d.decision.new_bid,
                        reason=d.decision.reason,
                        target_kind=c.target_kind,
                        target=c.target,
                    )
                )
        spent_day = {cid: v / 100.0 for cid, v in scheduler.spend_today_minor.items()}
        frac = plan_fraction(t - day_start, traffic.truth.hour_shape if cfg.traffic_shaped_plan else None)
        for c in scenario.campaigns:
            bids = {str(ch): scheduler.bid(c.campaign_id, ch) for ch in c.channels}
            tr = trace[c.campaign_id]
            tr["eff"].append(econ.efficiency(c, bids))
            tr["ref"].append(oracle[c.campaign_id][1])
            tr["spent"].append(spent_day.get(c.campaign_id, 0.0))
            tr["plan"].append(c.daily_budget * frac)
            tr["bids"].append(bids)
    campaigns = []
    end = shock_round if shock_round is not None else n_rounds
    for c in scenario.campaigns:
        cid = c.campaign_id
        tr = trace[cid]
        spend = sim.truth.spend_minor.get(cid, 0) / 100.0
        gmv = sim.truth.caused_gmv_minor.get(cid, 0) / 100.0
        conv = sim.truth.caused_checkouts.get(cid, 0)
        bound = oracle[cid][2]
        rounds_per_day = round(DAY_S / cfg.round_s)
        errs = []
        for i, (s, p) in enumerate(zip(tr["spent"], tr["plan"], strict=True)):
            over = (s - p) / c.daily_budget
            errs.append((i, max(over, -over if bound else 0.0)))
        later = [e for i, e in errs if i >= rounds_per_day] or [e for _, e in errs]
        row: dict[str, Any] = {
            "campaign_id": cid,
            "target_kind": c.target_kind,
            "target": c.target,
            "daily_budget": c.daily_budget,
            "spend": round(spend, 2),
            "gmv": round(gmv, 2),
            "checkouts": conv,
            "roas": round(gmv / spend, 4) if spend else None,
            "cpa": round(spend / conv, 2) if conv else None,
            "budget_bound": bound,
            "reference": round(tr["ref"][0], 4),
            "settle_rounds": _settle(tr["eff"][:end], tr["ref"][:end], c.target_kind),
            "in_band_after_20": _in_band_share(tr["eff"][IN_BAND_FROM_ROUND:end], tr["ref"][IN_BAND_FROM_ROUND:end]),
            "final_efficiency": round(tr["eff"][end - 1], 4),
            "pacing_error": round(max(later), 4),
            "pacing_error_all": round(max(e for _, e in errs), 4),
            "oracle_bids": {ch: round(b, 1) for ch, b in oracle[cid][0].items()},
            "final_bids": {ch: round(b, 1) for ch, b in tr["bids"][end - 1].items()},
        }
        if shock_round is not None and cid == cfg.shock_campaign:
            row["settle_rounds_after_shock"] = _settle(
                tr["eff"][shock_round:], tr["ref"][shock_round:], c.target_kind
            )
        campaigns.append(row)
    spend = sum(r["spend"] for r in campaigns)
    gmv = sum(r["gmv"] for r in campaigns)
    settles = [r["settle_rounds"] for r in campaigns]
    after = [
        (e, f)
        for tr in trace.values()
        for e, f in zip(tr["eff"][IN_BAND_FROM_ROUND:end], tr["ref"][IN_BAND_FROM_ROUND:end], strict=True)
    ]
    return {
        "policy": policy,
        "shock": shock,
        "rounds": n_rounds,
        "shock_round": shock_round,
        "gmv": round(gmv, 2),
        "spend": round(spend, 2),
        "roas": round(gmv / spend, 4) if spend else None,
        "settle_rounds": None if any(s is None for s in settles) else max(settles),
        "pacing_error": max(r["pacing_error"] for r in campaigns),
        "in_band_after_20": _in_band_share([e for e, _ in after], [f for _, f in after]),
        "reasons": dict(reasons),
        "campaigns": campaigns,
        "trace": {cid: {k: v for k, v in tr.items()} for cid, tr in trace.items()},
    }


def _set_bids(scheduler: AdScheduler, bids: Mapping[str, Mapping[str, float]]) -> None:
    for cid, per in bids.items():
        for ch, b in per.items():
            scheduler.bids[(cid, ch)] = b


def _by_campaign(window: Mapping[tuple[str, str], ChannelFigures]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (cid, _), f in window.items():
        out[cid] += f.spend
    return dict(out)


def _in_band(eff: float, ref: float) -> bool:
    """True efficiency within +-10% of the reference (symmetric on the log scale)."""
    return eff > 0 and ref > 0 and abs(math.log(eff / ref)) <= BAND


def _in_band_share(eff: Sequence[float], ref: Sequence[float]) -> float | None:
    """Share of rounds whose true efficiency is within +-10% of the reference."""
    pairs = list(zip(eff, ref, strict=True))
    if not pairs:
        return None
    inside = sum(1 for e, r in pairs if _in_band(e, r))
    return round(inside / len(pairs), 4)


def _settle(eff: Sequence[float], ref: Sequence[float], kind: str) -> int | None:
    """First round (1-based) from which the true efficiency stays within +-10% of the reference."""
    settled: int | None = None
    for i, (e, r) in enumerate(zip(eff, ref, strict=True)):
        inside = _in_band(e, r)
        if not inside:
            settled = None
        elif settled is None:
            settled = i + 1
    return settled


# --- the whole evaluation -------------------------------------------------------------------------


def run_evaluate(
    seeds_dir: Path,
    json_path: Path | None,
    plots_dir: Path | None,
    *,
    days: float = 2.0,
    seed: int = 7,
    workers: int = 2,
    cfg: EvalConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    base = cfg or EvalConfig()
    cfg = EvalConfig(
        **{**{f: getattr(base, f) for f in base.__dataclass_fields__}, "days": days, "seed": seed}
    )
    # every policy but the oracle (which is told of the shock) also runs shocked: its recovery
    jobs = [(p, False) for p in POLICIES] + [(p, True) for p in SHOCKED]
    # A run of 2 days takes several seconds per policy: say what finished, so a minute of work is
    # not a minute of silence (the CLI prints these on stderr).
    say = progress or (lambda _msg: None)

    def done(job: tuple[str, bool], count: int) -> None:
        policy, shock = job
        say(f"seed {cfg.seed}: {policy}{' (shocked)' if shock else ''} done ({count}/{len(jobs)} runs)")

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run, seeds_dir, cfg, p, s): (p, s) for p, s in jobs}
            finished: dict[tuple[str, bool], dict[str, Any]] = {}
            for future in as_completed(futures):
                finished[futures[future]] = future.result()
                done(futures[future], len(finished))
            runs = [finished[job] for job in jobs]
    else:
        runs = []
        for p, s in jobs:
            runs.append(_run(seeds_dir, cfg, p, s))
            done((p, s), len(runs))
    by = {(r["policy"], r["shock"]): r for r in runs}
    oracle_gmv = by[("oracle", False)]["gmv"]
    static_gmv = by[("static", False)]["gmv"]
    opt = by[("optimizer", False)]
    shock_opt, shock_static = by[("optimizer", True)], by[("static", True)]
    shocked = next(c for c in shock_opt["campaigns"] if c["campaign_id"] == cfg.shock_campaign)
    result: dict[str, Any] = {
        "config": {
            "days": cfg.days,
            "seed": cfg.seed,
            "round_minutes": cfg.round_s / 60,
            "window_hours": cfg.window_s / 3600,
            "conversion_lag_hours": cfg.conversion_lag_s / 3600,
            "plan": "traffic-shaped" if cfg.traffic_shaped_plan else "even",
            "figures": "last-touch, attributed in-process by journey.apply_events",
            "scored_by": "ground truth (simulator-caused GMV and spend)",
            "volume": cfg.volume,
            "attribution_scope": cfg.attribution_scope,
        },
        "evidence": _said(say, f"seed {cfg.seed}: evidence bound", lambda: evidence_by_round(seeds_dir, cfg)),
        "levers": _said(
            say, f"seed {cfg.seed}: lever headroom", lambda: copy.deepcopy(lever_report(seeds_dir, cfg.volume))
        ),
        "policies": {
            p: {k: v for k, v in by[(p, False)].items() if k not in ("trace", "policy", "shock")}
            for p in POLICIES
        },
        "comparison": {
            "optimizer_gmv_vs_oracle": round(opt["gmv"] / oracle_gmv, 4) if oracle_gmv else None,
            "optimizer_gmv_vs_static": round(opt["gmv"] / static_gmv, 4) if static_gmv else None,
            "optimizer_roas_vs_oracle": _ratio(opt["roas"], by[("oracle", False)]["roas"]),
            "optimizer_roas_vs_static": _ratio(opt["roas"], by[("static", False)]["roas"]),
        },
        "shock": {
            "campaign": cfg.shock_campaign,
            "multiplier": cfg.shock_multiplier,
            "at_round": shock_opt["shock_round"],
            "settle_rounds_after_shock": shocked.get("settle_rounds_after_shock"),
            "optimizer": {k: v for k, v in shock_opt.items() if k not in ("trace", "policy", "shock")},
            "static": {k: v for k, v in shock_static.items() if k not in ("trace", "policy", "shock")},
        },
    }
    for p in SHOCKED:  # the field's controllers, shocked alike (new keys beside optimizer and static)
        result["shock"].setdefault(p, {k: v for k, v in by[(p, True)].items() if k not in ("trace", "policy", "shock")})
    _score_policies(seeds_dir, cfg, result, by[("optimizer", False)]["rounds"])
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1))
    if plots_dir is not None:
        runs_by_name = {p: by[(p, False)] for p in POLICIES}
        runs_by_name |= {"shock": by[("optimizer", True)], "static_shock": by[("static", True)]}
        write_plots(plots_dir, runs_by_name, load_scenario(seeds_dir), cfg)
        say(f"seed {cfg.seed}: plots written to {plots_dir}")
    return result


def _score_policies(seeds_dir: Path, cfg: EvalConfig, result: dict[str, Any], rounds: int) -> None:
    """Every policy on every figure, and the share of evidence it uses (scorecard.py)."""
    bound = mean_in_band_bound(seeds_dir, cfg.volume, cfg.round_s, rounds)
    result["evidence"]["mean_bound_after_20"] = round(bound, 4) if bound is not None else None
    result["policy_rows"] = scorecard.policy_rows(result, bound)
    for p, row in result["policy_rows"].items():
        result["policies"][p]["evidence_share"] = row["evidence_share"]


def _said(say: Callable[[str], None], what: str, compute: Callable[[], Any]) -> Any:
    value = compute()
    say(f"{what} done")
    return value


def run_evaluate_seeds(
    seeds_dir: Path,
    json_path: Path | None,
    plots_dir: Path | None,
    *,
    days: float = 2.0,
    seeds: Sequence[int] = (7,),
    workers: int = 2,
    cfg: EvalConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The evaluation once per seed, and a summary across them. One seed: exactly `run_evaluate`'s
    result (and JSON file). Several: `{"seeds": {"7": <run_evaluate's result>, ...}, "summary":
    ...}`; plots, if asked for, go to one folder per seed."""
    if len(seeds) == 1:
        result = run_evaluate(
            seeds_dir, json_path, plots_dir, days=days, seed=seeds[0], workers=workers, cfg=cfg, progress=progress
        )
        return {"seeds": {str(seeds[0]): result}, "summary": summarize({seeds[0]: result})}
    per: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        per[seed] = run_evaluate(
            seeds_dir,
            None,
            plots_dir / f"seed{seed}" if plots_dir is not None else None,
            days=days,
            seed=seed,
            workers=workers,
            cfg=cfg,
            progress=progress,
        )
    out = {"seeds": {str(k): v for k, v in per.items()}, "summary": summarize(per)}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=1))
    return out


def seed_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's headline figures of one seed's evaluation."""
    opt = result["policies"]["optimizer"]
    return {
        "gmv_vs_oracle": result["comparison"]["optimizer_gmv_vs_oracle"],
        "gmv_vs_static": result["comparison"]["optimizer_gmv_vs_static"],
        "settle_rounds": opt["settle_rounds"],
        "settle_by_campaign": {c["campaign_id"]: c["settle_rounds"] for c in opt["campaigns"]},
        "pacing_error": opt["pacing_error"],
        "in_band_after_20": opt.get("in_band_after_20"),
        "settle_after_shock": result["shock"]["settle_rounds_after_shock"],
    }


def summarize(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed, the optimizer's headline figures; across seeds, their median and worst. A settle
    of None (never settled) counts as worse than any number of rounds."""
    rows = {seed: seed_row(r) for seed, r in per_seed.items()}

    def stats(key: str, higher_is_better: bool, never_is_worst: bool = False) -> dict[str, Any]:
        ranked = scorecard.rank_best_first([r[key] for r in rows.values()], higher_is_better, never_is_worst)
        if not ranked:
            return {"median": None, "worst": None}
        return {"median": _median(ranked), "worst": ranked[-1]}

    return {
        "seeds": [int(s) for s in rows],
        "per_seed": {str(s): r for s, r in rows.items()},
        "gmv_vs_oracle": stats("gmv_vs_oracle", True),
        "gmv_vs_static": stats("gmv_vs_static", True),
        "settle_rounds": stats("settle_rounds", False, never_is_worst=True),
        "pacing_error": stats("pacing_error", False),
        "in_band_after_20": stats("in_band_after_20", True),
        "settle_after_shock": stats("settle_after_shock", False, never_is_worst=True),
        # an expectation from the traffic model: the same for every seed
        "evidence": next(iter(per_seed.values()))["evidence"],
        # every policy on every figure, and the issue's targets (scorecard.py)
        "field": _policy_summary(per_seed),
    }


def _policy_summary(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    return scorecard.policy_summary(per_seed)


def _median(ranked: Sequence[Any]) -> Any:
    """The median of values ranked best first; None (never) when the middle is None."""
    n = len(ranked)
    mid = ranked[(n - 1) // 2], ranked[n // 2]
    if any(v is None for v in mid):
        return None
    return mid[0] if n % 2 else round((mid[0] + mid[1]) / 2, 4)


def format_summary(summary: Mapping[str, Any]) -> str:
    def fmt(v: Any, pct: bool = False) -> str:
        if v is None:
            return "never" if not pct else "-"
        return f"{v:.1%}" if pct else (f"{v:.3f}" if isinstance(v, float) else str(v))

    cols = (
        ("gmv_vs_oracle", "GMV/oracle", False),
        ("gmv_vs_static", "GMV/static", False),
        ("settle_rounds", "settle", False),
        ("pacing_error", "pacing", True),
        ("in_band_after_20", "in band>20", True),
        ("settle_after_shock", "shock settle", False),
    )
    head = f"{'seed':<8}" + "".join(f"{label:>13}" for _, label, _ in cols)
    lines = ["optimizer across seeds", head]
    for seed, row in summary["per_seed"].items():
        lines.append(f"{seed:<8}" + "".join(f"{fmt(row[k], pct):>13}" for k, _, pct in cols))
    for which in ("median", "worst"):
        lines.append(f"{which:<8}" + "".join(f"{fmt(summary[k][which], pct):>13}" for k, _, pct in cols))
    lines += ["", "settle rounds per campaign (optimizer; '-' never)"]
    campaigns = list(next(iter(summary["per_seed"].values()))["settle_by_campaign"])
    for seed, row in summary["per_seed"].items():
        settles = ["-" if row["settle_by_campaign"][c] is None else str(row["settle_by_campaign"][c]) for c in campaigns]
        lines.append(f"{seed:<8}" + " ".join(f"{v:>4}" for v in settles))
    ev = summary["evidence"]
    bounds = [f"{ev['campaigns'][c]['in_band_bound']:.2f}".lstrip("0") for c in campaigns]
    lines.append(f"{'P<=':<8}" + " ".join(f"{v:>4}" for v in bounds))
    lines.append("campaigns: " + ", ".join(campaigns))
    lines.append(
        f"P<=: the most probability any controller that has to learn a campaign's conversion rate has of "
        f"being within +-10% at round {ev['rounds']} (the evidence its ads give by then); all "
        f"{len(campaigns)} at once: <= {ev['all_in_band_bound']:.4f}"
    )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def format_evaluation(result: Mapping[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"bid optimizer evaluation: {cfg['days']} simulated days, seed {cfg['seed']}, control round every "
        f"{cfg['round_minutes']:.0f} min, window {cfg['window_hours']:.0f} h (spend lagged "
        f"{cfg['conversion_lag_hours']:.0f} h), {cfg['plan']} plan; scored by {cfg['scored_by']}",
        "",
    ]
    lines.append(f"{'policy':<10} {'spend':>10} {'gmv':>11} {'roas':>6} {'settle':>7} {'pacing':>7}")
    for name, p in result["policies"].items():
        settle = "-" if p["settle_rounds"] is None else str(p["settle_rounds"])
        lines.append(
            f"{name:<10} {p['spend']:>10.0f} {p['gmv']:>11.0f} {p['roas'] or 0:>6.2f} {settle:>7} "
            f"{p['pacing_error']:>7.1%}"
        )
    cmp_ = result["comparison"]
    lines += [
        "",
        f"optimizer GMV / oracle {cmp_['optimizer_gmv_vs_oracle']}, "
        f"/ static {cmp_['optimizer_gmv_vs_static']};"
        f" ROAS / oracle {cmp_['optimizer_roas_vs_oracle']}, / static {cmp_['optimizer_roas_vs_static']}",
        "",
    ]
    lines.append(
        f"{'campaign':<18} {'kind':>4} {'target':>7} {'ref':>7} | "
        + " | ".join(f"{n:^30}" for n in result["policies"])
    )
    lines.append(
        f"{'':<18} {'':>4} {'':>7} {'':>7} | "
        + " | ".join(f"{'gmv':>8} {'eff':>7} {'settle':>6} {'pace':>6}" for _ in result["policies"])
    )
    rows = {n: {c["campaign_id"]: c for c in p["campaigns"]} for n, p in result["policies"].items()}
    for c in result["policies"]["optimizer"]["campaigns"]:
        cid = c["campaign_id"]
        parts = []
        for n in result["policies"]:
            r = rows[n][cid]
            eff = r["cpa"] if r["target_kind"] == "cpa" else r["roas"]
            settle = "-" if r["settle_rounds"] is None else str(r["settle_rounds"])
            parts.append(f"{r['gmv']:>8.0f} {eff or 0:>7.2f} {settle:>6} {r['pacing_error']:>6.1%}")
        lines.append(
            f"{cid:<18} {c['target_kind']:>4} {c['target']:>7.1f} {c['reference']:>7.2f} | "
            + " | ".join(parts)
        )
    ev = result["evidence"]
    lines += [
        "",
        f"evidence by round {ev['rounds']} (expected, at the oracle's bids): a controller that has to learn a "
        f"campaign's conversion rate is within +-10% at round {ev['rounds']} with probability at most",
        f"{'campaign':<18} {'carts':>7} {'checkouts':>9} {'P <=':>6}",
    ]
    for cid, e in ev["campaigns"].items():
        lines.append(f"{cid:<18} {e['carts']:>7.0f} {e['checkouts']:>9.1f} {e['in_band_bound']:>6.2f}")
    lines.append(f"{'all at once':<18} {'':>7} {'':>9} {ev['all_in_band_bound']:>6.4f}")
    lv = result["levers"]
    lines += [
        "",
        "levers: GMV headroom over one bid per channel with perfect knowledge (hours have no effect in the "
        "truth: their figure is the method's resolution)",
        f"{'campaign':<18} {'segment':>8} {'hour':>8}",
    ]
    for cid, row in lv["campaigns"].items():
        lines.append(f"{cid:<18} {row['segment']:>+8.2%} {row['hour']:>+8.2%}")
    lines.append(f"{'all campaigns':<18} {lv['overall']['segment']:>+8.2%} {lv['overall']['hour']:>+8.2%}")
    s = result["shock"]
    settle = s["settle_rounds_after_shock"]
    lines += [
        "",
        f"shock: {s['campaign']} true conversion rate x{s['multiplier']} at round {s['at_round']}: "
        + ("never settled again" if settle is None else f"settled again after {settle} rounds")
        + "; optimizer GMV "
        f"{s['optimizer']['gmv']:.0f} (ROAS {s['optimizer']['roas']}) vs static {s['static']['gmv']:.0f} "
        f"(ROAS {s['static']['roas']})",
    ]
    return "\n".join(lines)


def write_plots(
    plots_dir: Path, runs: Mapping[str, Mapping[str, Any]], scenario: Scenario, cfg: EvalConfig
) -> list[Path]:
    """PNG charts of the runs (stream_processors/optimizer/plots.py); matplotlib is an extra."""
    from stream_processors.optimizer import plots

    return plots.write_plots(plots_dir, runs, scenario, cfg.round_s, cfg.shock_campaign, cfg.shock_multiplier)


def parse_seeds(text: str) -> list[int]:
    """"7,11,13" -> [7, 11, 13]."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("at least one seed")
    return list(dict.fromkeys(seeds))


def format_evaluations(out: Mapping[str, Any]) -> str:
    """Each seed's full report, then the optimizer's headline figures per seed and across seeds."""
    parts = [format_evaluation(r) for r in out["seeds"].values()]
    table = scorecard.format_policy_table(out["summary"].get("field") or {})
    return "\n\n".join([*parts, format_summary(out["summary"]), *([table] if table else [])])
