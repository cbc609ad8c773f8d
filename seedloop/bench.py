"""`seedloop bench`: throughput, latency, memory and scale-out on the embedded broker and Redis.

Everything is measured in one run, against the stock Faust baseline (README.md, "Scaling"):

* **Drain rate** (`baseline_eps`, `baseline_eager_eps`, `pipeline_eps`, `scaleout_eps`): N simulated events are
  produced to the four action topics first; then a consumer (a fresh consumer group, a flushed
  Redis) drains them. The rate is the steady-state slope between 10 % and 90 % of the N events
  processed, sampled every 50 ms from Redis: for the pipeline, the applied offsets it stores with
  the figures in one Lua call; for the baseline, a counter its timer writes (nothing per event).
  Start-up and group join are therefore outside the window, for both alike. Baseline and
  pipeline runs alternate, `repeats` times; the medians are reported. `ratio` compares the
  pipeline with the stock agent, as specified; the worker also replaces one statement of Faust's
  delivery loop (stream_processors/faust_transport.py), so `baseline_eager_eps` is the same counting
  agent with that change too, and `ratio_same_delivery` = pipeline / it is what the pipeline's own
  per-event work costs on top of the Faust it runs.
* **Peers** (`quix_eps`, `plain_eps`, `pipeline_gaps`; seedloop/bench_peers): in the same
  alternation and on the same data, what a user would pick instead: a quixstreams app and a plain
  confluent-kafka loop doing a last-touch job (per-user last view, checkouts credited to its
  campaign, per-campaign sums in Redis). Every drain also reports events per CPU-second
  (`<name>_events_per_cpu_s`, and `..._with_redis` counting the Redis server's CPU too) over the
  same 10 %..90 % window. On by default; off with `--quick` or `--no-peers`.
* **Latency** (`latency_p50_ms`, `latency_p99_ms`): one worker; events are produced at half the
  median `pipeline_eps` for `latency_s` seconds with the Kafka message timestamp = produce time.
  A poller reads the partitions' applied offsets from Redis every 5 ms; an event is visible when
  the offset stored atomically with its figures reaches it (the Yahoo streaming benchmark's
  "window visible in Redis" measure, with a 5 ms resolution). Latency = visible - produce time.
  Known floor on the embedded broker: Tansu does not answer a waiting fetch early when data
  arrives, and Faust creates its aiokafka consumer with `fetch_max_wait_ms=1500` (hard-coded),
  so an idle-ish consumer sees new events up to 1.5 s late. A diagnostic run with the worker's
  consumer patched to 20 ms gave p50 160-175 ms, p99 315-500 ms at 300-1500 ev/s.
* **Producer** (`producer_eps`): events acknowledged by the broker per second, for the
  simulator's events (encode + `EventSink.produce_many` + delivery accounting; the events are
  generated before the clock starts); timed `repeats` times, median. `simulator_eps` is the generation alone, `simulate_produce_eps` the two
  together in one thread.
* **Memory** (`worker_rss_mb`, `redis_mb`, `redis_bytes_per_user`): the latency worker then
  processes views of distinct new users (up to `memory_users`, time-boxed); worker RSS and Redis
  `used_memory` are sampled along the way (`memory_curve`), so flatness is visible.
* **Scale-out** (`scaleout_factor`): two workers (each takes half the partitions) drain the same
  N events; factor = their drain rate / the single-worker median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from pydantic import SecretStr

from seedloop import runtime
from seedloop.bench_children import start_worker
from seedloop.bench_drain import DrainJob, applied_counter, run_baseline, run_pipeline
from seedloop.bench_latency import measure_latency
from seedloop.bench_memory import memory_phase
from seedloop.bench_peers import figures as peer_figures
from seedloop.bench_peers.runner import peer_interpreters, run_peer
from seedloop.bench_producer import produce_drain_data
from seedloop.bench_report import format_bench
from seedloop.embedded import EmbeddedStack
from seedloop.settings import REPO_SEEDS, Settings
from seedloop.topics import ensure_topics

__all__ = ["FULL", "QUICK", "BenchPlan", "format_bench", "main", "run_bench"]

log = logging.getLogger("seedloop.bench")
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchPlan:
    events: int
    repeats: int
    latency_s: float
    memory_users: int
    memory_s: float
    scaleout: bool
    partitions: int = 4
    drain_timeout_s: float = 240.0
    # Also drain with the peers a user would pick instead (seedloop.bench_peers): a quixstreams app
    # and a plain confluent-kafka loop doing a last-touch job, in the same alternation.
    peers: bool = True


FULL = BenchPlan(
    events=200_000, repeats=3, latency_s=20.0, memory_users=1_000_000, memory_s=150.0, scaleout=True
)
# --quick is the smoke run: no peers (two more drains, and quixstreams lives in its own venv).
QUICK = BenchPlan(
    events=30_000, repeats=1, latency_s=8.0, memory_users=20_000, memory_s=15.0, scaleout=True, peers=False
)

METHOD = {
    "throughput": "drain rate: N pre-produced simulator events, fresh group and flushed Redis; "
    "slope between 10% and 90% processed (Redis-sampled every 50 ms); medians of alternating runs",
    "latency": "Kafka timestamp (produce time) to the applied offset, stored with the figures in "
    "the same Lua call, first seen by a 5 ms Redis poller; produced at half pipeline_eps after a "
    "warm-up at that rate that is not counted",
    "producer": "pre-generated simulator events: encode + produce + delivery accounting, until all acknowledged",
    "memory": "views of distinct new users after the latency phase; Redis used_memory and worker VmRSS",
}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True, slots=True)
class BenchRun:
    """What every phase of one bench run shares: the drains' services and data, the plan, progress."""

    job: DrainJob
    plan: BenchPlan
    say: Say


