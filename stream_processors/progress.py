"""A partition's stored progress, read before and written with each batch: owner epoch, per topic
the last applied offset and the event-time watermark, and the rule that moves the watermark.
Pure: the planner (processor.py) decides with it, the stores (store/) persist it."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The event-time watermark of a topic in a partition, the clock that lateness, pruning and the
# optimizer's "now" read, is the WATERMARK_QUORUM-th latest event time accepted there: it takes
# that many accepted events dated at or after T to move it to T. A client with a wrong clock
# (or a forger) that gets a few events past the future bound therefore cannot make ordinary
# traffic late: with fewer than WATERMARK_QUORUM such events the watermark stays where honest
# traffic put it, and each jump is counted (`outliers` below, the seedloop_event_time_outliers
# metric). The price is a lag: the watermark trails the latest event
# by the time its topic takes to produce WATERMARK_QUORUM events (seconds for views, about an hour
# for a partition's checkouts in the simulation), so lateness is that much more lenient.
# Until a topic has had WATERMARK_QUORUM events in a partition, it has no watermark: none of its
# events is late. The K latest times are stored with the partition's meta and offsets (same atomic
# apply), so a replayed batch meets exactly the watermark its first attempt met.
WATERMARK_QUORUM = 8


def observe_event_time(latest: list[float], at: float, quorum: int = WATERMARK_QUORUM) -> None:
    """Keep `latest` the `quorum` largest event times accepted so far, ascending."""
    if len(latest) < quorum:
        bisect.insort(latest, at)
    elif at > latest[0]:
        bisect.insort(latest, at)
        del latest[0]


def robust_watermark(latest: Sequence[float], floor: float, quorum: int = WATERMARK_QUORUM) -> float:
    """The watermark given the largest accepted event times (ascending) and the stored watermark.

    Monotone: a `quorum`-th largest of a growing set never decreases, and `floor` (the stored
    watermark) keeps it so across a change of `quorum` or state written by an older version."""
    if len(latest) >= quorum:
        kth = latest[-quorum]
        return kth if kth > floor else floor
    return floor


@dataclass(slots=True)
class PartitionMeta:
    """What Redis holds for a partition: owner epoch, and per topic the last applied offset, the
    watermark and the latest accepted event times it is computed from."""

    epoch: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)
    latest: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> PartitionMeta:
        meta = cls()
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            val = v.decode() if isinstance(v, bytes) else v
            if key == "epoch":
                meta.epoch = val
            elif key.startswith("off:"):
                meta.offsets[key[4:]] = int(val)
            elif key.startswith("wm:"):
                meta.watermarks[key[3:]] = float(val)
            elif key.startswith("top:"):
                meta.latest[key[4:]] = sorted(float(t) for t in val.split(",") if t)
        return meta


# event_id -> [(topic, event time)] of the applied events with that id the partition remembers.
KnownIds = Mapping[str, Sequence[tuple[str, float]]]


@dataclass(slots=True)
class TopicProgress:
    expected_offset: int  # what Redis held when we read it (-1: nothing applied yet)
    new_offset: int
    watermark: float  # -inf: none yet (fewer than WATERMARK_QUORUM events accepted)
    # The largest accepted event times of the topic in the partition, ascending (WATERMARK_QUORUM).
    latest: list[float] = field(default_factory=list)
