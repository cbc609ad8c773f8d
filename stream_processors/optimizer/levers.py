"""What bid levers beyond one bid per campaign and channel could pay: an upper bound from the truth.

The issue asks for bid multipliers per user segment and per hour of the day, and weights across
creatives and creators, *where the evaluation shows they pay*. Before a controller learns such a
lever from noisy data, the hidden traffic model says what the lever is worth with perfect
knowledge: split each channel's auction into parts (its segments, or its hours), let every part
have its own bid, and find the expected daily GMV of the best such bids under the campaign's
budget and CPA/ROAS target, against the best single bid per channel (the oracle's), computed the
same way. A lever whose perfect-knowledge headroom is within the evaluation's seed-to-seed noise
cannot pay once it has to be learned, and is not worth its variance.

Each part's expected daily spend, checkouts and GMV are concave-ish in its bid and the two
constraints are sums over parts, so the optimum is found through Lagrange multipliers (one for the
budget, one for the target): for each pair, every part takes its best grid bid independently; the
best pair whose choice is feasible wins. Both sides use the same grid and search. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (spend, checkouts, gmv) per day of one part at each bid of the grid: arrays of the grid's shape
PartCurves = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True, slots=True)
class LeverHeadroom:
    uniform_gmv: float  # the best single bid per channel
    split_gmv: float  # the best bid per part
    gain: float  # split / uniform - 1


def best_gmv(
    parts: Sequence[PartCurves],
    *,
    budget: float,
    target_kind: str,
    target: float,
    start: np.ndarray | None = None,
    multipliers: int = 64,
) -> tuple[float, np.ndarray]:
    """The largest expected GMV over one grid bid per part, subject to total spend <= budget and
    total CPA <= target (or ROAS >= target), and the grid index chosen per part. (0.0, lowest
    bids) when no choice is feasible. `start`: a feasible choice to improve on as well."""
    spend = np.stack([p[0] for p in parts])  # (parts, grid)
    conv = np.stack([p[1] for p in parts])
    gmv = np.stack([p[2] for p in parts])
    # the target as a sum over parts that must stay <= 0
    excess = spend - target * conv if target_kind == "cpa" else target * spend - gmv
    rows = np.arange(spend.shape[0])

    def feasible(pick: np.ndarray) -> bool:
        s, e = spend[rows, pick].sum(), excess[rows, pick].sum()
        return bool(s <= budget * (1 + 1e-12) and e <= 1e-9 * max(1.0, abs(float(s))))

    # scale the multipliers to the problem: GMV per unit of spend and of excess
    scale_b = float(gmv.max() / max(spend.max(), 1e-12))
    scale_t = float(gmv.max() / max(np.abs(excess).max(), 1e-12))
    lams = np.concatenate([[0.0], np.geomspace(1e-3, 1e2, multipliers)])
    candidates = [np.zeros(len(parts), dtype=int)] + ([start] if start is not None else [])
    for lb in lams * scale_b:
        for lt in lams * scale_t:
            pick = np.argmax(gmv - lb * spend - lt * excess, axis=1)
            if feasible(pick):
                candidates.append(pick)
    candidates = [c for c in candidates if feasible(c)]
    if not candidates:
        return 0.0, np.zeros(len(parts), dtype=int)
    best = max(candidates, key=lambda c: float(gmv[rows, c].sum()))
    return _climb(best, gmv, feasible)


def _climb(
    pick: np.ndarray, gmv: np.ndarray, feasible: Callable[[np.ndarray], bool]
) -> tuple[float, np.ndarray]:
    """Coordinate ascent from a feasible choice: move one part's bid a grid step while that stays
    feasible and adds GMV (the multiplier search alone can stop short of the optimum)."""
    pick = pick.copy()
    rows = np.arange(gmv.shape[0])
    last = gmv.shape[1] - 1
    improved = True
    while improved:
        improved = False
        for i in range(len(pick)):
            for step in (1, -1):
                j = pick[i] + step
                if 0 <= j <= last and gmv[i, j] > gmv[i, pick[i]]:
                    trial = pick.copy()
                    trial[i] = j
                    if feasible(trial):
                        pick, improved = trial, True
    return float(gmv[rows, pick].sum()), pick


def lever_headroom(
    channels: Sequence[str],
    parts: Sequence[str],
    curves: Callable[[str, str, np.ndarray], PartCurves],
    grid: np.ndarray,
    *,
    budget: float,
    target_kind: str,
    target: float,
) -> LeverHeadroom:
    """`curves(channel, part, grid)`: one part's daily figures over the bid grid. A channel's
    uniform curve is the sum of its parts' curves at the same bid; the uniform optimum, every part
    at its channel's bid, is also a split choice, so the split search starts from it (gain >= 0)."""
    split: list[PartCurves] = []
    uniform: list[PartCurves] = []
    for ch in channels:
        per = [curves(ch, part, grid) for part in parts]
        split.extend(per)
        uniform.append(
            (
                np.sum([p[0] for p in per], axis=0),
                np.sum([p[1] for p in per], axis=0),
                np.sum([p[2] for p in per], axis=0),
            )
        )
    u, upick = best_gmv(uniform, budget=budget, target_kind=target_kind, target=target)
    s, _ = best_gmv(
        split, budget=budget, target_kind=target_kind, target=target, start=np.repeat(upick, len(parts))
    )
    s = max(s, u)  # the uniform choice is a split choice: only the summation order differs
    return LeverHeadroom(u, s, s / u - 1.0 if u > 0 else 0.0)
