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
import bisect
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import KafkaError, Message, Producer
from pydantic import SecretStr

from seedloop import runtime
from seedloop.bench_peers import figures as peer_figures
from seedloop.bench_peers.cpu import CpuWindow
from seedloop.embedded import EmbeddedStack, free_port, stop_processes
from seedloop.settings import REPO_SEEDS, Settings
from seedloop.topics import ACTIONS, ensure_topics
from stream_processors.faust_transport import FAUST_FETCH_MAX_WAIT_MS, install_transport
from stream_processors.worker import consumer_app_options

log = logging.getLogger("seedloop.bench")
REPO = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.05


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


# --------------------------------------------------------------------------- helpers


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def redis_used_bytes(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return settings.child_env(SEEDLOOP_LOG_LEVEL="WARNING", **extra)


class Child:
    """A worker or baseline process; stopped (then killed) on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.log_path.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        stop_processes([self.proc])
        self._log.close()


def start_worker(settings: Settings, group: str, worker_id: str, log_dir: Path) -> Child:
    env = _child_env(
        settings,
        SEEDLOOP_CONSUMER_GROUP=group,
        SEEDLOOP_WORKER_ID=worker_id,
        SEEDLOOP_WEB_PORT=str(free_port()),
    )
    return Child([sys.executable, "-m", "seedloop", "worker"], env, log_dir / f"{group}-{worker_id}.log")


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
        "seedloop.bench",
        "baseline-agent",
        "--bootstrap",
        settings.bootstrap,
        "--redis",
        settings.redis_url_value,
        "--prefix",
        settings.topic_prefix,
        "--partitions",
        str(settings.partitions),
        "--group",
        group,
        "--counter-key",
        counter_key,
        "--rebalance-timeout",
        str(settings.rebalance_timeout_s),
    ]
    if fetch_max_wait_ms is not None:
        argv += ["--fetch-max-wait-ms", str(fetch_max_wait_ms)]
    if eager_delivery:
        argv.append("--eager-delivery")
    return Child(argv, _child_env(settings), log_dir / f"{group}.log")


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


# --------------------------------------------------------------------------- phases


def _produce_timed(settings: Settings, scenario: Any, events: list[Any]) -> tuple[float, int]:
    """Encode + produce + wait for every acknowledgement; (events/s, acknowledged)."""
    from schemas.codec import encode

    sink = runtime.event_sink(settings, scenario)
    sink.produce(events[0], encode(events[0]))  # connect and learn metadata outside the clock
    if sink.flush(30):
        raise RuntimeError("producer: the broker did not acknowledge the first event")
    t0 = time.perf_counter()
    chunk = 10_000
    for i in range(1, len(events), chunk):
        part = events[i : i + chunk]
        sink.produce_many(part, [encode(e) for e in part])
    remaining = sink.flush(120)
    produce_s = time.perf_counter() - t0
    if remaining or sink.totals.failed:
        raise RuntimeError(f"producer: {remaining} unacknowledged, {sink.totals.failed} failed")
    return (len(events) - 1) / produce_s, sink.totals.events


def produce_drain_data(settings: Settings, n: int, repeats: int = 1) -> dict[str, Any]:
    """Generate n simulator events and produce them (the drain data); the producer is timed
    `repeats` times (the extra runs go to scratch topics) and the median reported."""
    scenario = runtime.scenario_of(settings)
    sim = runtime.simulator_of(settings, scenario)
    events: list[Any] = []
    t0 = time.perf_counter()
    while len(events) < n:
        events.extend(sim.advance(sim.now + 600))
    gen_s = time.perf_counter() - t0
    generated = len(events)
    events = events[:n]
    eps, acknowledged = _produce_timed(settings, scenario, events)
    runs = [eps]
    for r in range(1, repeats):
        scratch = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}s{r}"})
        ensure_topics(scratch)
        runs.append(_produce_timed(scratch, scenario, events)[0])
    producer_eps = statistics.median(runs)
    simulator_eps = generated / gen_s
    return {
        "producer_eps": producer_eps,
        "producer_runs_eps": runs,
        "simulator_eps": simulator_eps,
        # one thread doing both: 1 / (1/gen + 1/produce)
        "simulate_produce_eps": 1 / (1 / simulator_eps + 1 / producer_eps),
        "acknowledged": acknowledged,
        "sim": sim,
        "scenario": scenario,
    }


def run_baseline(
    settings: Settings,
    client: redis.Redis,
    n: int,
    tag: str,
    log_dir: Path,
    timeout: float,
    eager_delivery: bool = False,
) -> dict[str, Any]:
    key = f"bench:baseline:{tag}"
    child = start_baseline(
        settings,
        f"bench-baseline-{tag}",
        key,
        log_dir,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        eager_delivery=eager_delivery,
    )
    try:
        cpu = CpuWindow(n, [child.proc.pid], client)
        out = drain_rate(cpu.wrap(lambda: int(client.get(key) or 0)), n, [child], timeout)
        return {**out, **cpu.figures()}
    finally:
        child.stop()


def run_pipeline(
    settings: Settings, client: redis.Redis, n: int, tag: str, log_dir: Path, timeout: float, workers: int = 1
) -> dict[str, Any]:
    client.flushdb()
    group = f"bench-pipeline-{tag}"
    children = [start_worker(settings, group, f"w{i + 1}", log_dir) for i in range(workers)]
    try:
        cpu = CpuWindow(n, [c.proc.pid for c in children], client)
        out = drain_rate(cpu.wrap(applied_counter(settings, client)), n, children, timeout)
        out.update(cpu.figures())
        out["worker_rss_mb"] = [rss_mb(c.proc.pid) for c in children]
        return out
    finally:
        for c in children:
            c.stop()


class OffsetPoller(threading.Thread):
    """Records, per topic-partition, when each applied offset first became visible in Redis."""

    def __init__(self, settings: Settings, client: redis.Redis, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self._metas = [(p, f"{settings.topic_prefix}:{{p{p}}}:meta") for p in range(settings.partitions)]
        self._client = client
        self._interval = interval
        self._halt = threading.Event()
        self.seen: dict[tuple[str, int], tuple[list[int], list[float]]] = {}

    def run(self) -> None:
        while not self._halt.is_set():
            with self._client.pipeline(transaction=False) as pipe:
                for _, key in self._metas:
                    pipe.hgetall(key)
                rows = pipe.execute()
            now = time.time()
            for (p, _), row in zip(self._metas, rows, strict=True):
                for k, v in row.items():
                    name = k.decode()
                    if name.startswith("off:"):
                        offs, times = self.seen.setdefault((name[4:], p), ([], []))
                        off = int(v)
                        if not offs or off > offs[-1]:
                            offs.append(off)
                            times.append(now)
            time.sleep(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def visible_at(self, topic: str, partition: int, offset: int) -> float | None:
        offs, times = self.seen.get((topic, partition), ([], []))
        i = bisect.bisect_left(offs, offset)
        return times[i] if i < len(offs) else None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def measure_latency(
    settings: Settings,
    client: redis.Redis,
    sink_config: dict[str, Any],
    payloads: Iterator[tuple[str, bytes, bytes]],
    rate: float,
    duration: float,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Produce at `rate` for `warmup` + `duration` s; latency = first visible in Redis - Kafka
    timestamp, over the events produced after the warm-up (the ramp from idle is not counted)."""
    records: list[tuple[str, int, int, float]] = []
    failures = [0]

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures[0] += 1
            return
        records.append(
            (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), msg.timestamp()[1] / 1000)
        )

    producer = Producer(sink_config)
    poller = OffsetPoller(settings, client)
    poller.start()
    started = time.monotonic()
    counted_from = time.time() + warmup
    produced = 0
    try:
        while (elapsed := time.monotonic() - started) < warmup + duration:
            due = int(rate * elapsed) - produced
            for _ in range(max(0, due)):
                topic, key, value = next(payloads)
                producer.produce(topic, value, key, on_delivery=on_delivery)
                produced += 1
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(30)
        last = max(records, key=lambda r: r[3]) if records else None
        deadline = time.monotonic() + 30
        while last is not None and time.monotonic() < deadline:
            if all(poller.visible_at(t, p, o) is not None for t, p, o, _ in records[-200:]):
                break
            time.sleep(0.05)
        time.sleep(0.05)
    finally:
        poller.stop()
    lat: list[float] = []
    by_second: dict[int, list[float]] = {}
    missing = 0
    records = [r for r in records if r[3] >= counted_from]
    t0 = min((r[3] for r in records), default=0.0)
    for topic, p, off, ts in records:
        seen = poller.visible_at(topic, p, off)
        if seen is None:
            missing += 1
        else:
            ms = max(0.0, seen - ts) * 1000
            lat.append(ms)
            by_second.setdefault(int(ts - t0), []).append(ms)
    lat.sort()
    return {
        "latency_p50_ms": _percentile(lat, 0.5),
        "latency_p99_ms": _percentile(lat, 0.99),
        "latency_max_ms": lat[-1] if lat else None,
        "latency_rate_eps": rate,
        "latency_events": len(lat),
        "latency_not_visible": missing,
        "latency_failed": failures[0],
        "latency_achieved_eps": produced / (warmup + duration),
        "latency_warmup_s": warmup,
        # p50 per second of the run: a rising series means the worker fell behind (a queue grew)
        "latency_p50_by_second_ms": [statistics.median(v) for _, v in sorted(by_second.items())],
    }


