"""Which holdout share: the attributed and the lift-steered optimizer at several shares, on several
seeds, with what each share costs and buys. `seedloop evaluate` runs one share; this runs the two
optimizer modes only, at each share, so that shares can be set side by side:

    python -m stream_processors.optimizer.evaluation.lift_shares --seeds 7,11,13 --shares 0,0.05,0.1,0.2

Per share: the lift-steered mode against the attributed one on true GMV at target (lift_summary),
the intervals' coverage, the projected holdout cost (lift_scores.holdout_cost) and the measured
one: the attributed optimizer's true GMV at the share against its GMV at share 0 (where a share of 0
is among those run). The measured cost can be less than the projected one: a budget-bound
campaign spends what its ghost views did not cost on other users.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from stream_processors.optimizer.evaluation.config import EvalConfig
from stream_processors.optimizer.evaluation.lift_summary import (
    LIFT_SCORED_ON,
    format_lift,
    seed_lift,
    summarize_lift,
)
from stream_processors.optimizer.evaluation.simulated_run import run_policy

Job = tuple[int, float, str]  # seed, share, policy


def _run(seeds_dir: Path, cfg: EvalConfig, job: Job) -> dict[str, Any]:
    seed, share, policy = job
    run = run_policy(seeds_dir, dataclasses.replace(cfg, seed=seed, holdout_share=share), policy, False)
    run.pop("trace")  # the per-round trace is for plots: not sent back between processes
    return run


def compare_shares(
    seeds_dir: Path,
    seeds: Sequence[int],
    shares: Sequence[float],
    *,
    cfg: EvalConfig | None = None,
    workers: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per share, the lift section across seeds and the attributed optimizer's GMV per seed."""
    base = cfg or EvalConfig()
    say = progress or (lambda _msg: None)
    jobs: list[Job] = [
        (seed, share, policy)
        for share in shares
        for seed in seeds
        for policy in ("optimizer", LIFT_SCORED_ON)
        if share > 0 or policy == "optimizer"  # no holdout: nothing to steer by
    ]
    runs: dict[Job, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_run, seeds_dir, base, job): job for job in jobs}
        for future in as_completed(futures):
            runs[futures[future]] = future.result()
            say(f"{futures[future]} done ({len(runs)}/{len(jobs)} runs)")
    out: dict[str, Any] = {"seeds": list(seeds), "days": base.days, "volume": base.volume, "shares": {}}
    for share in shares:
        gmv = {str(s): runs[(s, share, "optimizer")]["gmv"] for s in seeds}
        block: dict[str, Any] = {"optimizer_gmv": gmv}
        if 0.0 in shares and share > 0:
            none = sum(runs[(s, 0.0, "optimizer")]["gmv"] for s in seeds)
            block["gmv_lost_vs_no_holdout"] = round(1.0 - sum(gmv.values()) / none, 4) if none else None
        if share > 0:
            per_seed = {
                s: {"lift": seed_lift({p: runs[(s, share, p)] for p in ("optimizer", LIFT_SCORED_ON)}, share)}
                for s in seeds
            }
            block["lift"] = summarize_lift(per_seed)
        out["shares"][str(share)] = block
    return out


def format_shares(out: dict[str, Any]) -> str:
    """Each share's lift section, then one line per share: coverage, wins, projected and measured cost."""
    parts = [format_lift(b["lift"]) for b in out["shares"].values() if b.get("lift")]
    lines = [
        f"{'share':<7}{'coverage':>9}{'width':>7}{'lift>=attr':>11}{'cost (projected)':>18}{'cost (measured)':>17}"
    ]
    for share, b in out["shares"].items():
        lift = b.get("lift")
        if not lift:
            continue
        cov, t = lift["coverage"], lift["targets"]["lift_at_least_attributed"]
        measured = b.get("gmv_lost_vs_no_holdout")
        lines.append(
            f"{share:<7}{_pct(cov['coverage']):>9}{_pct(cov['width_vs_truth'], 0):>7}"
            f"{t['won']:>7} of {t['of']}{_pct(lift['holdout_cost']['share_of_gmv']):>18}{_pct(measured):>17}"
        )
    return "\n\n".join([*parts, "\n".join(lines)])


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}%}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stream_processors.optimizer.evaluation.lift_shares")
    p.add_argument("--seeds", default="7,11,13,17,19,23", help="comma-separated seeds")
    p.add_argument("--shares", default="0,0.05,0.1,0.2", help="comma-separated holdout shares")
    p.add_argument("--days", type=float, default=2.0)
    p.add_argument("--volume", type=float, default=1.0)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--seeds-dir", type=Path, default=Path(__file__).resolve().parents[3] / "seeds")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    started = time.monotonic()
    out = compare_shares(
        args.seeds_dir,
        [int(s) for s in args.seeds.split(",")],
        [float(s) for s in args.shares.split(",")],
        cfg=EvalConfig(days=args.days, volume=args.volume),
        workers=args.processes,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    out["wall_s"] = round(time.monotonic() - started, 1)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1))
    print(format_shares(out))
    print(f"\nwall time {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
