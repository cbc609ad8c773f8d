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
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from producers.scenario import Scenario, load_scenario
from stream_processors.optimizer import scorecard
from stream_processors.optimizer.evaluation.attribution_truth import SCORED_ON
from stream_processors.optimizer.evaluation.config import DAY_S, POLICIES, SHOCKED, EvalConfig
from stream_processors.optimizer.evaluation.evidence import (
    evidence_by_round,
    lever_report,
    mean_in_band_bound,
)
from stream_processors.optimizer.evaluation.lift_summary import seed_lift
from stream_processors.optimizer.evaluation.report import format_evaluations
from stream_processors.optimizer.evaluation.simulated_run import run_policy
from stream_processors.optimizer.evaluation.summary import summarize

# seedloop/cli.py imports these from here
__all__ = ["EvalConfig", "format_evaluations", "parse_seeds", "run_evaluate", "run_evaluate_seeds"]

Runs = Mapping[tuple[str, bool], Mapping[str, Any]]
# the run's keys that are not figures: left out of the JSON
_NOT_FIGURES = ("trace", "policy", "shock", "attribution_vs_truth", "lift", "calibration")


def run_evaluate(
    seeds_dir: Path,
    cfg: EvalConfig,
    *,
    json_path: Path | None = None,
    plots_dir: Path | None = None,
    workers: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One seed's evaluation (cfg.seed, cfg.days): every policy, and every one but the oracle (which
    is told of the shock) shocked too, for its recovery; scored by the truth."""
    # A run of 2 days takes several seconds per policy: say what finished, so a minute of work is
    # not a minute of silence (the CLI prints these on stderr).
    say = progress or (lambda _msg: None)
    by = _run_policies(seeds_dir, cfg, workers, say)
    result = _result(seeds_dir, cfg, by, say)
    _score_policies(seeds_dir, cfg, result, by[("optimizer", False)]["rounds"])
    # every attribution model against the GMV each campaign's ads truly caused (a new key, last)
    result["attribution_vs_truth"] = by[(SCORED_ON, False)]["attribution_vs_truth"]
    # the lift figures against the truth, and the lift-steered optimizer against the attributed one
    lift = seed_lift({p: by[(p, False)] for p in POLICIES}, cfg.holdout_share)
    if lift is not None:
        result["lift"] = lift
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1))
    if plots_dir is not None:
        runs_by_name = {p: by[(p, False)] for p in POLICIES}
        runs_by_name |= {"shock": by[("optimizer", True)], "static_shock": by[("static", True)]}
        write_plots(plots_dir, runs_by_name, load_scenario(seeds_dir), cfg)
        say(f"seed {cfg.seed}: plots written to {plots_dir}")
    return result


def _run_policies(seeds_dir: Path, cfg: EvalConfig, workers: int, say: Callable[[str], None]) -> Runs:
    """(policy, shocked) -> its run, on `workers` processes."""
    jobs = [(p, False) for p in POLICIES] + [(p, True) for p in SHOCKED]

    def done(job: tuple[str, bool], count: int) -> None:
        policy, shock = job
        say(f"seed {cfg.seed}: {policy}{' (shocked)' if shock else ''} done ({count}/{len(jobs)} runs)")

    finished: dict[tuple[str, bool], dict[str, Any]] = {}
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(run_policy, seeds_dir, cfg, p, s, _scores_attribution(p, s)): (p, s)
                for p, s in jobs
            }
            for future in as_completed(futures):
                finished[futures[future]] = future.result()
                done(futures[future], len(finished))
    else:
        for p, s in jobs:
            finished[(p, s)] = run_policy(seeds_dir, cfg, p, s, _scores_attribution(p, s))
            done((p, s), len(finished))
    return {job: finished[job] for job in jobs}


def _scores_attribution(policy: str, shock: bool) -> bool:
    return policy == SCORED_ON and not shock


def _figures(run: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k not in _NOT_FIGURES}


def _result(seeds_dir: Path, cfg: EvalConfig, by: Runs, say: Callable[[str], None]) -> dict[str, Any]:
    """The seed's JSON: its settings, the evidence and lever bounds, every policy's figures, the
    optimizer against the oracle and static, and the shock."""
    oracle, static, opt = by[("oracle", False)], by[("static", False)], by[("optimizer", False)]
    shock_opt = by[("optimizer", True)]
    shocked = next(c for c in shock_opt["campaigns"] if c["campaign_id"] == cfg.shock_campaign)
    result: dict[str, Any] = {
        "config": _config(cfg),
        "evidence": _said(say, f"seed {cfg.seed}: evidence bound", lambda: evidence_by_round(seeds_dir, cfg)),
        "levers": _said(
            say,
            f"seed {cfg.seed}: lever headroom",
            lambda: copy.deepcopy(lever_report(seeds_dir, cfg.volume)),
        ),
        "policies": {p: _figures(by[(p, False)]) for p in POLICIES},
        "comparison": {
            "optimizer_gmv_vs_oracle": round(opt["gmv"] / oracle["gmv"], 4) if oracle["gmv"] else None,
            "optimizer_gmv_vs_static": round(opt["gmv"] / static["gmv"], 4) if static["gmv"] else None,
            "optimizer_roas_vs_oracle": _ratio(opt["roas"], oracle["roas"]),
            "optimizer_roas_vs_static": _ratio(opt["roas"], static["roas"]),
        },
        "shock": {
            "campaign": cfg.shock_campaign,
            "multiplier": cfg.shock_multiplier,
            "at_round": shock_opt["shock_round"],
            "settle_rounds_after_shock": shocked.get("settle_rounds_after_shock"),
            "optimizer": _figures(shock_opt),
            "static": _figures(by[("static", True)]),
        },
    }
    for p in SHOCKED:  # the field's controllers, shocked alike (new keys beside optimizer and static)
        result["shock"].setdefault(p, _figures(by[(p, True)]))
    return result


def _config(cfg: EvalConfig) -> dict[str, Any]:
    return {
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
        "holdout_share": cfg.holdout_share,
        "lift_window_days": cfg.lift_window_s / DAY_S,
    }


def _score_policies(seeds_dir: Path, cfg: EvalConfig, result: dict[str, Any], rounds: int) -> None:
    """Every policy on every figure, and the share of evidence it uses (scorecard.py)."""
    bound = mean_in_band_bound(seeds_dir, cfg.volume, cfg.round_s, rounds, cfg.holdout_share)
    result["evidence"]["mean_bound_after_20"] = round(bound, 4) if bound is not None else None
    result["policy_rows"] = scorecard.policy_rows(result, bound)
    for p, row in result["policy_rows"].items():
        result["policies"][p]["evidence_share"] = row["evidence_share"]


def _said(say: Callable[[str], None], what: str, compute: Callable[[], Any]) -> Any:
    value = compute()
    say(f"{what} done")
    return value


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


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
    base = cfg or EvalConfig()
    one = len(seeds) == 1
    per: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        per[seed] = run_evaluate(
            seeds_dir,
            dataclasses.replace(base, days=days, seed=seed),
            json_path=json_path if one else None,
            plots_dir=plots_dir if one or plots_dir is None else plots_dir / f"seed{seed}",
            workers=workers,
            progress=progress,
        )
    out = {"seeds": {str(k): v for k, v in per.items()}, "summary": summarize(per)}
    if json_path is not None and not one:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=1))
    return out


def write_plots(
    plots_dir: Path, runs: Mapping[str, Mapping[str, Any]], scenario: Scenario, cfg: EvalConfig
) -> list[Path]:
    """PNG charts of the runs (stream_processors/optimizer/plots.py); matplotlib is an extra."""
    from stream_processors.optimizer import plots

    return plots.write_plots(plots_dir, runs, scenario, cfg.round_s, cfg.shock_campaign, cfg.shock_multiplier)


def parse_seeds(text: str) -> list[int]:
    """ "7,11,13" -> [7, 11, 13]."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("at least one seed")
    return list(dict.fromkeys(seeds))
