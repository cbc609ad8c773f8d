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

Value is credited as that package does, by removal effects of the *value* chain: a conversion entered
from channel c is worth the average value per conversion of the paths whose last channel is c (the
package draws it from their value distribution, whose mean is that), and a channel's value removal
effect is the share of expected converted value lost without it. Splitting value by the conversion
removal effects instead (value = conversions x overall average value) over-credits channels that close
cheap conversions and under-credits those that close dear ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

START = "(start)"
CONVERSION = "(conversion)"
NULL = "(null)"
_RESERVED = frozenset({START, CONVERSION, NULL})
# Version 2 adds the conversion values; version 1 snapshots (no values) still load.
_SNAPSHOT_VERSION = 2
_READABLE_SNAPSHOTS = frozenset({1, 2})


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
    value: float = 0.0,
    values: dict[str, float] | None = None,
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
        # Value counts only with conversions: the package keys value per conversion (value/conversions)
        # and skips paths without conversions.
        if values is not None:
            values[prev] = values.get(prev, 0.0) + value
    if nulls:
        row[NULL] = row.get(NULL, 0.0) + nulls


def _solve_removals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve a x = b for the full chain and for every channel removed, in one batched LAPACK call.

    a: (n, n) = I - transient transition probabilities, state 0 = (start), 1.. = channels; b: (n, r), r
    right-hand sides (here: conversion probability and conversion value per step). Removing channel k
    pins its unknowns to 0 (row k of a becomes the unit row, b's row k zero), which is the same as
    redirecting its incoming transitions to (null). Returns (n, n, r): index 0 the full chain, index k
    the chain without state k.
    """
    n = a.shape[0]
    systems = np.broadcast_to(a, (n, n, n)).copy()
    rhs = np.broadcast_to(b, (n, *b.shape)).copy()
    for k in range(1, n):
        systems[k, k, :] = 0.0
        systems[k, k, k] = 1.0
        rhs[k, k, :] = 0.0
    try:
        return np.asarray(np.linalg.solve(systems, rhs))
    except np.linalg.LinAlgError:
        raise ArithmeticError("singular absorption system") from None


class MarkovChain:
    """First-order Markov chain over channels with (start), (conversion) and (null) states, built from
    paths, optionally with the value of the conversions entered from each state."""

    __slots__ = ("_channels", "_counts", "_values")

    def __init__(
        self,
        transitions: Mapping[str, Mapping[str, float]],
        channels: Sequence[str] = (),
        conversion_values: Mapping[str, float] | None = None,
    ) -> None:
        """transitions: from-state -> to-state -> count (weight). channels: extra channels to list even
        without transitions, in reporting order; channels seen only in transitions follow.
        conversion_values: from-state -> total value of the conversions entered from it; None when
        unknown, and then every conversion is worth the same (value weights = conversion weights)."""
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
        values: dict[str, float] | None = None
        if conversion_values is not None:
            values = {}
            for src, v in conversion_values.items():
                if src in (CONVERSION, NULL):
                    raise ValueError(f"absorbing state {src!r} cannot convert")
                if src != START:
                    order.setdefault(src, None)
                values[src] = _check_amount(f"conversion value of {src}", v)
        self._channels: tuple[str, ...] = tuple(order)
        self._counts = counts
        self._values = values

    @classmethod
    def from_paths(cls, paths: Iterable[tuple[Sequence[str], float, float]]) -> MarkovChain:
        """paths: (channels in time order, conversions, nulls). No values: see from_valued_paths."""
        return cls._from_rows(
            ((channels, conversions, 0.0, nulls) for channels, conversions, nulls in paths), None
        )

    @classmethod
    def from_valued_paths(cls, paths: Iterable[tuple[Sequence[str], float, float, float]]) -> MarkovChain:
        """paths: (channels in time order, conversions, total conversion value, nulls), the columns of a
        paths file."""
        return cls._from_rows(paths, {})

    @classmethod
    def _from_rows(
        cls, paths: Iterable[tuple[Sequence[str], float, float, float]], values: dict[str, float] | None
    ) -> MarkovChain:
        """values: {} to count conversion values, None for a chain without them."""
        counts: dict[str, dict[str, float]] = {}
        order: dict[str, None] = {}
        for channels, conversions, value, nulls in paths:
            _add_path(
                counts,
                _collapse(channels),
                order,
                _check_amount("conversions", conversions),
                _check_amount("nulls", nulls),
                _check_amount("value", value),
                values,
            )
        return cls(counts, tuple(order), values)

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def has_values(self) -> bool:
        return self._values is not None

    def transition_probabilities(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for src, row in self._counts.items():
            total = math.fsum(row.values())
            if total > 0.0:
                result[src] = {dst: w / total for dst, w in row.items() if w > 0.0}
        return result

    def _absorption(self) -> np.ndarray:
        """(1 + #channels, 2): from (start), P(conversion) and expected converted value, first for the
        full chain, then with each channel removed (in `channels` order)."""
        # A channel with no outgoing weight keeps the unit row and zero right-hand side: pinned to 0,
        # nothing was ever seen converting from it.
        states = (START, *self._channels)
        index = {s: i for i, s in enumerate(states)}
        n = len(states)
        a = np.eye(n)
        b = np.zeros((n, 2))
        for i, s in enumerate(states):
            row = self._counts.get(s)
            if not row:
                continue
            total = math.fsum(row.values())
            if total <= 0.0:
                continue
            for dst, w in row.items():
                if dst == CONVERSION:
                    p = w / total
                    b[i, 0] += p
                    # The conversion state carries the mean value per conversion entered from s.
                    b[i, 1] += p if self._values is None else p * (self._values.get(s, 0.0) / w if w else 0.0)
                elif dst != NULL:
                    a[i, index[dst]] -= w / total
        return _solve_removals(a, b)[:, 0, :]

    @staticmethod
    def _effects(channels: Sequence[str], column: Sequence[float]) -> dict[str, float]:
        full = column[0]
        if not full > 0.0:
            return dict.fromkeys(channels, 0.0)
        return {c: max(0.0, 1.0 - float(x) / full) for c, x in zip(channels, column[1:], strict=True)}

    @staticmethod
    def _normalised(effects: Mapping[str, float]) -> dict[str, float]:
        total = math.fsum(effects.values())
        if total <= 0.0:
            return {}
        return {c: e / total for c, e in effects.items()}

    def conversion_probability(self) -> float:
        return max(0.0, min(1.0, float(self._absorption()[0, 0])))

    def removal_effects(self) -> dict[str, float]:
        """channel -> 1 - P(conversion | channel removed) / P(conversion), clipped at 0; all 0 when the
        chain never converts."""
        return self._effects(self._channels, [float(x) for x in np.clip(self._absorption()[:, 0], 0.0, 1.0)])

    def value_removal_effects(self) -> dict[str, float]:
        """channel -> 1 - E[converted value | channel removed] / E[converted value], clipped at 0; all 0
        when no conversion has value. Equals removal_effects when the chain has no values."""
        return self._effects(self._channels, [float(x) for x in np.maximum(self._absorption()[:, 1], 0.0)])

    def channel_weights(self) -> dict[str, float]:
        """Removal effects normalised to sum 1 (empty dict if they sum to 0)."""
        return self._normalised(self.removal_effects())

    def value_weights(self) -> dict[str, float]:
        """Value removal effects normalised to sum 1 (empty dict if they sum to 0)."""
        return self._normalised(self.value_removal_effects())

    def weights(self) -> tuple[dict[str, float], dict[str, float]]:
        """(channel_weights, value_weights) from one solve: the two weight maps the stream applies to
        conversion counts and to conversion value."""
        solved = self._absorption()
        conv = self._effects(self._channels, [float(x) for x in np.clip(solved[:, 0], 0.0, 1.0)])
        value = self._effects(self._channels, [float(x) for x in np.maximum(solved[:, 1], 0.0)])
        return self._normalised(conv), self._normalised(value)

    def attribute(self, total_conversions: float, total_value: float) -> dict[str, tuple[float, float]]:
        """channel -> (conversions, value): conversions split by the normalised removal effects, value
        by the normalised value removal effects (as ChannelAttribution does). When no conversion has
        value the value weights are empty and the conversion weights split any value given."""
        weights, value_weights = self.weights()
        if not value_weights:
            value_weights = weights
        return {
            c: (total_conversions * weights.get(c, 0.0), total_value * value_weights.get(c, 0.0))
            for c in self._channels
        }


def weights_from_path_counts(
    path_counts: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, float]] | None:
    """The stream's learned weights from its journey-path counters: (count weights, value weights), or
    None when no journey converted (keep the weights in use).

    Counter fields are ``"a>b>c|1"`` (converted journeys of that path), ``"a>b>c|0"`` (journeys that
    aged out unconverted) and ``"a>b>c|v"`` (total value of the converted ones, in minor units). A
    store with no ``|v`` field at all predates value tracking: its value weights are the count weights.
    Fields with any other suffix are ignored, so a later field kind cannot be misread as nulls.
    """
    paths: dict[tuple[str, ...], list[float]] = {}
    any_value = False
    for name, n in path_counts.items():
        path, sep, kind = name.rpartition("|")
        slot = {"1": 0, "0": 1, "v": 2}.get(kind) if sep else None
        if slot is None or not path:
            continue
        any_value |= slot == 2
        paths.setdefault(tuple(path.split(">")), [0.0, 0.0, 0.0])[slot] += float(n)
    if not any(v[0] for v in paths.values()):
        return None
    if any_value:
        chain = MarkovChain.from_valued_paths((p, c, v, nl) for p, (c, nl, v) in paths.items())
    else:
        chain = MarkovChain.from_paths((p, c, nl) for p, (c, nl, _) in paths.items())
    return chain.weights()


class JourneyLearner:
    """Learns the chain continuously from the stream: counts transitions from observed journeys.

    Memory is bounded by (#channels+3)^2 counters, independent of the number of journeys: only the
    transition counts (and conversion value per last channel) are kept, never the journeys.
    """

    __slots__ = ("_counts", "_order", "_values")

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, float]] = {}
        self._order: dict[str, None] = {}
        # None: restored from a version-1 snapshot, which kept no values; value weights then equal the
        # count weights rather than mixing valued and unvalued conversions.
        self._values: dict[str, float] | None = {}

    def observe(
        self, channels: Sequence[str], converted: bool, weight: float = 1.0, value: float = 0.0
    ) -> None:
        """Count one finished journey (its touch channels in time order) that did or did not convert;
        value: the total value of its conversions (`weight` of them)."""
        w = _check_amount("weight", weight)
        v = _check_amount("value", value)
        collapsed = _collapse(channels)
        if converted:
            _add_path(self._counts, collapsed, self._order, w, 0.0, v, self._values)
        else:
            _add_path(self._counts, collapsed, self._order, 0.0, w)

    def chain(self) -> MarkovChain:
        return MarkovChain(self._counts, tuple(self._order), self._values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot."""
        doc: dict[str, Any] = {
            "version": _SNAPSHOT_VERSION,
            "channels": list(self._order),
            "transitions": {src: dict(row) for src, row in self._counts.items()},
        }
        if self._values is None:
            doc["version"] = 1  # restored from version 1 and still without values: it is one
        else:
            doc["conversion_values"] = dict(self._values)
        return doc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyLearner:
        if data.get("version") not in _READABLE_SNAPSHOTS:
            raise ValueError(f"unsupported JourneyLearner snapshot version {data.get('version')!r}")
        channels = data.get("channels", [])
        transitions = data.get("transitions", {})
        values = data.get("conversion_values", {} if data.get("version") != 1 else None)
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ValueError("snapshot 'channels' must be a list of strings")
        if not isinstance(transitions, Mapping):
            raise ValueError("snapshot 'transitions' must be an object")
        if values is not None and not isinstance(values, Mapping):
            raise ValueError("snapshot 'conversion_values' must be an object")
        # Round-trip through MarkovChain for its validation of state names, counts and values.
        chain = MarkovChain(transitions, channels, values)
        learner = cls()
        learner._order = dict.fromkeys(chain.channels)
        learner._counts = {src: dict(row) for src, row in chain._counts.items()}
        learner._values = None if chain._values is None else dict(chain._values)
        return learner
