"""Data-driven attribution: a first-order Markov chain over channels and its removal effects.

The chain has a (start) state, one state per channel, and two absorbing states, (conversion) and
(null). Transition counts follow the `ChannelAttribution` package (Altomare & Loris; Python package
`channelattribution` 2.2.5, `cypack/functions.cpp::markov_model_cpp`) so results are comparable:

* consecutive repeats of one channel are collapsed (``a > a > b`` is ``a > b``; no self-loops);
* every step of a path is weighted by conversions + nulls of that path, the final step to (conversion)
  by its conversions and to (null) by its nulls.

Where that package estimates removal effects by Monte-Carlo simulation, here the absorption
probabilities are solved exactly (a linear system of at most a dozen states), so results are
deterministic and cheap enough to refresh continuously. Its removal effect, P(path visits k | it
converts), equals ours, 1 - P(conversion with k removed) / P(conversion), in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

START = "(start)"
CONVERSION = "(conversion)"
NULL = "(null)"
_RESERVED = frozenset({START, CONVERSION, NULL})
_SNAPSHOT_VERSION = 1


def _collapse(channels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for c in channels:
        if c in _RESERVED:
            raise ValueError(f"channel name {c!r} is reserved for a Markov chain state")
        if not out or out[-1] != c:
            out.append(c)
    return out


def _check_amount(name: str, x: float) -> float:
    xf = float(x)
    if not (xf >= 0.0 and math.isfinite(xf)):
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return xf


def _add_path(
    counts: dict[str, dict[str, float]],
    channels: list[str],
    order: dict[str, None],
    conversions: float,
    nulls: float,
) -> None:
    for c in channels:
        order.setdefault(c, None)
    passes = conversions + nulls
    if not channels or passes == 0.0:
        # A path with no touch says nothing about channels; one with no weight adds no transitions (as
        # in ChannelAttribution) but its channels are still listed, with zero credit.
        return
    prev = START
    for c in channels:
        row = counts.setdefault(prev, {})
        row[c] = row.get(c, 0.0) + passes
        prev = c
    row = counts.setdefault(prev, {})
    if conversions:
        row[CONVERSION] = row.get(CONVERSION, 0.0) + conversions
    if nulls:
        row[NULL] = row.get(NULL, 0.0) + nulls


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting; a and b are consumed."""
    n = len(b)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-300:
            raise ArithmeticError("singular absorption system")
        if pivot != col:
            a[col], a[pivot] = a[pivot], a[col]
            b[col], b[pivot] = b[pivot], b[col]
        pivot_row = a[col]
        inv = 1.0 / pivot_row[col]
        for r in range(col + 1, n):
            factor = a[r][col] * inv
            if factor != 0.0:
                row = a[r]
                for k in range(col, n):
                    row[k] -= factor * pivot_row[k]
                b[r] -= factor * b[col]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        acc = b[r]
        row = a[r]
        for k in range(r + 1, n):
            acc -= row[k] * x[k]
        x[r] = acc / row[r]
    return x


