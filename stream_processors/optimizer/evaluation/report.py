"""The text report of `seedloop evaluate`: each seed's evaluation, the optimizer across seeds, and
the table of every policy (scorecard.format_policy_table)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from stream_processors.optimizer import scorecard
from stream_processors.optimizer.evaluation.lift_summary import format_lift


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
    return "\n".join(lines + _settles_by_campaign(summary))


def _settles_by_campaign(summary: Mapping[str, Any]) -> list[str]:
    lines = ["", "settle rounds per campaign (optimizer; '-' never)"]
    campaigns = list(next(iter(summary["per_seed"].values()))["settle_by_campaign"])
    for seed, row in summary["per_seed"].items():
        settles = [
            "-" if row["settle_by_campaign"][c] is None else str(row["settle_by_campaign"][c])
            for c in campaigns
        ]
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
    return lines


def format_evaluation(result: Mapping[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"bid optimizer evaluation: {cfg['days']} simulated days, seed {cfg['seed']}, control round every "
        f"{cfg['round_minutes']:.0f} min, window {cfg['window_hours']:.0f} h (spend lagged "
        f"{cfg['conversion_lag_hours']:.0f} h), {cfg['plan']} plan; scored by {cfg['scored_by']}",
        "",
    ]
    lines += _policies(result)
    lines += _campaigns(result)
    lines += _evidence(result["evidence"])
    lines += _levers(result["levers"])
    lines += _shock(result["shock"])
    return "\n".join(lines)


def _policies(result: Mapping[str, Any]) -> list[str]:
    lines = [f"{'policy':<10} {'spend':>10} {'gmv':>11} {'roas':>6} {'settle':>7} {'pacing':>7}"]
    for name, p in result["policies"].items():
        settle = "-" if p["settle_rounds"] is None else str(p["settle_rounds"])
        lines.append(
            f"{name:<10} {p['spend']:>10.0f} {p['gmv']:>11.0f} {p['roas'] or 0:>6.2f} {settle:>7} "
            f"{p['pacing_error']:>7.1%}"
        )
    cmp_ = result["comparison"]
    return [
        *lines,
        "",
        f"optimizer GMV / oracle {cmp_['optimizer_gmv_vs_oracle']}, "
        f"/ static {cmp_['optimizer_gmv_vs_static']};"
        f" ROAS / oracle {cmp_['optimizer_roas_vs_oracle']}, / static {cmp_['optimizer_roas_vs_static']}",
        "",
    ]


def _campaigns(result: Mapping[str, Any]) -> list[str]:
    policies = result["policies"]
    lines = [
        f"{'campaign':<18} {'kind':>4} {'target':>7} {'ref':>7} | "
        + " | ".join(f"{n:^30}" for n in policies),
        f"{'':<18} {'':>4} {'':>7} {'':>7} | "
        + " | ".join(f"{'gmv':>8} {'eff':>7} {'settle':>6} {'pace':>6}" for _ in policies),
    ]
    rows = {n: {c["campaign_id"]: c for c in p["campaigns"]} for n, p in policies.items()}
    for c in policies["optimizer"]["campaigns"]:
        cid = c["campaign_id"]
        parts = []
        for n in policies:
            r = rows[n][cid]
            eff = r["cpa"] if r["target_kind"] == "cpa" else r["roas"]
            settle = "-" if r["settle_rounds"] is None else str(r["settle_rounds"])
            parts.append(f"{r['gmv']:>8.0f} {eff or 0:>7.2f} {settle:>6} {r['pacing_error']:>6.1%}")
        lines.append(
            f"{cid:<18} {c['target_kind']:>4} {c['target']:>7.1f} {c['reference']:>7.2f} | "
            + " | ".join(parts)
        )
    return lines


def _evidence(ev: Mapping[str, Any]) -> list[str]:
    rounds = ev["rounds"]
    return [
        "",
        f"evidence by round {rounds} (expected, at the oracle's bids): a controller that has to learn a "
        f"campaign's conversion rate is within +-10% at round {rounds} with probability at most",
        f"{'campaign':<18} {'carts':>7} {'checkouts':>9} {'P <=':>6}",
        *(
            f"{cid:<18} {e['carts']:>7.0f} {e['checkouts']:>9.1f} {e['in_band_bound']:>6.2f}"
            for cid, e in ev["campaigns"].items()
        ),
        f"{'all at once':<18} {'':>7} {'':>9} {ev['all_in_band_bound']:>6.4f}",
    ]


def _levers(lv: Mapping[str, Any]) -> list[str]:
    overall = lv["overall"]
    return [
        "",
        "levers: GMV headroom over one bid per channel with perfect knowledge (hours have no effect in the "
        "truth: their figure is the method's resolution)",
        f"{'campaign':<18} {'segment':>8} {'hour':>8}",
        *(f"{cid:<18} {row['segment']:>+8.2%} {row['hour']:>+8.2%}" for cid, row in lv["campaigns"].items()),
        f"{'all campaigns':<18} {overall['segment']:>+8.2%} {overall['hour']:>+8.2%}",
    ]


def _shock(s: Mapping[str, Any]) -> list[str]:
    settle = s["settle_rounds_after_shock"]
    return [
        "",
        f"shock: {s['campaign']} true conversion rate x{s['multiplier']} at round {s['at_round']}: "
        + ("never settled again" if settle is None else f"settled again after {settle} rounds")
        + "; optimizer GMV "
        f"{s['optimizer']['gmv']:.0f} (ROAS {s['optimizer']['roas']}) vs static {s['static']['gmv']:.0f} "
        f"(ROAS {s['static']['roas']})",
    ]


def format_evaluations(out: Mapping[str, Any]) -> str:
    """Each seed's full report, then the optimizer's headline figures per seed and across seeds."""
    parts = [format_evaluation(r) for r in out["seeds"].values()]
    table = scorecard.format_policy_table(out["summary"].get("field") or {})
    truth = out["summary"].get("attribution_vs_truth")
    lift = out["summary"].get("lift")
    tables = [
        *([table] if table else []),
        *([format_attribution_vs_truth(truth)] if truth else []),
        *([format_lift(lift)] if lift else []),
    ]
    return "\n\n".join([*parts, format_summary(out["summary"]), *tables])


def format_attribution_vs_truth(block: Mapping[str, Any]) -> str:
    """Each attribution model's GMV per campaign, and per channel of it, against the GMV its ads truly
    caused: the bias and error of each model (attribution_truth.score_models)."""
    campaigns = block["campaigns"]
    models = list(next(iter(campaigns.values()))["models"])
    seeds = f"{block['seeds']} seeds, " if "seeds" in block else ""
    lines = [
        f"attribution against causal truth ({seeds}{block['days']} days of the {block['scored_on']} run): "
        "bias = (attributed - true) / true GMV; err = RMS of the daily differences / mean true day",
        f"{'campaign / channel':<20} {'true gmv':>9} | " + " | ".join(f"{m:^13}" for m in models),
        f"{'':<20} {'':>9} | " + " | ".join(f"{'bias':>6} {'err':>6}" for _ in models),
    ]
    for cid, row in campaigns.items():
        lines.append(_truth_row(cid, row, models))
        if len(row["by_channel"]) > 1:
            lines += [_truth_row(f"  {ch}", c, models) for ch, c in row["by_channel"].items()]
    means = []
    for m in models:
        scores = [row["models"][m] for row in campaigns.values() if row["models"][m]["bias"] is not None]
        mean_bias = math.fsum(abs(s["bias"]) for s in scores) / len(scores) if scores else None
        mean_err = math.fsum(s["error"] for s in scores) / len(scores) if scores else None
        means.append(f"{_pct(mean_bias, sign=False)} {_pct(mean_err, sign=False)}")
    lines.append(f"{'campaigns: mean |bias|, mean err':<32} | " + " | ".join(means))
    return "\n".join(lines)


def _truth_row(label: str, row: Mapping[str, Any], models: Sequence[str]) -> str:
    cells = [
        f"{_pct(row['models'][m]['bias'])} {_pct(row['models'][m]['error'], sign=False)}" for m in models
    ]
    return f"{label:<20} {row['true_gmv']:>9.0f} | " + " | ".join(cells)


def _pct(v: float | None, sign: bool = True) -> str:
    if v is None:
        return f"{'-':>6}"
    return f"{v:>+6.1%}" if sign else f"{v:>6.1%}"
