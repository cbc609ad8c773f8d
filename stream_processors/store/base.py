"""The partition state store: what the worker, the HTTP figures, monitoring, the optimizer and the
evaluation need from it, whatever holds it.

Two backends implement it with the same semantics (store/redis_lua.py: Redis plus two Lua
scripts; store/memory.py: dictionaries, for `seedloop evaluate` and for tests):

* `claim(p)` bumps partition p's epoch and returns it; every write carrying an older epoch is
  refused with `FencedError` (a zombie worker cannot write stale figures).
* `read(p, users, event_ids)` returns what planning a batch needs (processor.plan_batch): the
  partition's meta, the users' stored states, and which of the ids it remembers applying.
* `apply(plan, epoch)` applies a planned batch all or nothing: figures, user states, journey
  paths, reach, audiences, applied event ids and, last, the offsets that mark it applied. It is
  refused whole (`OffsetConflict`) when a stored offset is not the one the plan was made from, so
  a batch replayed after a crash re-reads, re-plans and skips what was applied.

Readers depend on the narrow read-only protocols: `FigureSource` (blocking: report, optimizer,
CLI) and `AsyncFigureSource` (the worker's event loop: monitoring, HTTP).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from stream_processors.processor import BatchPlan
from stream_processors.progress import KnownIds, PartitionMeta

AUDIENCES = ("cart_abandoners", "engaged", "buyers")


class FencedError(RuntimeError):
    """A newer owner claimed the partition: this worker must stop writing (it is a zombie)."""

    def __init__(self, message: str, current_epoch: str) -> None:
        super().__init__(message)
        self.current_epoch = current_epoch

    @classmethod
    def superseded(cls, partition: int, epoch: str, current_epoch: str) -> FencedError:
        """A write with `epoch` refused: the partition was claimed since (both backends' message)."""
        return cls(f"partition {partition}: epoch {epoch} was superseded by {current_epoch!r}", current_epoch)


class OffsetConflict(RuntimeError):
    """The store moved since we read it; the caller re-reads and re-plans."""

    @classmethod
    def moved(cls, partition: int, topic: str, stored: int | str) -> OffsetConflict:
        """The stored offset of `topic` is `stored`, not the one the plan was made from."""
        return cls(f"partition {partition}: {topic} offset is now {stored}")


@dataclass(frozen=True, slots=True)
class AudienceExpiry:
    cart_abandoners_s: float = 7 * 86_400
    engaged_s: float = 30 * 86_400
    buyers_s: float = 180 * 86_400

    def of(self, audience: str) -> float:
        return float(getattr(self, f"{audience}_s"))

    def as_mapping(self) -> dict[str, float]:
        return {audience: self.of(audience) for audience in AUDIENCES}


def audience_cutoffs(plan: BatchPlan, expiry: Mapping[str, float] | None) -> dict[str, float] | None:
    """Event times at or below which each audience's members are dropped after this batch: the
    batch's latest watermark minus the audience's expiry (None: nothing expires yet)."""
    watermark = max((tp.watermark for tp in plan.progress.values()), default=None)
    if expiry is None or watermark is None or watermark <= 0:
        return None
    return {a: watermark - expiry[a] for a in AUDIENCES}


@dataclass(slots=True)
class Reach:
    """Reach of one window, summed over the partitions read (a user lives in one partition, so
    the partitions' user sets are disjoint; see monitoring.py)."""

    campaign: dict[str, int] = field(default_factory=dict)
    channel: dict[tuple[str, str], int] = field(default_factory=dict)
    engaged: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, group: str, channel: str | None, n: int) -> None:
        if what == "campaign":
            self.campaign[group] = self.campaign.get(group, 0) + n
        elif what == "engaged":
            self.engaged[group] = self.engaged.get(group, 0) + n
        else:
            assert channel is not None
            self.channel[(group, channel)] = self.channel.get((group, channel), 0) + n

    @classmethod
    def counted(cls, queries: Iterable[ReachQuery], counts: Iterable[int]) -> Reach:
        """The reach of `reach_queries`, given each query's count of distinct users."""
        out = cls()
        for query, n in zip(queries, counts, strict=True):
            out.add(query.what, query.label, query.channel, int(n))
        return out


@dataclass(frozen=True, slots=True)
class ReachQuery:
    """One distinct-user count that `reach` sums: the size of the union of one partition's reach
    sets, each (bucket, campaign, channel), and engaged sets, each (bucket, campaign). The memory
    backend unions sets; Redis runs PFCOUNT over the matching HyperLogLogs."""

    what: str  # "campaign", "channel" or "engaged" (Reach.add)
    label: str
    channel: str | None
    partition: int
    reach_sets: tuple[tuple[int, str, str], ...] = ()
    engaged_sets: tuple[tuple[int, str], ...] = ()


def reach_groups(
    campaign_channels: Mapping[str, Iterable[str]], label: Mapping[str, str] | None
) -> dict[str, list[str]]:
    """label (a campaign, or `other` for several) -> its campaigns."""
    groups: dict[str, list[str]] = {}
    for campaign in campaign_channels:
        groups.setdefault((label or {}).get(campaign, campaign), []).append(campaign)
    return groups


