"""The drain phases: a consumer (the pipeline worker, the stock Faust counting agent, a peer) on a
fresh group and a flushed Redis drains the N events produced beforehand; its rate is the slope
between 10 % and 90 % processed, sampled from Redis every `SAMPLE_S`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from seedloop.bench_children import Child, child_env, rss_mb, service_args, start_worker
from seedloop.bench_peers.cpu import CpuWindow
from seedloop.settings import Settings
from seedloop.topics import ACTIONS

SAMPLE_S = 0.05


def applied_counter(settings: Settings, client: redis.Redis) -> Callable[[], int]:
    """Messages the pipeline has applied (offsets are dense: applied offset + 1 per topic-partition)."""
    metas = [f"{settings.topic_prefix}:{{p{p}}}:meta" for p in range(settings.partitions)]
    fields = [f"off:{settings.topic(a)}" for a in ACTIONS]

    def count() -> int:
        with client.pipeline(transaction=False) as pipe:
            for key in metas:
                pipe.hmget(key, fields)
            rows = pipe.execute()
        return sum(int(v) + 1 for row in rows for v in row if v is not None)

    return count


def drain_rate(
    count: Callable[[], int], total: int, children: Sequence[Child], timeout: float
) -> dict[str, Any]:
    """Sample `count()` until it reaches `total`; the rate between 10 % and 90 % of `total`."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        n = count()
        samples.append((now, n))
        if n >= total:
            break
        if now > deadline:
            raise RuntimeError(f"drain timed out at {n}/{total} after {timeout:.0f}s")
        for child in children:
            child.check()
        time.sleep(SAMPLE_S)
    lo, hi = 0.1 * total, 0.9 * total
    t_lo = next(t for t, n in samples if n >= lo)
    n_lo = next(n for t, n in samples if n >= lo)
    t_hi, n_hi = next((t, n) for t, n in samples if n >= hi)
    first = next(t for t, n in samples if n > 0)
    # A drain shorter than the sampling interval (tiny smoke loads): whole drain, one sample's slack.
    eps = (n_hi - n_lo) / (t_hi - t_lo) if t_hi > t_lo else total / (samples[-1][0] - first + SAMPLE_S)
    return {"eps": eps, "drain_s": samples[-1][0] - first, "events": total}


def drain_measured(
    count: Callable[[], int], total: int, children: Sequence[Child], client: redis.Redis, timeout: float
) -> dict[str, Any]:
    """`drain_rate` of `children`, with their events per CPU-second over the same window."""
    cpu = CpuWindow(total, [c.proc.pid for c in children], client)
    out = drain_rate(cpu.wrap(count), total, children, timeout)
    return {**out, **cpu.figures()}


def counter_key_reader(client: redis.Redis, key: str) -> Callable[[], int]:
    """The processed count a consumer other than the pipeline writes to `key` (a timer's, not per event)."""
    return lambda: int(client.get(key) or 0)  # type: ignore[arg-type]


def start_baseline(
    settings: Settings,
    group: str,
    counter_key: str,
    log_dir: Path,
    fetch_max_wait_ms: int | None = None,
    eager_delivery: bool = False,
) -> Child:
    argv = [
        sys.executable,
        "-m",
        "seedloop.bench_baseline",
        *service_args(settings, group, counter_key),
        "--partitions",
        str(settings.partitions),
        "--rebalance-timeout",
        str(settings.rebalance_timeout_s),
    ]
    if fetch_max_wait_ms is not None:
        argv += ["--fetch-max-wait-ms", str(fetch_max_wait_ms)]
    if eager_delivery:
        argv.append("--eager-delivery")
    return Child(argv, child_env(settings), log_dir / f"{group}.log")


@dataclass(frozen=True, slots=True)
class DrainJob:
    """What every drain of one bench run shares: the services and topics, how many events there
    are to drain, where children log, and how long a drain may take."""

    settings: Settings
    client: redis.Redis
    total: int
    log_dir: Path
    timeout: float


def run_baseline(job: DrainJob, tag: str, eager_delivery: bool = False) -> dict[str, Any]:
    """One drain by the stock Faust counting agent (with the worker's fetch wait; optionally its
    eager delivery), on a fresh consumer group."""
    key = f"bench:baseline:{tag}"
    child = start_baseline(
        job.settings,
        f"bench-baseline-{tag}",
        key,
        job.log_dir,
        fetch_max_wait_ms=job.settings.fetch_max_wait_ms,
        eager_delivery=eager_delivery,
    )
    try:
        return drain_measured(
            counter_key_reader(job.client, key), job.total, [child], job.client, job.timeout
        )
    finally:
        child.stop()


def run_pipeline(job: DrainJob, tag: str, workers: int = 1) -> dict[str, Any]:
    """One drain by `workers` pipeline workers on a flushed Redis; with their RSS at the end."""
    job.client.flushdb()
    group = f"bench-pipeline-{tag}"
    children = [start_worker(job.settings, group, f"w{i + 1}", job.log_dir) for i in range(workers)]
    try:
        counter = applied_counter(job.settings, job.client)
        out = drain_measured(counter, job.total, children, job.client, job.timeout)
        out["worker_rss_mb"] = [rss_mb(c.proc.pid) for c in children]
        return out
    finally:
        for c in children:
            c.stop()