def memory_phase(
    settings: Settings,
    client: redis.Redis,
    worker: Child,
    template: dict[str, Any],
    sink_config: dict[str, Any],
    users: int,
    budget_s: float,
) -> dict[str, Any]:
    """Views of `users` distinct new users; RSS and Redis memory sampled as they are applied."""
    count = applied_counter(settings, client)
    base_applied = count()
    base_redis = redis_used_bytes(client)
    base_rss = rss_mb(worker.proc.pid)
    producer = Producer(sink_config)
    topic = settings.topic("view")
    head = json.dumps({k: v for k, v in template.items() if k not in ("event_id", "user_id")})[1:-1]
    started = time.monotonic()
    # Produce in slices ahead of the worker (the producer is ~20x faster), so the broker never
    # holds many more than the worker will read inside the time box.
    produced = 0
    curve: list[dict[str, Any]] = [{"users": 0, "worker_rss_mb": base_rss, "redis_mb": base_redis / 2**20}]
    next_mark = max(1, users // 10)
    applied = 0
    while True:
        applied = count() - base_applied
        if produced - applied < 20_000 and produced < users:
            for i in range(produced, min(users, produced + 10_000)):
                uid = f"m{i:08d}"
                value = f'{{"event_id":"mem-{i}","user_id":"{uid}",{head}}}'.encode()
                while True:
                    try:
                        producer.produce(topic, value, uid.encode())
                        break
                    except BufferError:
                        producer.poll(0.05)
            produced = min(users, produced + 10_000)
            producer.poll(0)
        if applied >= next_mark or applied >= users:
            curve.append(
                {
                    "users": applied,
                    "worker_rss_mb": rss_mb(worker.proc.pid),
                    "redis_mb": redis_used_bytes(client) / 2**20,
                }
            )
            next_mark += max(1, users // 10)
        if applied >= users or time.monotonic() - started > budget_s:
            break
        worker.check()
        time.sleep(0.1)
    producer.flush(10)
    end_redis = redis_used_bytes(client)
    end_rss = rss_mb(worker.proc.pid)
    curve.append({"users": applied, "worker_rss_mb": end_rss, "redis_mb": end_redis / 2**20})
    return {
        "memory_users": applied,
        "memory_users_target": users,
        "worker_rss_mb": end_rss,
        "worker_rss_start_mb": base_rss,
        "redis_mb": end_redis / 2**20,
        "redis_bytes_per_user": (end_redis - base_redis) / applied if applied else None,
        "memory_curve": curve,
    }


# --------------------------------------------------------------------------- driver


def run_bench(
    json_path: Path | None,
    *,
    quick: bool = False,
    plan: BenchPlan | None = None,
    log_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    peers: bool | None = None,
) -> dict[str, Any]:
    """Run the whole benchmark on a fresh embedded stack; write `json_path` if given.
    `peers`: drain with the peers too (None: as the plan says)."""
    # Imported here: the runner uses this module's Child and drain_rate.
    from seedloop.bench_peers.runner import peer_interpreters, run_peer

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
        logs = stack.log_dir
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        settings = Settings(
            kafka_bootstrap_servers=stack.bootstrap,
            redis_url=SecretStr(stack.redis_url),
            topic_prefix=prefix,
            partitions=plan.partitions,
            seeds_dir=REPO_SEEDS,
            rebalance_timeout_s=3.0,
        )
        client = redis.Redis.from_url(settings.redis_url_value)
        ensure_topics(settings)
        say(f"producing {plan.events} simulated events")
        prod = produce_drain_data(settings, plan.events, plan.repeats)
        sim, scenario = prod.pop("sim"), prod.pop("scenario")
        result.update(prod)
        # The count we produced and the broker acknowledged, not the high watermarks: Tansu reports
        # a partition's high watermark as its last batch's base offset + 1 (consumed offsets are dense).
        total = int(prod["acknowledged"])

        base_runs: list[float] = []
        eager_runs: list[float] = []
        pipe_runs: list[float] = []
        rss_drain: list[float] = []
        # Every drain's figures by implementation (CPU measures, the peers' runs).
        drains: dict[str, list[dict[str, Any]]] = {}

        def keep(name: str, out: dict[str, Any]) -> dict[str, Any]:
            drains.setdefault(name, []).append(out)
            return out

        peer_pythons, peers_skipped = peer_interpreters() if with_peers else ({}, {})
        for kind, why in peers_skipped.items():
            say(f"not measuring {kind}: {why}")
        for r in range(plan.repeats):
            say(f"drain {r + 1}/{plan.repeats}: stock Faust counting agent")
            client.flushdb()
            base_runs.append(
                keep(
                    "baseline",
                    run_baseline(settings, client, total, f"{prefix}-{r}", logs, plan.drain_timeout_s),
                )["eps"]
            )
            say(f"drain {r + 1}/{plan.repeats}: the counting agent with the worker's eager delivery")
            client.flushdb()
            eager_runs.append(
                keep(
                    "baseline_eager",
                    run_baseline(
                        settings,
                        client,
                        total,
                        f"{prefix}-e{r}",
                        logs,
                        plan.drain_timeout_s,
                        eager_delivery=True,
                    ),
                )["eps"]
            )
            say(f"drain {r + 1}/{plan.repeats}: pipeline worker")
            out = keep(
                "pipeline", run_pipeline(settings, client, total, f"{prefix}-{r}", logs, plan.drain_timeout_s)
            )
            pipe_runs.append(out["eps"])
            rss_drain.extend(x for x in out["worker_rss_mb"] if x is not None)
            say(
                f"  baseline {base_runs[-1]:,.0f} ev/s, eager-delivery baseline {eager_runs[-1]:,.0f} ev/s, "
                f"pipeline {pipe_runs[-1]:,.0f} ev/s"
            )
            for kind, python in peer_pythons.items():
                say(f"drain {r + 1}/{plan.repeats}: {peer_figures.IMPLEMENTATIONS[kind]}")
                peer = keep(
                    kind,
                    run_peer(
                        kind, settings, client, total, f"{prefix}-{r}", logs, plan.drain_timeout_s, python
                    ),
                )
                say(f"  {kind} {peer['eps']:,.0f} ev/s")
        baseline_eps = _median(base_runs)
        eager_eps = _median(eager_runs)
        pipeline_eps = _median(pipe_runs)
        result.update(
            {
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
        )
        peer_figures.collect(result, drains, peers_skipped if with_peers else None)

        if plan.scaleout:
            say("scale-out: two workers drain the same events")
            out = run_pipeline(settings, client, total, f"{prefix}-x2", logs, plan.drain_timeout_s, workers=2)
            result["scaleout_eps"] = out["eps"]
            result["scaleout_factor"] = out["eps"] / pipeline_eps if pipeline_eps else None
        else:
            result["scaleout_eps"] = result["scaleout_factor"] = None

        # Latency and memory: their own topics and namespace, one worker.
        client.flushdb()
        lat_settings = settings.model_copy(update={"topic_prefix": f"{prefix}l"})
        ensure_topics(lat_settings)
        from schemas.codec import encode

        rate = max(50.0, (pipeline_eps or 1000.0) / 2)
        needed = int(rate * (plan.latency_s + 3) * 1.2) + 1000
        events: list[Any] = []
        while len(events) < needed:
            events.extend(sim.advance(sim.now + 600))
        payloads = [(lat_settings.topic(e.action), e.user_id.encode(), encode(e)) for e in events]
        sink = runtime.event_sink(lat_settings, scenario)
        config = sink.producer_config
        worker = start_worker(lat_settings, "bench-latency", "w1", logs)
        try:
            # Warm up: the first events go through before the clock starts (group join, claims).
            warm = iter(payloads[:200])
            p = Producer(config)
            for t, k, v in warm:
                p.produce(t, v, k)
            p.flush(30)
            count = applied_counter(lat_settings, client)
            deadline = time.monotonic() + 60
            while count() < 200:
                worker.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("latency worker did not start")
                time.sleep(0.1)
            say(f"latency: {rate:,.0f} ev/s for {plan.latency_s:.0f}s")
            result.update(
                measure_latency(
                    lat_settings,
                    client,
                    config,
                    iter(payloads[200:]),
                    rate,
                    plan.latency_s,
                    warmup=min(3.0, plan.latency_s / 4),
                )
            )
            view = next(e for e in reversed(events) if e.action == "view")
            template = json.loads(encode(view))
            say(f"memory: up to {plan.memory_users:,} distinct users in {plan.memory_s:.0f}s")
            result.update(
                memory_phase(lat_settings, client, worker, template, config, plan.memory_users, plan.memory_s)
            )
        finally:
            worker.stop()
        client.close()
    result["bench_seconds"] = time.monotonic() - t_start
    result["method"] = {
        "throughput": "drain rate: N pre-produced simulator events, fresh group and flushed Redis; "
        "slope between 10% and 90% processed (Redis-sampled every 50 ms); medians of alternating runs",
        "latency": "Kafka timestamp (produce time) to the applied offset, stored with the figures in "
        "the same Lua call, first seen by a 5 ms Redis poller; produced at half pipeline_eps after a "
        "warm-up at that rate that is not counted",
        "producer": "pre-generated simulator events: encode + produce + delivery accounting, until all acknowledged",
        "memory": "views of distinct new users after the latency phase; Redis used_memory and worker VmRSS",
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.2f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def format_bench(result: dict[str, Any]) -> str:
    base = result.get("baseline_eps")
    rows = [
        ("baseline_eps (stock Faust counting agent)", _fmt(base), "-"),
        ("pipeline_eps (full pipeline, 1 worker)", _fmt(result.get("pipeline_eps")), _fmt(base)),
        ("ratio pipeline / baseline", _fmt(result.get("ratio")), ">= 0.8"),
        (
            "baseline_eager_eps (same agent, eager delivery)",
            _fmt(result.get("baseline_eager_eps")),
            _fmt(base),
        ),
        ("ratio_same_delivery (pipeline / that)", _fmt(result.get("ratio_same_delivery")), "-"),
        ("scaleout_eps (2 workers)", _fmt(result.get("scaleout_eps")), _fmt(base)),
        ("scaleout_factor", _fmt(result.get("scaleout_factor")), "-"),
        (
            "latency_p50_ms",
            _fmt(result.get("latency_p50_ms")),
            f"at {_fmt(result.get('latency_rate_eps'))} ev/s",
        ),
        ("latency_p99_ms", _fmt(result.get("latency_p99_ms")), "<= 1000"),
        ("producer_eps (acknowledged)", _fmt(result.get("producer_eps")), _fmt(base)),
        ("simulator_eps (generation only)", _fmt(result.get("simulator_eps")), "-"),
        ("simulate_produce_eps (one thread)", _fmt(result.get("simulate_produce_eps")), "-"),
        (
            "worker_rss_mb",
            _fmt(result.get("worker_rss_mb")),
            f"start {_fmt(result.get('worker_rss_start_mb'))}",
        ),
        ("redis_mb", _fmt(result.get("redis_mb")), f"{_fmt(result.get('memory_users'))} users"),
        ("redis_bytes_per_user", _fmt(result.get("redis_bytes_per_user")), "-"),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{w}}  {'value':>12}  {'baseline / note':>18}", "-" * (w + 34)]
    lines += [f"{name:<{w}}  {val:>12}  {note:>18}" for name, val, note in rows]
    runs_b = ", ".join(_fmt(x) for x in result.get("baseline_runs_eps", []))
    runs_e = ", ".join(_fmt(x) for x in result.get("baseline_eager_runs_eps", []))
    runs_p = ", ".join(_fmt(x) for x in result.get("pipeline_runs_eps", []))
    runs_x = ", ".join(_fmt(x) for x in result.get("producer_runs_eps", []))
    lines.append(
        f"runs: baseline [{runs_b}]  eager baseline [{runs_e}]  pipeline [{runs_p}]  producer [{runs_x}]"
        "  (medians above)"
    )
    lines += ["", *peer_figures.table_lines(result, _fmt)]
    curve = result.get("memory_curve") or []
    if curve:
        lines.append(
            "memory: "
            + "  ".join(
                f"{c['users']:,}u: {_fmt(c['worker_rss_mb'])}/{_fmt(c['redis_mb'])} MB" for c in curve
            )
            + "  (worker RSS / Redis)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the baseline agent


def baseline_agent_main(argv: Sequence[str]) -> None:
    """A stock Faust agent that only counts, with the worker's broker settings; a timer (not the
    agent) writes the count to Redis, so the measurement adds nothing per event."""
    import faust

    ap = argparse.ArgumentParser()
    for name in ("--bootstrap", "--redis", "--prefix", "--group", "--counter-key"):
        ap.add_argument(name, required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--rebalance-timeout", type=float, default=3.0)
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        help="override Faust's hard-coded aiokafka fetch_max_wait_ms=1500 (to match a worker that does)",
    )
    ap.add_argument(
        "--eager-delivery",
        action="store_true",
        help="use the worker's eager message delivery (stream_processors.faust_transport) in this agent",
    )
    args = ap.parse_args(argv)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        **consumer_app_options(args.rebalance_timeout, "seedloop-bench-baseline-"),
        topic_partitions=args.partitions,
        web_enabled=False,
    )
    if args.fetch_max_wait_ms is not None or args.eager_delivery:
        # The worker's consumer, with only what was asked for; otherwise Faust's own transport.
        transport = install_transport(
            app,
            fetch_max_wait_ms=FAUST_FETCH_MAX_WAIT_MS if args.fetch_max_wait_ms is None else args.fetch_max_wait_ms,
            eager_delivery=args.eager_delivery,
        )
        if args.eager_delivery and not transport.eager_delivery:
            raise SystemExit("eager delivery does not apply to the installed Faust")
    topics = app.topic(*(f"{args.prefix}.{a}" for a in ACTIONS), value_serializer="raw", key_serializer="raw")
    counted = [0]

    @app.agent(topics)
    async def count(stream: Any) -> None:
        async for _ in stream:
            counted[0] += 1

    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(args.redis)

    @app.timer(SAMPLE_S / 2)
    async def report() -> None:
        await client.set(args.counter_key, counted[0])

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "baseline-agent":
        baseline_agent_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m seedloop.bench")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also drain with a quixstreams app and a plain confluent-kafka loop (default: on, off with --quick)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        print(format_bench(run_bench(args.json, quick=args.quick, progress=print, peers=args.peers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