def reach_queries(
    partitions: Iterable[int],
    buckets: list[int],
    campaign_channels: Mapping[str, Iterable[str]],
    label: Mapping[str, str] | None,
) -> list[ReachQuery]:
    """What `reach` counts, per partition and label: its users on any of its channels, on each
    channel, and with an engaged view, over `buckets` (nothing without buckets)."""
    if not buckets:
        return []
    queries: list[ReachQuery] = []
    groups = sorted(reach_groups(campaign_channels, label).items())
    for p in sorted(partitions):
        for name, members in groups:
            by_channel: dict[str, list[tuple[int, str, str]]] = {}
            for campaign in members:
                for channel in campaign_channels[campaign]:
                    by_channel.setdefault(channel, []).extend((b, campaign, channel) for b in buckets)
            if not by_channel:
                continue
            every = tuple(s for sets in by_channel.values() for s in sets)
            queries.append(ReachQuery("campaign", name, None, p, reach_sets=every))
            for channel, sets in sorted(by_channel.items()):
                queries.append(ReachQuery("channel", name, channel, p, reach_sets=tuple(sets)))
            engaged = tuple((b, c) for c in members for b in buckets)
            queries.append(ReachQuery("engaged", name, None, p, engaged_sets=engaged))
    return queries


def most_recent(members: Iterable[tuple[str, float]], limit: int) -> list[tuple[str, float]]:
    """An audience's members across partitions, most recent first (ties in the order given)."""
    return sorted(members, key=lambda ms: -ms[1])[:limit]


def window_buckets(start: float, end: float, bucket_s: int) -> list[int]:
    """Starts of the event-time buckets in [start, end): what a window of figures or reach sums."""
    first = -(-int(start) // bucket_s) * bucket_s
    return list(range(first, int(end), bucket_s))


def window_bounds(now: float, minutes: int) -> tuple[float, float]:
    """The window of `minutes` ending at the watermark `now` (its bucket included)."""
    return now - minutes * 60 + 1, now + 1


def sum_hashes(hashes: Iterable[Mapping[bytes, bytes]] | Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in hashes:
        for k, v in h.items():
            key = k.decode() if isinstance(k, bytes) else k
            out[key] = out.get(key, 0) + int(v)
    return out


def latest_watermark(metas: Mapping[int, PartitionMeta]) -> float | None:
    """The latest event time applied anywhere: 'now' on the event-time clock."""
    marks = [w for meta in metas.values() for w in meta.watermarks.values()]
    return max(marks) if marks else None


class FigureSource(Protocol):
    """Blocking read-only figures (report, optimizer, CLI). `partitions=None`: all of them."""

    @property
    def bucket_s(self) -> int: ...

    @property
    def partitions(self) -> int: ...

    def totals(self, partitions: Iterable[int] | None = None) -> dict[str, int]: ...

    def window(self, start: float, end: float, partitions: Iterable[int] | None = None) -> dict[str, int]: ...

    def metas(self, partitions: Iterable[int] | None = None) -> dict[int, PartitionMeta]: ...

    def watermark(self) -> float | None: ...

    def journey_paths(self) -> dict[str, int]: ...

    def audience(
        self, audience: str, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]: ...

    def audience_sizes(self) -> dict[str, int]: ...


class AsyncFigureSource(Protocol):
    """The same figures, and reach, for an event loop (monitoring, the worker's HTTP)."""

    async def totals(self, partitions: Iterable[int] | None = None) -> dict[str, int]: ...

    async def window(
        self, start: float, end: float, partitions: Iterable[int] | None = None
    ) -> dict[str, int]: ...

    async def metas(self, partitions: Iterable[int] | None = None) -> dict[int, PartitionMeta]: ...

    async def watermark(self, partitions: Iterable[int] | None = None) -> float | None: ...

    async def journey_paths(self) -> dict[str, int]: ...

    async def reach(
        self,
        partitions: Iterable[int],
        buckets: list[int],
        campaign_channels: Mapping[str, Iterable[str]],
        label: Mapping[str, str] | None = None,
    ) -> Reach:
        """Per label: the distinct users of each partition over `buckets`, summed over partitions."""
        ...


class PartitionStateStore(AsyncFigureSource, Protocol):
    """What the worker writes through (module docstring)."""

    async def claim(self, partition: int) -> str: ...

    async def read(
        self, partition: int, user_ids: Sequence[str], event_ids: Sequence[str] = ()
    ) -> tuple[PartitionMeta, dict[str, bytes | None], KnownIds]: ...

    async def apply(self, plan: BatchPlan, epoch: str) -> None: ...

    async def save_channel_weights(
        self, weights: Mapping[str, float], value_weights: Mapping[str, float] | None = None
    ) -> None:
        """The Markov weights learned from the journey paths, for conversions and for value (for
        other readers)."""
        ...

    async def close(self) -> None: ...
