"""One simulated run of one policy: the live loop's code (Simulator, AdScheduler, TrafficModel and
the controller) on a simulated clock, without Kafka or Redis. The controllers read the events as
the live pipeline would (figure_store); the run keeps a per-round trace of the true efficiency of
the bids in force, which run_scores turns into the run's figures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from stream_processors.figures import MINOR
from stream_processors.optimizer.adjustments import bid_adjustment
from stream_processors.optimizer.baselines import CONTROLLED, make_controller
from stream_processors.optimizer.control_types import efficiency_window, spend_by_campaign
from stream_processors.optimizer.controller import RoundInput
from stream_processors.optimizer.evaluation.attribution_truth import CausalLedger
from stream_processors.optimizer.evaluation.config import DAY_S, EvalConfig
from stream_processors.optimizer.evaluation.figure_store import FigureStore, channel_figures
from stream_processors.optimizer.evaluation.lift_scores import lift_report
from stream_processors.optimizer.evaluation.lift_summary import LIFT_SCORED_ON
from stream_processors.optimizer.evaluation.market import Economics
from stream_processors.optimizer.evaluation.run_scores import Trace, run_figures
from stream_processors.optimizer.lift_steer import (
    Calibration,
    attributed_gmv_minor,
    calibrations,
    factors_of,
    trailing_window,
)
from stream_processors.optimizer.pacing import PacingPolicy, plan_fraction
from stream_processors.optimizer.specs import campaign_specs
from stream_processors.processor import Catalogue


class _PolicyRun:
    """The simulated market, the policy's controller (none for static and oracle) and the trace."""

    def __init__(
        self, seeds_dir: Path, cfg: EvalConfig, policy: str, shock: bool, score_attribution: bool
    ) -> None:
        self.cfg = cfg
        self.policy = policy
        self.econ = econ = Economics.load(seeds_dir, cfg.volume, cfg.holdout_share)
        self.scenario, self.traffic = econ.scenario, econ.traffic
        self.scheduler = AdScheduler(self.scenario)
        self.sim = Simulator(
            self.scenario,
            self.traffic,
            self.scheduler,
            SimConfig(seed=cfg.seed, users=round(cfg.users * cfg.volume), holdout_share=cfg.holdout_share),
        )
        self.start = self.sim.now
        self.n_rounds = max(1, round(cfg.days * DAY_S / cfg.round_s))
        self.shock_round = self.n_rounds // 2 if shock else None
        self.oracle = {c.campaign_id: econ.oracle(c) for c in self.scenario.campaigns}
        pacing = PacingPolicy(
            hour_shape=tuple(self.traffic.truth.hour_shape) if cfg.traffic_shaped_plan else None
        )
        self.controller = (
            make_controller(policy, campaign_specs(self.scenario), cfg.policy, pacing, cfg.pid_gains)
            if policy in CONTROLLED
            else None
        )
        catalogue = Catalogue(
            self.scenario.campaign_channels(), self.scenario.fx.base, self.scenario.rates_to_base()
        )
        products = self.scenario.campaign_products() if cfg.attribution_scope == "product" else {}
        self.store = (
            FigureStore(int(cfg.round_s), catalogue, products, cfg.lift_window_s)
            if self.controller is not None
            else None
        )
        self.ledger = CausalLedger(self.scenario, products) if score_attribution else None
        if policy == "oracle":
            self._set_bids({c.campaign_id: self.oracle[c.campaign_id][0] for c in self.scenario.campaigns})
        self.trace: dict[str, Trace] = {
            c.campaign_id: {"eff": [], "ref": [], "spent": [], "plan": [], "bids": []}
            for c in self.scenario.campaigns
        }
        self.reasons: dict[str, int] = defaultdict(int)
        # optimizer_lift: each campaign's lift calibration of the latest round (lift_steer.py)
        self.calibration: dict[str, Calibration] = {}

    def play(self) -> None:
        for r in range(1, self.n_rounds + 1):
            if self.shock_round is not None and r == self.shock_round + 1:
                self._shock()
            t = self.start + r * self.cfg.round_s
            events = self.sim.advance(t)
            if self.ledger is not None:
                self.ledger.apply(events, t, self.sim.truth.orders)
            day_start = (t // DAY_S) * DAY_S if (t % DAY_S) else t - DAY_S
            if self.store is not None:
                self.store.apply(events, t)
                self._control(r, t, day_start, self.store)
            self._record(t, day_start)

    def _shock(self) -> None:
        """The shocked campaign's true conversion rate changes; the oracle is told."""
        cfg = self.cfg
        self.traffic.set_conversion_multiplier(cfg.shock_campaign, cfg.shock_multiplier)
        c = self.scenario.campaign(cfg.shock_campaign)
        self.oracle[c.campaign_id] = self.econ.oracle(c)
        if self.policy == "oracle":
            self._set_bids({c.campaign_id: self.oracle[c.campaign_id][0]})

    def _control(self, r: int, t: float, day_start: float, store: FigureStore) -> None:
        """One control round: the controller reads the attributed figures, the scheduler takes its bids."""
        assert self.controller is not None
        at = datetime.fromtimestamp(t, UTC)
        for d in self.controller.step(self._round_input(t, day_start, store)):
            self.reasons[d.decision.reason] += 1
            c = self.scenario.campaign(d.campaign_id)
            self.scheduler.apply(bid_adjustment(d, c, r, at, at))

    def _round_input(self, t: float, day_start: float, store: FigureStore) -> RoundInput:
        """What the live service would read from Redis at `t`: conversions over the window, spend
        over the window lagged by the conversion lag, today's and the last pace window's spend."""
        cfg = self.cfg
        lagged = store.window(t - cfg.window_s - cfg.conversion_lag_s, t - cfg.conversion_lag_s)
        convs = store.window(t - cfg.window_s, t)
        window = efficiency_window(convs, lagged)
        # only the optimizer reads these: the baselines are spared (run time)
        optimizer = self.policy in ("optimizer", "optimizer_lift")
        return RoundInput(
            seconds_into_day=t - day_start,
            window=window,
            spent_today=spend_by_campaign(store.window(day_start, t)),
            recent_spend=spend_by_campaign(store.window(t - cfg.pace_window_s, t)),
            recent_s=cfg.pace_window_s,
            bids=dict(self.scheduler.bids),
            long_window=store.window(t - cfg.long_window_s, t) if optimizer else {},
            windows={w: store.window_with_lag(t - w, t, cfg.conversion_lag_s) for w in cfg.memory_windows_s}
            if optimizer
            else {},
            calibration=self._calibration(t, store) if self.policy == "optimizer_lift" else {},
        )

    def _calibration(self, t: float, store: FigureStore) -> dict[str, float]:
        """optimizer_lift: each campaign's k over the trailing lift window (from the run's start)."""
        policy = self.cfg.lift_steer
        start, end = trailing_window(t, policy, self.start)
        fields = store.fields(start, end)
        campaigns = [c.campaign_id for c in self.scenario.campaigns]
        self.calibration = calibrations(fields, channel_figures(fields), campaigns, policy)
        return factors_of(self.calibration)

    def _record(self, t: float, day_start: float) -> None:
        """The round's trace: the true efficiency of the bids in force, its reference, spend and plan."""
        spent_day = {cid: v / 100.0 for cid, v in self.scheduler.spend_today_minor.items()}
        frac = plan_fraction(
            t - day_start, self.traffic.truth.hour_shape if self.cfg.traffic_shaped_plan else None
        )
        for c in self.scenario.campaigns:
            bids = {str(ch): self.scheduler.bid(c.campaign_id, ch) for ch in c.channels}
            tr = self.trace[c.campaign_id]
            tr["eff"].append(self.econ.efficiency(c, bids))
            tr["ref"].append(self.oracle[c.campaign_id][1])
            tr["spent"].append(spent_day.get(c.campaign_id, 0.0))
            tr["plan"].append(c.daily_budget * frac)
            tr["bids"].append(bids)

    def _set_bids(self, bids: Mapping[str, Mapping[str, float]]) -> None:
        for cid, per in bids.items():
            for ch, b in per.items():
                self.scheduler.bids[(cid, ch)] = b


def run_policy(
    seeds_dir: Path, cfg: EvalConfig, policy: str, shock: bool, score_attribution: bool = False
) -> dict[str, Any]:
    """One policy's run, shocked or not: its figures, scored by the truth, and its trace; with
    `score_attribution`, also every attribution model against the causal truth (attribution_truth)."""
    run = _PolicyRun(seeds_dir, cfg, policy, shock, score_attribution)
    run.play()
    result = run_figures(
        run.scenario,
        cfg,
        run.sim.truth,
        run.oracle,
        run.trace,
        policy=policy,
        shock_round=run.shock_round,
        n_rounds=run.n_rounds,
        reasons=dict(run.reasons),
    )
    if run.ledger is not None:
        result["attribution_vs_truth"] = run.ledger.report()
    if run.store is not None and policy == LIFT_SCORED_ON and not shock and cfg.holdout_share > 0:
        # new keys: the lift figures of the run against the truth, and each campaign's calibration
        result["lift"] = lift_report(
            run.store.fields,
            run.sim.truth,
            [c.campaign_id for c in run.scenario.campaigns],
            start=run.start,
            end=run.start + run.n_rounds * cfg.round_s,
            bucket_s=run.store.bucket_s,
            lift_window_s=cfg.lift_window_s,
            share=cfg.holdout_share,
        )
    if run.calibration and run.store is not None:
        result["calibration"] = _calibration_vs_truth(run, run.store)
    return result


def _calibration_vs_truth(run: _PolicyRun, store: FigureStore) -> dict[str, dict[str, float | None]]:
    """Each campaign's last calibration, and the true k it estimates: the GMV the campaign's ads
    caused by the end of the run over the GMV attributed to them."""
    end = run.start + run.n_rounds * run.cfg.round_s
    caused: dict[str, float] = defaultdict(float)
    for order in run.sim.truth.orders.values():
        if order.campaign_id is not None and order.at <= end:
            caused[order.campaign_id] += order.gmv_minor / MINOR
    attributed = attributed_gmv_minor(store.window(run.start, end + 1))
    return {
        cid: {
            "k": round(c.factor, 4),
            "raw": None if c.raw is None else round(c.raw, 4),
            "standard_error": None if c.standard_error is None else round(c.standard_error, 4),
            "true": round(caused[cid] * MINOR / attributed[cid], 4) if attributed.get(cid) else None,
        }
        for cid, c in run.calibration.items()
    }
