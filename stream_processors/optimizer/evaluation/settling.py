"""How close a run's true efficiency stays to its reference: the +-10% band, the round a campaign
settles in it, the share of rounds inside it, and the most any controller could manage given the
evidence it has (a Cramer-Rao bound). Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence

BAND = math.log(1.10)
# the share of campaign-rounds in band is counted from this round on (the settle target's horizon)
IN_BAND_FROM_ROUND = 20


def in_band(eff: float, ref: float) -> bool:
    """True efficiency within +-10% of the reference (symmetric on the log scale)."""
    return eff > 0 and ref > 0 and abs(math.log(eff / ref)) <= BAND


def in_band_share(eff: Sequence[float], ref: Sequence[float]) -> float | None:
    """Share of rounds whose true efficiency is within +-10% of the reference."""
    pairs = list(zip(eff, ref, strict=True))
    if not pairs:
        return None
    inside = sum(1 for e, r in pairs if in_band(e, r))
    return round(inside / len(pairs), 4)


def settle(eff: Sequence[float], ref: Sequence[float], kind: str) -> int | None:
    """First round (1-based) from which the true efficiency stays within +-10% of the reference."""
    settled: int | None = None
    for i, (e, r) in enumerate(zip(eff, ref, strict=True)):
        inside = in_band(e, r)
        if not inside:
            settled = None
        elif settled is None:
            settled = i + 1
    return settled


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