def _drain_round(
    bench: BenchRun, r: int, peer_pythons: dict[str, str], drains: dict[str, list[dict[str, Any]]]
) -> None:
    """Round `r` of the alternation: the stock agent, the eager-delivery agent, the worker, the peers."""
    job, n = bench.job, bench.plan.repeats
    prefix = job.settings.topic_prefix

    def keep(name: str, out: dict[str, Any]) -> dict[str, Any]:
        drains.setdefault(name, []).append(out)
        return out

    bench.say(f"drain {r + 1}/{n}: stock Faust counting agent")
    job.client.flushdb()
    base = keep("baseline", run_baseline(job, f"{prefix}-{r}"))
    bench.say(f"drain {r + 1}/{n}: the counting agent with the worker's eager delivery")
    job.client.flushdb()
    eager = keep("baseline_eager", run_baseline(job, f"{prefix}-e{r}", eager_delivery=True))
    bench.say(f"drain {r + 1}/{n}: pipeline worker")
    pipe = keep("pipeline", run_pipeline(job, f"{prefix}-{r}"))
    bench.say(
        f"  baseline {base['eps']:,.0f} ev/s, eager-delivery baseline {eager['eps']:,.0f} ev/s, "
        f"pipeline {pipe['eps']:,.0f} ev/s"
    )
    for kind, python in peer_pythons.items():
        bench.say(f"drain {r + 1}/{n}: {peer_figures.IMPLEMENTATIONS[kind]}")
        peer = keep(kind, run_peer(kind, job, f"{prefix}-{r}", python))
        bench.say(f"  {kind} {peer['eps']:,.0f} ev/s")


def drain_figures(drains: dict[str, list[dict[str, Any]]], total: int) -> dict[str, Any]:
    """The drain rates' medians and ratios from every drain's figures, by implementation."""
    base_runs = [run["eps"] for run in drains.get("baseline", [])]
    eager_runs = [run["eps"] for run in drains.get("baseline_eager", [])]
    pipe_runs = [run["eps"] for run in drains.get("pipeline", [])]
    rss_drain = [x for run in drains.get("pipeline", []) for x in run["worker_rss_mb"] if x is not None]
    baseline_eps, eager_eps, pipeline_eps = _median(base_runs), _median(eager_runs), _median(pipe_runs)
    return {
        "baseline_eps": baseline_eps,
        "pipeline_eps": pipeline_eps,
        "ratio": pipeline_eps / baseline_eps if baseline_eps and pipeline_eps else None,
        "baseline_eager_eps": eager_eps,
        "ratio_same_delivery": pipeline_eps / eager_eps if eager_eps and pipeline_eps else None,
        "baseline_runs_eps": base_runs,
        "baseline_eager_runs_eps": eager_runs,
        "pipeline_runs_eps": pipe_runs,
        "drain_events": total,
        "drain_worker_rss_mb": _median(rss_drain),
    }


def throughput_phase(bench: BenchRun, with_peers: bool) -> dict[str, Any]:
    """The alternating drains (`repeats` rounds), then the two-worker scale-out drain."""
    peer_pythons, peers_skipped = peer_interpreters() if with_peers else ({}, {})
    for kind, why in peers_skipped.items():
        bench.say(f"not measuring {kind}: {why}")
    # Every drain's figures by implementation (CPU measures, the peers' runs).
    drains: dict[str, list[dict[str, Any]]] = {}
    for r in range(bench.plan.repeats):
        _drain_round(bench, r, peer_pythons, drains)
    result = drain_figures(drains, bench.job.total)
    peer_figures.collect(result, drains, peers_skipped if with_peers else None)
    pipeline_eps = result["pipeline_eps"]
    if bench.plan.scaleout:
        bench.say("scale-out: two workers drain the same events")
        out = run_pipeline(bench.job, f"{bench.job.settings.topic_prefix}-x2", workers=2)
        result["scaleout_eps"] = out["eps"]
        result["scaleout_factor"] = out["eps"] / pipeline_eps if pipeline_eps else None
    else:
        result["scaleout_eps"] = result["scaleout_factor"] = None
    return result


