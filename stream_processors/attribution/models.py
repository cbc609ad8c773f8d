"""Attribution models: which touches may claim a conversion, and how its credit is split between them.

Everything here is a pure function of its arguments so that the stream engine, the path-file CLI and the
tests all run exactly the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

ModelName = Literal["last", "first", "linear", "time_decay", "position", "markov"]
MODEL_NAMES: tuple[ModelName, ...] = ("last", "first", "linear", "time_decay", "position", "markov")

# Position-based ("U-shaped") split as the major ad platforms define it.
_POSITION_END_SHARE = 0.4
_POSITION_MIDDLE_SHARE = 0.2

assert set(MODEL_NAMES) == set(get_args(ModelName))


@dataclass(frozen=True, slots=True)
class Touch:
    at: float  # event time, POSIX seconds (UTC)
    campaign_id: str
    channel: str  # kol | brand | feed | search
    creative_id: str
    creator_id: str | None
    engaged: bool  # engaged touches (followed/opened link) get a longer lookback


@dataclass(frozen=True, slots=True)
class Lookback:
    view_s: float  # lookback for plain views (e.g. 1 day)
    engaged_s: float  # lookback for engaged touches (e.g. 7 days)


def _order_key(touch: Touch) -> tuple[float, str, str, str, bool, str, bool]:
    # Touches sharing a timestamp are ordered by content, not by arrival, so that a replayed or
    # re-partitioned stream (which may deliver them in another order) gives byte-identical credits.
    return (
        touch.at,
        touch.channel,
        touch.campaign_id,
        touch.creative_id,
        touch.creator_id is not None,
        touch.creator_id or "",
        touch.engaged,
    )


def eligible_touches(touches: Sequence[Touch], conversion_at: float, lookback: Lookback) -> list[Touch]:
    """Touches with at <= conversion_at and conversion_at - at <= the touch type's lookback, sorted by
    (at, then a stable tiebreak on the touch's content)."""
    view_s = lookback.view_s
    engaged_s = lookback.engaged_s
    # Written as "at >= conversion_at - window" would round differently; keep the documented form so a
    # touch exactly on the window edge is in, whatever the magnitudes.
    kept = [
        t
        for t in touches
        if t.at <= conversion_at and conversion_at - t.at <= (engaged_s if t.engaged else view_s)
    ]
    kept.sort(key=_order_key)
    return kept


def _linear(n: int) -> list[float]:
    return [1.0 / n] * n


def model_weights(
    model: ModelName,
    touches: Sequence[Touch],
    conversion_at: float,
    *,
    half_life_s: float,
    channel_weights: Mapping[str, float] | None = None,
) -> list[float]:
    """Weights (>= 0, summing to 1) for already-eligible touches sorted by time. Empty in -> empty out.

    last/first: 1 on the last/first touch; linear: equal; time_decay: 2^(-(conversion_at-at)/half_life_s)
    normalised; position: 40% first, 40% last, 20% spread evenly over the middle; 50/50 with two touches;
    100% with one; markov: each touch gets channel_weights[touch.channel] divided by the number of touches
    of that channel in the path, renormalised over the channels present; if all present channels have
    weight 0 or channel_weights is None, fall back to linear.
    """
    n = len(touches)
    if n == 0:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown attribution model {model!r}; expected one of {MODEL_NAMES}")
        return []
    if model == "last":
        weights = [0.0] * n
        weights[-1] = 1.0
        return weights
    if model == "first":
        weights = [0.0] * n
        weights[0] = 1.0
        return weights
    if model == "linear":
        return _linear(n)
    if model == "time_decay":
        if not (half_life_s > 0.0 and math.isfinite(half_life_s)):
            raise ValueError(f"half_life_s must be a positive finite number, got {half_life_s!r}")
        # Measure age from the newest touch rather than from conversion_at: the common factor cancels in
        # the normalisation, and the newest touch keeping weight 1 means old journeys cannot underflow
        # every weight to 0.0 and divide by zero.
        newest = max(t.at for t in touches)
        raw = [2.0 ** (-(newest - t.at) / half_life_s) for t in touches]
        total = math.fsum(raw)
        return [w / total for w in raw]
    if model == "position":
        if n == 1:
            return [1.0]
        if n == 2:
            return [0.5, 0.5]
        middle = _POSITION_MIDDLE_SHARE / (n - 2)
        return [_POSITION_END_SHARE] + [middle] * (n - 2) + [_POSITION_END_SHARE]
    if model == "markov":
        if channel_weights is None:
            return _linear(n)
        per_channel: dict[str, int] = {}
        for t in touches:
            per_channel[t.channel] = per_channel.get(t.channel, 0) + 1
        share: dict[str, float] = {}
        for channel, count in per_channel.items():
            w = channel_weights.get(channel, 0.0)
            # A learned weight can be missing, negative from a bad snapshot, or NaN; none of those may
            # produce negative or undefined credit, so they count as "no evidence for this channel".
            share[channel] = w / count if (w > 0.0 and math.isfinite(w)) else 0.0
        raw = [share[t.channel] for t in touches]
        total = math.fsum(raw)
        if total <= 0.0:
            return _linear(n)
        return [w / total for w in raw]
    raise ValueError(f"unknown attribution model {model!r}; expected one of {MODEL_NAMES}")


def split_exact(total: int, weights: Sequence[float]) -> list[int]:
    """Split an integer total so the integer parts sum EXACTLY to total (largest-remainder method,
    deterministic tie-break: earlier index wins).

    Each part differs from total * w / sum(weights) by less than 1. Negative totals (refunds) work the
    same way. Raises ValueError for negative or non-finite weights, or weights summing to 0 (unless the
    list is empty and total is 0).
    """
    n = len(weights)
    if n == 0:
        if total != 0:
            raise ValueError(f"cannot split {total} over zero weights")
        return []
    # Work in exact integers: every finite float is a dyadic rational, so scaling all weights to the
    # largest denominator (a power of two) loses nothing, and floor/remainder are then exact for any
    # total, even beyond 2**53 where float quotas would silently drift.
    ratios: list[tuple[int, int]] = []
    for w in weights:
        wf = float(w)
        if not (wf >= 0.0 and math.isfinite(wf)):
            raise ValueError(f"weights must be finite and >= 0, got {w!r}")
        ratios.append(wf.as_integer_ratio())
    denominator = max(d for _, d in ratios)
    scaled = [num * (denominator // den) for num, den in ratios]
    weight_sum = sum(scaled)
    if weight_sum == 0:
        raise ValueError("weights sum to 0")
    parts: list[int] = []
    remainders: list[int] = []
    for s in scaled:
        q, r = divmod(total * s, weight_sum)
        parts.append(q)
        remainders.append(r)
    leftover = total - sum(parts)
    if leftover:
        # leftover == sum(remainders) / weight_sum, so 0 < leftover < n and every chosen index has a
        # positive remainder: zero-weight touches can never receive a unit.
        order = sorted(range(n), key=lambda i: (-remainders[i], i))
        for i in order[:leftover]:
            parts[i] += 1
    return parts


def allocate(
    model: ModelName,
    touches: Sequence[Touch],
    conversion_at: float,
    total: int,
    *,
    lookback: Lookback,
    half_life_s: float,
    channel_weights: Mapping[str, float] | None = None,
) -> list[tuple[Touch, int]]:
    """eligible_touches -> model_weights -> split_exact; returns (touch, credit) pairs; [] when no eligible
    touch."""
    eligible = eligible_touches(touches, conversion_at, lookback)
    if not eligible:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown attribution model {model!r}; expected one of {MODEL_NAMES}")
        return []
    weights = model_weights(
        model, eligible, conversion_at, half_life_s=half_life_s, channel_weights=channel_weights
    )
    return list(zip(eligible, split_exact(total, weights), strict=True))
