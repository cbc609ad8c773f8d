"""Lift-calibrated credit: the optimizer steered by what its ads cause, not by what attribution
credits them with. Pure.

Attribution credits a campaign with every checkout its last touch precedes, including purchases
the user would have made anyway (organic) and ones another campaign's ad caused. The holdout
groups (conversion lift, stream_processors/lift.py) measure the GMV a campaign's ads truly add:
the exposed group's GMV per user minus the held-out group's, times the exposed users. Per campaign,
the calibration factor

    k = incremental GMV / attributed GMV      (both over a long trailing window of days)

says how much of the attributed credit is causal. The controller keeps steering by the attributed
figures, which are plentiful, per channel and fresh (the 8 h efficiency window), but each channel's
attributed checkouts and GMV are multiplied by its campaign's k first: a campaign with k = 0.7 has
its ROAS read 30% lower and its CPA 1/0.7 higher, so it bids down to the target on what it causes.
Lift needs days of evidence (a difference of two noisy means), so k is measured over days and
applied to the hours; it is the ratio that is stable, not the figures themselves.

Both sides of k must count the same users (`lift_span`). The lift figures are keyed by the cohort
(the bucket of a user's first exposure) and grow for the lift window after it; the attributed GMV is
keyed by the checkout's own time. Over a trailing window [now - W, now] the numerator holds only the
window's cohorts, censored at now, but the denominator also holds the checkouts of users first
exposed before the window: once a run is older than W, k reads low (0.5x when effects spread evenly
over W). So:
- while no figures precede the span (a run younger than W + settle), the span runs to now: every
  attributed checkout in it comes from a cohort in it, and both sides are censored at now alike;
- after that, cohorts of [now - settle - W, now - settle] against the attributed GMV of the same span.
  At a steady rate of first exposures the checkouts of earlier cohorts that fall in the span (its
  head) equal those of the span's cohorts that fall after it (its tail), so the two sides match,
  provided the span's cohorts are complete: effects that come later than `settle` after exposure
  are missed. With effects spread evenly over S days (S > settle), k reads low by
  (S - settle)^2 / (2 S W); 0 when S <= settle. Exact matching needs the attributed GMV keyed by the
  cohort bucket too, which the engine does not store.

k is shrunk toward 1 by the width of the lift interval (`calibration`). k = 1 is steering by
attribution, the status quo: with no evidence the lift mode is exactly the attributed mode, and it
departs from it only as far as the evidence carries. A raw k from a wide interval is mostly noise
(0.4 +- 0.6 on a day of a small campaign), and the bids follow k through the elasticity (CPA ~
bid^1.4): an unshrunk k would move spend on a coin flip, and a noise-driven cut is lost GMV. The
shrunk k is the posterior mean of k under a normal prior N(1, prior_sd^2) and the normal likelihood
the interval implies, the estimate with the least expected squared error.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stream_processors.figures import MINOR, campaign_figures, campaign_spend_minor
from stream_processors.lift import LiftEstimate, lift_estimates, z_of
from stream_processors.optimizer.control_types import ChannelFigures

DAY_S = 86_400.0
Figures = Mapping[tuple[str, str], ChannelFigures]


@dataclass(frozen=True, slots=True)
class LiftSteerPolicy:
    # cohorts of first exposures over this trailing window give k: days, for the held-out group to
    # be large enough (the efficiency window of 8 h holds too few held-out buyers to tell anything)
    window_s: float = 7 * DAY_S
    # once the run is older than window_s + settle_s, the cohorts of the last settle_s are left out
    # of k (on both sides, `lift_span`): their effects have not all come yet
    settle_s: float = 2 * DAY_S
    # k is measured over days: it is read afresh once per this much event time, not every round
    # (the span's read is (window_s + settle_s) / bucket_s buckets of every partition: ~52,000
    # hashes at 60 s buckets and 4 partitions, too many for a round every 5 s)
    refresh_s: float = 900.0
    prior_sd: float = 0.3  # how far from 1 k is believed to be before any evidence
    k_min: float = 0.2  # k is kept in [k_min, k_max]: a guardrail, as the bid floor and cap are
    k_max: float = 2.0
    # The normal approximation of the interval needs groups of some size: a held-out group of ten
    # users without a buyer has a sample variance of 0, and an interval of width 0 would pass for
    # certainty. Below this many held-out users k stays 1.
    min_held_out_users: int = 100
    confidence: float = 0.95  # the level of the estimator's intervals (lift.lift_estimates)


@dataclass(frozen=True, slots=True)
class Calibration:
    factor: float  # the k applied: shrunk and bounded
    raw: float | None = None  # incremental / attributed GMV; None: no estimate
    standard_error: float | None = None  # of `raw`, from the interval's width
    weight: float = 0.0  # the evidence's weight against the prior (0: k is 1)


NO_CALIBRATION = Calibration(1.0)


def calibration(
    estimate: LiftEstimate | None, attributed_gmv_minor: float, policy: LiftSteerPolicy
) -> Calibration:
    """One campaign's k from its lift estimate and its attributed GMV over the same window."""
    if estimate is None or attributed_gmv_minor <= 0 or estimate.held_out.users < policy.min_held_out_users:
        return NO_CALIBRATION
    ci = estimate.incremental_gmv_ci
    raw = estimate.incremental_gmv_minor / attributed_gmv_minor
    z = z_of(policy.confidence)
    se = (ci[1] - ci[0]) / (2 * z) / attributed_gmv_minor
    prior_var = policy.prior_sd**2
    weight = prior_var / (prior_var + se * se)
    factor = min(policy.k_max, max(policy.k_min, 1.0 + weight * (raw - 1.0)))
    return Calibration(factor, raw, se, weight)