class MarkovChain:
    """First-order Markov chain over channels with (start), (conversion) and (null) states, built from
    paths."""

    __slots__ = ("_channels", "_counts")

    def __init__(self, transitions: Mapping[str, Mapping[str, float]], channels: Sequence[str] = ()) -> None:
        """transitions: from-state -> to-state -> count (weight). channels: extra channels to list even
        without transitions, in reporting order; channels seen only in transitions follow."""
        order: dict[str, None] = {}
        for c in channels:
            if c in _RESERVED:
                raise ValueError(f"channel name {c!r} is reserved for a Markov chain state")
            order.setdefault(c, None)
        counts: dict[str, dict[str, float]] = {}
        for src, row in transitions.items():
            if src in (CONVERSION, NULL):
                raise ValueError(f"absorbing state {src!r} cannot have outgoing transitions")
            if src != START:
                order.setdefault(src, None)
            out: dict[str, float] = {}
            for dst, w in row.items():
                if dst == START:
                    raise ValueError("no transition may lead back to (start)")
                if dst not in _RESERVED:
                    order.setdefault(dst, None)
                out[dst] = _check_amount(f"transition {src}->{dst}", w)
            counts[src] = out
        self._channels: tuple[str, ...] = tuple(order)
        self._counts = counts

    @classmethod
    def from_paths(cls, paths: Iterable[tuple[Sequence[str], float, float]]) -> MarkovChain:
        """paths: (channels in time order, conversions, nulls)."""
        counts: dict[str, dict[str, float]] = {}
        order: dict[str, None] = {}
        for channels, conversions, nulls in paths:
            _add_path(
                counts,
                _collapse(channels),
                order,
                _check_amount("conversions", conversions),
                _check_amount("nulls", nulls),
            )
        return cls(counts, tuple(order))

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def transition_probabilities(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for src, row in self._counts.items():
            total = math.fsum(row.values())
            if total > 0.0:
                result[src] = {dst: w / total for dst, w in row.items() if w > 0.0}
        return result

    def _absorption(self, removed: str | None) -> float:
        # Unknowns: P(eventually (conversion)) from (start) and from every channel. A removed channel
        # is pinned to 0, which is the same as redirecting all its incoming transitions to (null). A
        # channel with no outgoing weight is pinned to 0 too: nothing was ever seen converting from it.
        states = (START, *self._channels)
        index = {s: i for i, s in enumerate(states)}
        n = len(states)
        a = [[0.0] * n for _ in range(n)]
        b = [0.0] * n
        for i, s in enumerate(states):
            a[i][i] = 1.0
            if s == removed:
                continue
            row = self._counts.get(s)
            if not row:
                continue
            total = math.fsum(row.values())
            if total <= 0.0:
                continue
            for dst, w in row.items():
                if dst == CONVERSION:
                    b[i] += w / total
                elif dst != NULL:
                    a[i][index[dst]] -= w / total
        return max(0.0, min(1.0, _solve(a, b)[0]))

    def conversion_probability(self) -> float:
        return self._absorption(None)

    def removal_effects(self) -> dict[str, float]:
        """channel -> 1 - P(conversion | channel removed) / P(conversion), clipped at 0; all 0 when the
        chain never converts."""
        full = self._absorption(None)
        if full <= 0.0:
            return dict.fromkeys(self._channels, 0.0)
        return {c: max(0.0, 1.0 - self._absorption(c) / full) for c in self._channels}

    def channel_weights(self) -> dict[str, float]:
        """Removal effects normalised to sum 1 (empty dict if they sum to 0)."""
        effects = self.removal_effects()
        total = math.fsum(effects.values())
        if total <= 0.0:
            return {}
        return {c: e / total for c, e in effects.items()}

    def attribute(self, total_conversions: float, total_value: float) -> dict[str, tuple[float, float]]:
        """channel -> (conversions, value), both split by the normalised removal effects.

        ChannelAttribution splits value by a separately simulated value removal effect (conversion
        values drawn per last channel); the two agree whenever value per conversion does not depend on
        the last channel before converting.
        """
        weights = self.channel_weights()
        return {
            c: (total_conversions * weights.get(c, 0.0), total_value * weights.get(c, 0.0))
            for c in self._channels
        }


class JourneyLearner:
    """Learns the chain continuously from the stream: counts transitions from observed journeys.

    Memory is bounded by (#channels+3)^2 counters, independent of the number of journeys: only the
    transition counts are kept, never the journeys.
    """

    __slots__ = ("_counts", "_order")

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, float]] = {}
        self._order: dict[str, None] = {}

    def observe(self, channels: Sequence[str], converted: bool, weight: float = 1.0) -> None:
        """Count one finished journey (its touch channels in time order) that did or did not convert."""
        w = _check_amount("weight", weight)
        collapsed = _collapse(channels)
        if converted:
            _add_path(self._counts, collapsed, self._order, w, 0.0)
        else:
            _add_path(self._counts, collapsed, self._order, 0.0, w)

    def chain(self) -> MarkovChain:
        return MarkovChain(self._counts, tuple(self._order))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot."""
        return {
            "version": _SNAPSHOT_VERSION,
            "channels": list(self._order),
            "transitions": {src: dict(row) for src, row in self._counts.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyLearner:
        if data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported JourneyLearner snapshot version {data.get('version')!r}")
        channels = data.get("channels", [])
        transitions = data.get("transitions", {})
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError("snapshot 'channels' must be a list of strings")
        if not isinstance(transitions, Mapping):
            raise ValueError("snapshot 'transitions' must be an object")
        # Round-trip through MarkovChain for its validation of state names and counts.
        chain = MarkovChain(transitions, channels)
        learner = cls()
        learner._order = dict.fromkeys(chain.channels)
        learner._counts = {src: dict(row) for src, row in chain._counts.items()}
        return learner