def _wait_warmed_up(
    settings: Settings,
    client: redis.Redis,
    sink_config: dict[str, Any],
    payloads: Sequence[tuple[str, bytes, bytes]],
    check_worker: Callable[[], None],
) -> None:
    """The first events go through before the clock starts (group join, claims)."""
    p = Producer(sink_config)
    for t, k, v in payloads:
        p.produce(t, v, k)
    p.flush(30)
    count = applied_counter(settings, client)
    deadline = time.monotonic() + 60
    while count() < len(payloads):
        check_worker()
        if time.monotonic() > deadline:
            raise RuntimeError("latency worker did not start")
        time.sleep(0.1)


def latency_and_memory_phase(
    bench: BenchRun, sim: Any, scenario: Any, pipeline_eps: float | None
) -> dict[str, Any]:
    """Latency, then memory: their own topics and namespace, one worker."""
    from schemas.codec import encode

    plan, client, settings = bench.plan, bench.job.client, bench.job.settings
    client.flushdb()
    lat_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}l"})
    ensure_topics(lat_settings)
    rate = max(50.0, (pipeline_eps or 1000.0) / 2)
    needed = int(rate * (plan.latency_s + 3) * 1.2) + 1000
    events: list[Any] = []
    while len(events) < needed:
        events.extend(sim.advance(sim.now + 600))
    payloads = [(lat_settings.topic(e.action), e.user_id.encode(), encode(e)) for e in events]
    config = runtime.event_sink(lat_settings, scenario).producer_config
    worker = start_worker(lat_settings, "bench-latency", "w1", bench.job.log_dir)
    try:
        _wait_warmed_up(lat_settings, client, config, payloads[:200], worker.check)
        bench.say(f"latency: {rate:,.0f} ev/s for {plan.latency_s:.0f}s")
        warmup = min(3.0, plan.latency_s / 4)
        result = measure_latency(
            lat_settings, client, config, iter(payloads[200:]), rate, plan.latency_s, warmup
        )
        template = json.loads(encode(next(e for e in reversed(events) if e.action == "view")))
        bench.say(f"memory: up to {plan.memory_users:,} distinct users in {plan.memory_s:.0f}s")
        result.update(
            memory_phase(lat_settings, client, worker, template, config, plan.memory_users, plan.memory_s)
        )
        return result
    finally:
        worker.stop()


def _bench_settings(stack: EmbeddedStack, plan: BenchPlan) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.bootstrap,
        redis_url=SecretStr(stack.redis_url),
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}",
        partitions=plan.partitions,
        seeds_dir=REPO_SEEDS,
        rebalance_timeout_s=3.0,
    )


def run_bench(
    json_path: Path | None,
    *,
    quick: bool = False,
    plan: BenchPlan | None = None,
    log_dir: Path | None = None,
    progress: Say | None = None,
    peers: bool | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark on a fresh embedded stack; write `json_path` if given.
    `peers`: drain with the peers too (None: as the plan says)."""
    plan = plan or (QUICK if quick else FULL)
    with_peers = plan.peers if peers is None else peers
    say = progress or (lambda msg: log.info(msg))
    t_start = time.monotonic()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "plan": {
            "events": plan.events,
            "repeats": plan.repeats,
            "latency_s": plan.latency_s,
            "memory_users": plan.memory_users,
            "partitions": plan.partitions,
        },
    }
    with EmbeddedStack(log_dir=log_dir) as stack:
        settings = _bench_settings(stack, plan)
        client = redis.Redis.from_url(settings.redis_url_value)
        ensure_topics(settings)
        say(f"producing {plan.events} simulated events")
        prod = produce_drain_data(settings, plan.events, plan.repeats)
        sim, scenario = prod.pop("sim"), prod.pop("scenario")
        result.update(prod)
        # The count we produced and the broker acknowledged, not the high watermarks: Tansu reports
        # a partition's high watermark as its last batch's base offset + 1 (consumed offsets are dense).
        job = DrainJob(settings, client, int(prod["acknowledged"]), stack.log_dir, plan.drain_timeout_s)
        bench = BenchRun(job, plan, say)
        result.update(throughput_phase(bench, with_peers))
        result.update(latency_and_memory_phase(bench, sim, scenario, result["pipeline_eps"]))
        client.close()
    result["bench_seconds"] = time.monotonic() - t_start
    result["method"] = METHOD
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m seedloop.bench` (`seedloop bench` is the same, from seedloop.cli)."""
    ap = argparse.ArgumentParser(prog="python -m seedloop.bench")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also drain with a quixstreams app and a plain confluent-kafka loop (default: on, off with --quick)",
    )
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        print(format_bench(run_bench(args.json, quick=args.quick, progress=print, peers=args.peers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