def attributed_gmv_minor(figures: Figures) -> dict[str, float]:
    """Attributed GMV per campaign (all channels) of channel figures, in minor units."""
    out: dict[str, float] = {}
    for (cid, _), f in figures.items():
        out[cid] = out.get(cid, 0.0) + f.gmv * MINOR
    return out


def calibrations_of(
    fields: Mapping[str, int], campaigns: Iterable[str], policy: LiftSteerPolicy, model: str = "last"
) -> dict[str, Calibration]:
    """Every campaign's k over one span: `fields` the stored fields summed over the span's buckets
    (one window read): the lift fields of its cohorts (lift.py reads its own among them), and the
    spend and `model`'s attributed GMV of the same buckets (figures.py, as every reader)."""
    estimates = lift_estimates(fields, campaign_spend_minor(fields), policy.confidence)
    attributed = {
        cid: fig.total(model).gmv * MINOR for cid, fig in campaign_figures(fields, (model,)).items()
    }
    return {cid: calibration(estimates.get(cid), attributed.get(cid, 0.0), policy) for cid in campaigns}


def calibrations(
    fields: Mapping[str, int], attributed: Figures, campaigns: Iterable[str], policy: LiftSteerPolicy
) -> dict[str, Calibration]:
    """calibrations_of, for the evaluation's call: its `attributed` are the last-touch figures of the
    same `fields`, which calibrations_of reads itself (the argument is unused)."""
    del attributed
    return calibrations_of(fields, campaigns, policy)


def trailing_window(now: float, policy: LiftSteerPolicy, start: float | None = None) -> tuple[float, float]:
    """The [start, end) the evaluation's calibration reads at `now` (the injected clock): the last
    `window_s`, from `start` on when the figures begin later (a run that started less than a window
    ago, where it is `lift_span` without figures before it)."""
    begin = now - policy.window_s
    return (begin if start is None else max(begin, start)), now + 1


def lift_span(now: float, policy: LiftSteerPolicy, figures_before: bool) -> tuple[float, float]:
    """The [start, end) of cohorts and attributed GMV that k compares at `now` (module docstring):
    `figures_before` says whether any figures precede the start (the run is older than the span)."""
    begin = now - policy.settle_s - policy.window_s
    return (begin, now - policy.settle_s) if figures_before else (begin, now + 1)


def calibrated_figures(
    figures: Figures, factors: Mapping[str, float]
) -> dict[tuple[str, str], ChannelFigures]:
    """Each channel's attributed checkouts and GMV times its campaign's k. Spend is what was paid and
    add-to-carts are the evidence the controller counts: neither is credit, both stay."""
    out: dict[tuple[str, str], ChannelFigures] = {}
    for key, f in figures.items():
        k = factors.get(key[0], 1.0)
        out[key] = f if k == 1.0 else dataclasses.replace(f, conversions=f.conversions * k, gmv=f.gmv * k)
    return out


def factors_of(cals: Mapping[str, Calibration]) -> dict[str, float]:
    """campaign -> k, only those that differ from 1."""
    return {cid: c.factor for cid, c in cals.items() if not math.isclose(c.factor, 1.0)}
