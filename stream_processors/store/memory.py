"""The in-memory backend of the partition state store: the Redis backend's semantics on
dictionaries, for `seedloop evaluate` (a simulation faster than real time) and for tests.

Same rules as apply_batch.lua: a write with another epoch than the partition's is refused
(`FencedError`), a plan made from other offsets than the stored ones is refused
(`OffsetConflict`), and an accepted plan is applied whole. All-or-nothing holds because every
check runs before the first write, and the writes are dictionary and set updates of values that
were checked (Python integers do not overflow), so none of them can fail half-way; the offsets
are written last, as in the script. What it does not model: key expiry (user states, buckets and
reach live as long as the store), and reach is exact (a set) where Redis counts a HyperLogLog.

`MemoryState` is the data and a blocking API (FigureSource); `MemoryStore` wraps it in the
asynchronous PartitionStateStore protocol that the worker and the tests drive.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from stream_processors.processor import BatchPlan
from stream_processors.progress import KnownIds, PartitionMeta
from stream_processors.store.base import (
    AUDIENCES,
    FencedError,
    OffsetConflict,
    Reach,
    ReachQuery,
    audience_cutoffs,
    latest_watermark,
    most_recent,
    reach_queries,
    sum_hashes,
    window_buckets,
)


@dataclass(slots=True)
class PartitionData:
    meta: PartitionMeta = field(default_factory=PartitionMeta)
    totals: dict[str, int] = field(default_factory=dict)
    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    users: dict[str, bytes] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    # (bucket, campaign, channel) -> users; (bucket, campaign) -> users with an engaged view
    reach: dict[tuple[int, str, str], set[str]] = field(default_factory=dict)
    engaged_reach: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    # topic -> event id -> event time (the Redis sorted sets ids:<topic>)
    ids: dict[str, dict[str, float]] = field(default_factory=dict)
    # audience -> user -> score; and user -> last checkout time
    audiences: dict[str, dict[str, float]] = field(default_factory=lambda: {a: {} for a in AUDIENCES})
    last_checkout: dict[str, float] = field(default_factory=dict)


class MemoryState:
    """Every partition's state in dictionaries, with the store's rules (module docstring)."""

    def __init__(
        self, partitions: int = 1, bucket_s: int = 60, audience_expiry_s: Mapping[str, float] | None = None
    ) -> None:
        self.partitions = partitions
        self.bucket_s = bucket_s
        self._audience_expiry = audience_expiry_s
        self._data: dict[int, PartitionData] = defaultdict(PartitionData)
        self.channel_weights: dict[str, float] | None = None
        self.value_weights: dict[str, float] | None = None

    def _parts(self, partitions: Iterable[int] | None) -> list[int]:
        return list(range(self.partitions)) if partitions is None else sorted(partitions)

    # --- writer -----------------------------------------------------------------------------------
    def claim(self, partition: int) -> str:
        meta = self._data[partition].meta
        meta.epoch = str(int(meta.epoch or 0) + 1)
        return meta.epoch

    def read(
        self, partition: int, user_ids: Sequence[str], event_ids: Sequence[str] = ()
    ) -> tuple[PartitionMeta, dict[str, bytes | None], KnownIds]:
        data = self._data[partition]
        known: dict[str, list[tuple[str, float]]] = {}
        # As read_batch.lua: an id is looked up in the id set of every topic with an applied offset.
        for topic in data.meta.offsets:
            stored = data.ids.get(topic, {})
            for event_id in event_ids:
                at = stored.get(event_id)
                if at is not None:
                    known.setdefault(event_id, []).append((topic, at))
        # A copy: the caller plans from it while the store moves on.
        return copy.deepcopy(data.meta), {u: data.users.get(u) for u in user_ids}, known

    def apply(self, plan: BatchPlan, epoch: str) -> None:
        p = plan.partition
        data = self._data[p]
        meta = data.meta
        # 1. May this writer apply this batch? (reads only, as in apply_batch.lua)
        if meta.epoch != epoch:
            raise FencedError.superseded(p, epoch, meta.epoch or "")
        for topic, tp in sorted(plan.progress.items()):
            stored = meta.offsets.get(topic, -1)
            if stored != tp.expected_offset:
                raise OffsetConflict.moved(p, topic, stored)
        # 2. Write: nothing below can fail (module docstring); the offsets last.
        data.users.update(plan.user_states)
        for (bucket, name), amount in plan.increments.by_key.items():
            if amount:
                target = data.totals if bucket is None else data.buckets.setdefault(bucket, {})
                target[name] = target.get(name, 0) + amount
        for name, amount in plan.journey_paths.items():
            if amount:
                data.paths[name] = data.paths.get(name, 0) + amount
        for key, users in plan.signals.reach.items():
            data.reach.setdefault(key, set()).update(users)
        for engaged_key, users in plan.signals.engaged_reach.items():
            data.engaged_reach.setdefault(engaged_key, set()).update(users)
        self._apply_audiences(data, plan)
        for topic in sorted(plan.new_ids.keys() | plan.forget_ids_before.keys()):
            ids = data.ids.setdefault(topic, {})
            ids.update(plan.new_ids.get(topic, ()))  # ZADD: a re-added id takes the new time
            forget = plan.forget_ids_before.get(topic)
            if forget is not None:
                for event_id in [i for i, at in ids.items() if at < forget]:
                    del ids[event_id]
        for topic, tp in plan.progress.items():
            if tp.watermark != float("-inf"):
                meta.watermarks[topic] = tp.watermark
            if tp.latest:
                meta.latest[topic] = sorted(tp.latest)
            meta.offsets[topic] = tp.new_offset

    def _apply_audiences(self, data: PartitionData, plan: BatchPlan) -> None:
        """apply_batch.lua's audience writes, step by step (ZADD GT keeps the later score)."""
        aud, last = data.audiences, data.last_checkout
        sig = plan.signals

        def add_gt(name: str, user: str, at: float) -> None:
            members = aud[name]
            if at > members.get(user, float("-inf")):
                members[user] = at

        for user, at in sig.checkouts.items():
            if user not in last or at > last[user]:
                last[user] = at
            add_gt("buyers", user, at)
            aud["engaged"].pop(user, None)
        for user, at in sig.carts.items():
            if user not in last or at > last[user]:
                add_gt("cart_abandoners", user, at)
        for user, at in sig.engagements.items():
            if user not in last:
                add_gt("engaged", user, at)
        # A cart at or before the user's last checkout was bought: not abandoned any more.
        for user in sig.checkouts:
            cart = aud["cart_abandoners"].get(user)
            if cart is not None and cart <= last[user]:
                del aud["cart_abandoners"][user]
        cut = audience_cutoffs(plan, self._audience_expiry)
        if cut is not None:
            for name in AUDIENCES:
                members = aud[name]
                for user in [u for u, at in members.items() if at <= cut[name]]:
                    del members[user]

    # --- figures (FigureSource) -------------------------------------------------------------------
    def totals(self, partitions: Iterable[int] | None = None) -> dict[str, int]:
        return sum_hashes(self._data[p].totals for p in self._parts(partitions))

    def window(self, start: float, end: float, partitions: Iterable[int] | None = None) -> dict[str, int]:
        buckets = window_buckets(start, end, self.bucket_s)
        return sum_hashes(self._data[p].buckets.get(b, {}) for p in self._parts(partitions) for b in buckets)

    def metas(self, partitions: Iterable[int] | None = None) -> dict[int, PartitionMeta]:
        return {p: copy.deepcopy(self._data[p].meta) for p in self._parts(partitions)}

    def watermark(self, partitions: Iterable[int] | None = None) -> float | None:
        return latest_watermark(self.metas(partitions))

    def journey_paths(self) -> dict[str, int]:
        return sum_hashes(self._data[p].paths for p in self._parts(None))

    def audience(
        self, audience: str, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]:
        if audience not in AUDIENCES:
            raise KeyError(audience)
        return most_recent(
            (m for p in self._parts(partitions) for m in self._data[p].audiences[audience].items()), limit
        )

    def audience_sizes(self) -> dict[str, int]:
        return {a: sum(len(self._data[p].audiences[a]) for p in self._parts(None)) for a in AUDIENCES}

    def reach(
        self,
        partitions: Iterable[int],
        buckets: list[int],
        campaign_channels: Mapping[str, Iterable[str]],
        label: Mapping[str, str] | None = None,
    ) -> Reach:
        """Exact distinct users (sets) of the queries both backends count (base.reach_queries)."""
        queries = reach_queries(partitions, buckets, campaign_channels, label)
        return Reach.counted(queries, (len(self._union(q)) for q in queries))

    def _union(self, query: ReachQuery) -> set[str]:
        data = self._data[query.partition]
        users: set[str] = set()
        for key in query.reach_sets:
            users |= data.reach.get(key, set())
        for engaged_key in query.engaged_sets:
            users |= data.engaged_reach.get(engaged_key, set())
        return users


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _on_state(
    method: Callable[Concatenate[MemoryState, _P], _R],
) -> Callable[Concatenate[MemoryStore, _P], Coroutine[Any, Any, _R]]:
    """A MemoryStore coroutine method that runs MemoryState's `method` (same signature), looked up
    on the store's state at each call (as `self.state.<method>(...)`, so a patched one is used)."""
    name = method.__name__

    async def on_state(store: MemoryStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound: Callable[_P, _R] = getattr(store.state, name)
        return bound(*args, **kwargs)

    on_state.__name__ = on_state.__qualname__ = name
    on_state.__doc__ = method.__doc__
    return on_state


class MemoryStore:
    """MemoryState behind the asynchronous PartitionStateStore protocol."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state

    claim = _on_state(MemoryState.claim)
    read = _on_state(MemoryState.read)
    apply = _on_state(MemoryState.apply)
    totals = _on_state(MemoryState.totals)
    window = _on_state(MemoryState.window)
    metas = _on_state(MemoryState.metas)
    watermark = _on_state(MemoryState.watermark)
    journey_paths = _on_state(MemoryState.journey_paths)
    reach = _on_state(MemoryState.reach)

    async def save_channel_weights(
        self, weights: Mapping[str, float], value_weights: Mapping[str, float] | None = None
    ) -> None:
        self.state.channel_weights = dict(weights)
        self.state.value_weights = dict(value_weights or weights)

    async def close(self) -> None:
        return None
