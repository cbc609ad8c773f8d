"""`seedloop soak`: a sustained rate for a long time, watching memory, lag and completeness.

Starts the embedded broker and Redis, N workers, and the simulator at a fixed rate for the given
duration (open loop: the point is the pipeline, not the bids). Every `--sample` seconds it
records worker RSS, Redis used memory and how far Redis is behind the broker; at the end it checks
that every acknowledged event was applied (processed + dead letters == produced) and prints the
samples, the first-to-last memory growth and the worst lag.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from producers.runner import RunLimits, run_simulation
from seedloop import runtime
from seedloop.bench_children import rss_mb
from seedloop.demo import WorkerPool
from seedloop.embedded import EmbeddedStack
from seedloop.settings import Settings
from seedloop.topics import ACTIONS, caught_up, end_offsets, ensure_topics
from stream_processors.figures import events_processed
from stream_processors.redis_connect import sync_client
from stream_processors.store.redis_lua import FigureReader, Keys

log = logging.getLogger("seedloop.soak")


def _rss_mb(pid: int) -> float:
    rss = rss_mb(pid)
    return float("nan") if rss is None else rss


def _lag(settings: Settings, reader: FigureReader) -> int:
    ends = end_offsets(settings, [settings.topic(a) for a in ACTIONS])
    metas = reader.metas()
    return sum(max(0, end - 1 - metas[p].offsets.get(t, -1)) for (t, p), end in ends.items() if end)


def sample_interval(duration_s: float, sample_s: float) -> float:
    """Seconds between samples during the load: `--sample`, but at least four samples in a run
    shorter than four of them (a 60 s soak with the default 30 s had one sample past its warm-up,
    so its first and last were the same)."""
    return max(1.0, min(sample_s, duration_s / 4))


def steady_samples(
    samples: list[dict[str, Any]], load_start_s: float, duration_s: float
) -> list[dict[str, Any]]:
    """The samples past the warm-up (a quarter of the load, at most 60 s: the workers' caches and
    Redis fill first), or all of them when fewer than two are past it, so first and last differ."""
    warmup = min(60.0, duration_s / 4)
    steady = [s for s in samples if s["t_s"] >= load_start_s + warmup]
    return steady if len(steady) >= 2 else samples


def run_soak(
    settings: Settings, duration_s: float, workers: int, sample_s: float, out: Path | None
) -> dict[str, Any]:
    with EmbeddedStack() as stack:
        settings = settings.with_services(stack.bootstrap, stack.redis_url)
        ensure_topics(settings)
        pool = WorkerPool(settings, workers, Path(stack.log_dir))
        pool.start_all()
        try:
            result = _soak(settings, pool, duration_s, sample_s)
        finally:
            pool.stop()  # on errors too: the workers are not the stack's, it would not stop them
        if out:
            out.write_text(json.dumps(result, indent=2))
        return result


def _soak(settings: Settings, pool: WorkerPool, duration_s: float, sample_s: float) -> dict[str, Any]:
    """The load, sampled, then the catch-up and the completeness check, with `pool`'s workers."""
    scenario = runtime.scenario_of(settings)
    client = sync_client(settings.redis_url_value, settings.redis_mode)
    reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    sim = runtime.simulator_of(settings, scenario)
    sink = runtime.event_sink(settings, scenario)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    started = time.monotonic()

    lock = threading.Lock()

    def take(phase: str) -> None:
        with lock:  # the sampler thread and the main thread both sample
            samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "phase": phase,
                    "produced": sink.totals.events,
                    "worker_rss_mb": [round(_rss_mb(p.pid), 1) for p in pool.procs.values()],
                    "redis_mb": round(int(client.info("memory")["used_memory"]) / 2**20, 1),
                    "lag": _lag(settings, reader),
                }
            )
            log.info("soak sample", extra=samples[-1])

    interval = sample_interval(duration_s, sample_s)

    def sampler() -> None:
        while not stop.wait(interval):
            take("load")

    time.sleep(8)  # let the workers join the group before the load starts
    load_start = round(time.monotonic() - started, 1)
    # Samples span the run: one as the load starts, every `interval` during it, one as it ends
    # and one once the workers caught up (first and last then compare the run's two ends).
    take("start")
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    limits = RunLimits(duration_s=duration_s, rate=settings.rate, speed=settings.sim_speed)
    run_simulation(sim, sink, None, limits)
    produced_s = time.monotonic() - started
    stop.set()
    thread.join()
    take("end of load")
    deadline = time.monotonic() + 120
    while not caught_up(settings, reader) and time.monotonic() < deadline:
        time.sleep(1)
    take("caught up")
    processed = events_processed(reader.totals())
    dead = sum(end_offsets(settings, [settings.topic("dead_letters")]).values())
    return {
        "duration_s": duration_s,
        "rate_target": settings.rate,
        "produced": sink.totals.events,
        "produce_eps": round(sink.totals.events / produced_s, 1),
        "processed": processed,
        "dead_letters": dead,
        "lost": sink.totals.events - processed - dead,
        **_memory_and_lag(steady_samples(samples, load_start, duration_s), samples),
        "worker_restarts": pool.restarts,
        "samples": samples,
    }


def _memory_and_lag(steady: list[dict[str, Any]], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Worker RSS and Redis memory at the steady run's two ends, and the worst lag of all samples."""
    return {
        "worker_rss_mb_first_last": [steady[0]["worker_rss_mb"], steady[-1]["worker_rss_mb"]]
        if steady
        else None,
        "redis_mb_first_last": [steady[0]["redis_mb"], steady[-1]["redis_mb"]] if steady else None,
        "max_lag": max((s["lag"] for s in samples), default=None),
    }
