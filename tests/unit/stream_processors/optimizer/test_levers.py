"""The lever headroom search: constraints kept, optimum found, and a lever that pays is seen to pay."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stream_processors.optimizer.levers import PartCurves, best_gmv, lever_headroom

GRID = np.geomspace(50, 800, 8)


def curve(quality: float, size: float = 1.0, price: float = 100.0) -> PartCurves:
    """Auction-like: volume saturates with the bid, conversion quality decays with it."""
    views = size * 1000 * (1 - np.exp(-GRID / 300))
    spend = views * GRID / 1000
    conv = views * 0.01 * quality * (GRID / 300) ** -0.4
    return spend, conv, conv * price


def brute_force(parts: list[PartCurves], budget: float, kind: str, target: float) -> float:
    best = 0.0
    for pick in itertools.product(range(len(GRID)), repeat=len(parts)):
        s = sum(p[0][i] for p, i in zip(parts, pick, strict=True))
        c = sum(p[1][i] for p, i in zip(parts, pick, strict=True))
        g = sum(p[2][i] for p, i in zip(parts, pick, strict=True))
        ok = s <= budget and (s <= target * c if kind == "cpa" else g >= target * s)
        if ok:
            best = max(best, g)
    return best


@pytest.mark.parametrize(
    ("budget", "kind", "target"),
    [(600.0, "cpa", 60.0), (10_000.0, "cpa", 40.0), (400.0, "roas", 1.5), (10_000.0, "roas", 2.5)],
)
def test_best_gmv_finds_the_brute_force_optimum_within_the_constraints(
    budget: float, kind: str, target: float
) -> None:
    parts = [curve(1.2), curve(1.0, size=0.6), curve(0.6, size=0.8)]
    gmv, pick = best_gmv(parts, budget=budget, target_kind=kind, target=target)
    rows = np.arange(len(parts))
    spend = sum(p[0][i] for p, i in zip(parts, pick, strict=True))
    conv = sum(p[1][i] for p, i in zip(parts, pick, strict=True))
    assert gmv == pytest.approx(sum(p[2][i] for p, i in zip(parts, pick, strict=True)))
    assert spend <= budget * (1 + 1e-9)
    assert (spend <= target * conv * (1 + 1e-9)) if kind == "cpa" else (gmv >= target * spend * (1 - 1e-9))
    assert len(rows) == len(pick)
    assert gmv == pytest.approx(brute_force(parts, budget, kind, target), rel=1e-9)


def test_nothing_feasible_gives_zero() -> None:
    gmv, _ = best_gmv([curve(1.0)], budget=1e-6, target_kind="cpa", target=50.0)
    assert gmv == 0.0


def test_a_part_that_never_converts_makes_the_split_pay() -> None:
    parts = {"good": curve(1.0), "dud": curve(0.0)}

    def curves(channel: str, part: str, grid: np.ndarray) -> PartCurves:
        assert grid is GRID and channel == "feed"
        return parts[part]

    h = lever_headroom(["feed"], ["good", "dud"], curves, GRID, budget=500.0, target_kind="cpa", target=1e9)
    # one bid buys the dud's auctions along with the good ones; split bids spend it all on the good
    assert h.gain > 0.05
    assert h.split_gmv == pytest.approx(brute_force(list(parts.values()), 500.0, "cpa", 1e9))
    summed = (parts["good"][0] + parts["dud"][0], parts["good"][1], parts["good"][2])
    assert h.uniform_gmv == pytest.approx(brute_force([summed], 500.0, "cpa", 1e9))


def test_identical_parts_gain_nothing_beyond_the_grid() -> None:
    def curves(channel: str, part: str, grid: np.ndarray) -> PartCurves:
        return curve(1.0, size=0.5)

    h = lever_headroom(["kol"], ["a", "b"], curves, GRID, budget=10_000.0, target_kind="cpa", target=60.0)
    assert 0.0 <= h.gain < 0.05
