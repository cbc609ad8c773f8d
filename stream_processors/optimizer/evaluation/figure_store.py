"""In-process attribution: the figures the live optimizer would read from Redis, attributed by the
attribution engine itself and kept in the in-memory state store, read by event-time window."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from stream_processors.attribution.journey import EngineConfig, Increments, UserState, apply_events
from stream_processors.attribution.models import Lookback
from stream_processors.figures import campaign_figures
from stream_processors.optimizer.controller import ChannelFigures, with_lagged_spend
from stream_processors.optimizer.evaluation.config import DAY_S
from stream_processors.processor import BatchPlan, Catalogue, _in_base_currency
from stream_processors.store.memory import MemoryState


class FigureStore:
    """Attributes the simulation's events in process, as the worker would, and keeps the figures
    in the in-memory state store (store/memory.py), read by event-time window as the live
    optimizer reads Redis. One partition: figures are sums, so partitioning would not change them."""

    def __init__(
        self,
        bucket_s: int,
        catalogue: Catalogue,
        campaign_products: Mapping[str, frozenset[str]],
        lift_window_s: float = 7 * DAY_S,
    ) -> None:
        self.bucket_s = bucket_s
        self.catalogue = catalogue
        self.cfg = EngineConfig(
            lookback=Lookback(view_s=DAY_S, engaged_s=7 * DAY_S),
            half_life_s=6 * 3600.0,
            lateness_s=3600.0,
            bucket_s=bucket_s,
            models=("last",),
            campaign_products=campaign_products,
            lift_window_s=lift_window_s,
        )
        self.users: dict[str, UserState] = defaultdict(UserState)
        self.state = MemoryState(partitions=1, bucket_s=bucket_s)
        self._epoch = self.state.claim(0)

    def apply(self, events: Sequence[Any], now: float) -> None:
        out = Increments()
        horizon = now - 2 * 3600.0
        for raw in events:
            e = _in_base_currency(raw, self.catalogue)  # as the worker does before attributing
            apply_events(self.users[e.user_id], [e], self.cfg, out, horizon=horizon)
        # Only the figures go to the store (the users' states stay decoded above, and there are no
        # offsets to skip: the simulation hands every event over once).
        figures = BatchPlan(0, {}, {}, out, Counter(), [], [], [], Counter())
        self.state.apply(figures, self._epoch)

    def window_with_lag(self, start: float, end: float, lag: float) -> dict[tuple[str, str], ChannelFigures]:
        """Figures over [start, end) with `lagged_spend`, the spend over the span shifted back by `lag`."""
        return with_lagged_spend(self.window(start, end), self.window(start - lag, end - lag))

    def window(self, start: float, end: float) -> dict[tuple[str, str], ChannelFigures]:
        return channel_figures(self.fields(start, end))

    def fields(self, start: float, end: float) -> dict[str, int]:
        """Every stored field summed over the buckets of [start, end): the attributed figures
        (channel_figures) and the lift figures by cohort bucket (stream_processors.lift)."""
        return self.state.window(start, end)


def channel_figures(fields: Mapping[str, int]) -> dict[tuple[str, str], ChannelFigures]:
    """(campaign, channel) -> its last-touch figures, from stored fields."""
    out: dict[tuple[str, str], ChannelFigures] = {}
    for cid, fig in campaign_figures(fields, ("last",)).items():
        for ch, per_model in fig.by_channel.items():
            e = per_model["last"]
            out[(cid, ch)] = ChannelFigures(e.spend, e.checkouts, e.gmv, e.add_to_carts)
    return out
