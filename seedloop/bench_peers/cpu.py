"""CPU seconds over a drain's measured window, for the consumer process and its Redis server.

`drain_rate` takes its slope between the first samples at >= 10 % and >= 90 % of the events;
`CpuWindow.wrap` wraps the same `count()` and reads the CPU clocks at exactly those samples, so
events per CPU-second cover the same events and the same interval as events/s (start-up, imports
and group join are outside both).

A cross-check (`..._drain` figures): from the first sample that saw an event to the end. A
consumer that prefetches ahead in its own threads (librdkafka queues up to 100k messages a
partition) spends part of the window's fetch and decompression CPU before the 10 % mark; over
the whole drain, every fetched event's CPU is inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float | None:
    """user + system CPU seconds of a live process (all its threads), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the numeric fields follow its closing ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def redis_cpu_s(client: redis.Redis) -> float:
    """The Redis server's own CPU seconds (main process, all threads) as it reports them."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@dataclass
class CpuWindow:
    """Wraps a drain's `count()`; records (events, consumer CPU, Redis CPU) at the first sample at
    or above 10 % and 90 % of `total` (drain_rate's window), and at the first and last samples."""

    total: int
    pids: Sequence[int]
    client: redis.Redis
    marks: dict[str, tuple[int, float, float]] = field(default_factory=dict)

    def _read(self, n: int) -> tuple[int, float, float]:
        own = [process_cpu_s(p) for p in self.pids]
        return n, sum(c for c in own if c is not None), redis_cpu_s(self.client)

    def wrap(self, count: Callable[[], int]) -> Callable[[], int]:
        def counted() -> int:
            n = count()
            if "first" not in self.marks:
                self.marks["first"] = self._read(n)
            if "start" not in self.marks and n > 0:
                self.marks["start"] = self._read(n)
            if "lo" not in self.marks and n >= 0.1 * self.total:
                self.marks["lo"] = self._read(n)
            if "hi" not in self.marks and n >= 0.9 * self.total:
                self.marks["hi"] = self._read(n)
            if n >= self.total:
                self.marks["last"] = self._read(n)
            return n

        return counted

    def figures(self) -> dict[str, Any]:
        """events per CPU-second of the consumer, and of the consumer plus the Redis server."""
        out = self._whole_drain()
        lo, hi = self.marks.get("lo"), self.marks.get("hi")
        if lo is None or hi is None:
            return {"events_per_cpu_s": None, "events_per_cpu_s_with_redis": None, **out}
        if hi[0] <= lo[0] or hi[1] <= lo[1]:
            # A drain shorter than one sample (tiny smoke loads): the whole drain instead.
            lo, hi = self.marks["first"], self.marks.get("last", hi)
        events = hi[0] - lo[0]
        own, red = hi[1] - lo[1], hi[2] - lo[2]
        return {
            "events_per_cpu_s": events / own if own > 0 else None,
            "events_per_cpu_s_with_redis": events / (own + red) if own + red > 0 else None,
            "consumer_cpu_s": own,
            "redis_cpu_s": red,
            "cpu_window_events": events,
            **out,
        }

    def _whole_drain(self) -> dict[str, Any]:
        start, last = self.marks.get("start"), self.marks.get("last")
        if start is None or last is None or last[0] <= start[0] or last[1] <= start[1]:
            return {"events_per_cpu_s_drain": None, "events_per_cpu_s_drain_with_redis": None}
        events, own, red = last[0] - start[0], last[1] - start[1], last[2] - start[2]
        return {
            "events_per_cpu_s_drain": events / own,
            "events_per_cpu_s_drain_with_redis": events / (own + red),
        }
