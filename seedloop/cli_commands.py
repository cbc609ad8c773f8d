"""What each `seedloop` subcommand does, once its flags are parsed and its settings built
(seedloop/cli.py decides which runs and turns service failures into exit codes)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from seedloop.logs import configure_logging
from seedloop.preflight import EXIT_CONFIG, EXIT_STATE_LOSS
from seedloop.settings import Settings

log = logging.getLogger("seedloop.cli")

# Progress messages per seed: 10 policy runs (6 policies, 4 of them shocked too), the evidence
# bound, the lever headroom (and plots).
_EVAL_STEPS_PER_SEED = 12


def stop_flag() -> Callable[[], bool]:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop.is_set


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop.embedded import EmbeddedStack, redis_process

    should_stop = stop_flag()
    with contextlib.ExitStack() as services:
        if args.kafka == "apache":
            from seedloop.apache_kafka import ApacheKafka, KafkaToolchainError

            try:
                kafka = services.enter_context(ApacheKafka(nodes=args.kafka_nodes, data_dir=args.kafka_data))
            except KafkaToolchainError as exc:
                print(f"seedloop stack: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            redis_server = redis_process()
            redis_server.start()
            services.callback(redis_server.stop)
            bootstrap, redis_url = kafka.bootstrap, f"redis://127.0.0.1:{redis_server.port}/0"
        else:
            stack = services.enter_context(EmbeddedStack())
            bootstrap, redis_url = stack.bootstrap, stack.redis_url
        print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}", flush=True)
        print(f"REDIS_URL={redis_url}", flush=True)
        while not should_stop():
            time.sleep(0.2)
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from producers.runner import ProductionMetrics, RunLimits, run_simulation, serve_metrics
    from seedloop import runtime
    from seedloop.topics import ensure_topics
    from stream_processors.metrics import SimulatorMetrics

    scenario = runtime.scenario_of(settings)
    ensure_topics(settings)
    sim = runtime.simulator_of(settings, scenario)
    sink = runtime.event_sink(settings, scenario)
    reader = None if args.no_bids else runtime.bid_reader(settings, f"{int(time.time())}")
    limits = RunLimits(
        max_events=args.events, duration_s=args.duration, rate=settings.rate, speed=settings.sim_speed
    )
    # /metrics on SEEDLOOP_WEB_HOST:SEEDLOOP_SIMULATOR_PORT (Prometheus job seedloop-simulator).
    metrics = SimulatorMetrics()
    server = serve_metrics(metrics, settings.web_host, settings.simulator_port)
    started = time.monotonic()
    try:
        produced = run_simulation(
            sim,
            sink,
            reader,
            limits,
            metrics=ProductionMetrics.for_prefix(metrics, settings.topic_prefix),
            should_stop=stop_flag(),
        )
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    if reader is not None:
        reader.close()
    result = sink.totals.as_json()
    log.info(
        "simulation finished",
        extra={
            "produced": produced,
            "acknowledged": result["events"],
            "events_per_s": round(produced / elapsed, 1) if elapsed else None,
        },
    )
    if args.json:
        print(json.dumps(result, indent=2))
    return 0 if sink.totals.failed == 0 else 1


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop import runtime
    from seedloop.recovery import StateLossError, check_state
    from seedloop.topics import ensure_topics
    from stream_processors.worker import run_worker

    ensure_topics(settings)
    cfg = runtime.worker_config(settings, runtime.scenario_of(settings))
    log.info("worker starting", extra={"settings": settings.redacted()})
    try:
        check_state(settings, cfg.app_id)
    except StateLossError as exc:
        log.critical(str(exc))
        return EXIT_STATE_LOSS
    run_worker(cfg, loglevel=settings.log_level)
    return 0


def cmd_optimize(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop import runtime
    from seedloop.topics import ensure_topics
    from stream_processors.metrics import OptimizerMetrics
    from stream_processors.optimizer.http import ControlServer

    ensure_topics(settings)
    metrics = OptimizerMetrics()
    service = runtime.optimizer_of(settings, runtime.scenario_of(settings), metrics)
    if args.once:
        decisions = service.run_round()
        print(json.dumps([d.model_dump(mode="json") for d in decisions], indent=2))
        return 0
    token = settings.control_token.get_secret_value() if settings.control_token else None
    server = ControlServer(service, settings.web_host, settings.optimizer_port, token).start()
    log.info(
        "optimizer running",
        extra={
            "http": f"{settings.web_host}:{server.port}",
            "mode": settings.optimizer_mode,
            "control": "enabled" if token else "disabled (no SEEDLOOP_CONTROL_TOKEN)",
        },
    )
    try:
        service.run_forever(settings.optimizer_interval_s, should_stop=stop_flag())
    finally:
        server.stop()
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop import runtime
    from seedloop.report import build_report, report_markdown

    report = build_report(settings, runtime.scenario_of(settings))
    print(json.dumps(report, indent=2) if args.json else report_markdown(report))
    return 0


def cmd_soak(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop.soak import run_soak

    result = run_soak(settings, args.duration, args.workers, args.sample, args.json_path)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if result["lost"] == 0 else 1


def cmd_attribute(args: argparse.Namespace) -> int:
    from stream_processors.attribution.paths import PathFormatError, run_attribute

    configure_logging("console", "WARNING")
    try:
        print(run_attribute(args.paths, args.model, args.json))
    except (PathFormatError, FileNotFoundError) as exc:
        print(f"seedloop attribute: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from seedloop.bench import format_bench, run_bench
    from seedloop.embedded import embedded_problem

    if problem := embedded_problem():
        print(f"seedloop bench: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("console", "WARNING")
    result = run_bench(
        args.json_path,
        quick=args.quick,
        peers=args.peers,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    print(format_bench(result))
    return 0


def _evaluate_progress(err: Any, stack: contextlib.ExitStack, steps: int) -> Callable[[str], None]:
    """On a terminal a bar (it tells how long is left); elsewhere one line per step on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not err.is_terminal:

        def print_step(msg: str) -> None:
            print(f"seedloop evaluate: {msg}", file=sys.stderr, flush=True)

        return print_step
    bar = stack.enter_context(
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
    )
    task = bar.add_task("evaluating", total=steps)

    def advance(msg: str) -> None:
        if "plots" not in msg:
            bar.update(task, advance=1, description=msg)

    return advance


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from stream_processors.optimizer.evaluate import EvalConfig, format_evaluations, run_evaluate_seeds

    seeds = args.seeds or [settings.seed]
    err = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        progress = _evaluate_progress(err, stack, _EVAL_STEPS_PER_SEED * len(seeds))
        if not err.is_terminal:
            progress(
                f"{len(seeds)} seed(s) x 10 runs of {args.days:g} simulated day(s), {args.processes} process(es)"
            )
        out = run_evaluate_seeds(
            settings.seeds_dir,
            args.json_path,
            args.plots,
            days=args.days,
            seeds=seeds,
            workers=args.processes,
            cfg=EvalConfig(
                attribution_scope=settings.attribution_scope,
                volume=args.volume,
                holdout_share=args.holdout_share,
                lift_window_s=settings.lift_window_s,
            ),
            progress=progress,
        )
    print(format_evaluations(out))
    return 0
