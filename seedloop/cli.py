"""`seedloop`: the command line. Every flag also has an environment variable (see README)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from pydantic import AliasChoices, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seedloop import preflight
from seedloop.logs import configure_logging
from seedloop.preflight import EXIT_CONFIG, EXIT_STATE_LOSS
from seedloop.redact import is_secret_key, redact_text, secrets_of, url_secrets
from seedloop.settings import Settings
from stream_processors.attribution.models import MODEL_NAMES

log = logging.getLogger("seedloop.cli")

DESCRIPTION = """\
seedloop: simulated social-commerce users -> Kafka -> Faust attribution in Redis -> Prometheus
metrics -> bid optimizer -> ad scheduler, closing the loop from seeding to purchase.

Services: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL to use your own; `demo` and `stack` start an
embedded broker (Tansu) and Redis (valkey) on free localhost ports when they are unset.
Other settings are SEEDLOOP_* environment variables (e.g. SEEDLOOP_PARTITIONS=8); flags win.
"""

EPILOG = """\
exit codes:
  0    success
  1    the command ran and failed: simulate (events the broker did not acknowledge), soak (events lost)
  2    usage or configuration error: a bad flag or setting, a malformed REDIS_URL, services not set
  3    worker: Redis is behind Kafka's committed offsets, i.e. it lost state (see SEEDLOOP_ON_STATE_LOSS)
  4    Redis unreachable within SEEDLOOP_CONNECT_TIMEOUT_S (default 10 s), or it refused the
       credentials (check REDIS_URL)
  5    Kafka unreachable within SEEDLOOP_CONNECT_TIMEOUT_S, or it refused the credentials or the TLS
       handshake (check KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*)
  70   worker: a batch could not be applied; the worker exits before acknowledging it (restart it:
       the replay is harmless)
  130  interrupted
Errors 2-5 are one line on stderr naming what failed and the setting to check; the details are
logged at DEBUG (--log-level DEBUG). Passwords are never printed.
"""


def _logging_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    g = parser.add_argument_group("common settings (flags override SEEDLOOP_* environment variables)")
    g.add_argument("--log-format", choices=["json", "console"], help="SEEDLOOP_LOG_FORMAT (default console)")
    g.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="SEEDLOOP_LOG_LEVEL (default INFO)"
    )
    return g


def _common(parser: argparse.ArgumentParser) -> None:
    g = _logging_flags(parser)
    g.add_argument(
        "--topic-prefix", help="topic and Redis key prefix (SEEDLOOP_TOPIC_PREFIX, default seedloop)"
    )
    g.add_argument("--partitions", type=int, help="partitions per topic (SEEDLOOP_PARTITIONS, default 4)")
    g.add_argument(
        "--seeds-dir", type=Path, help="scenario folder (SEEDLOOP_SEEDS_DIR, default: the seeds shipped with seedloop)"
    )
    g.add_argument(
        "--connect-timeout",
        type=float,
        dest="connect_timeout_s",
        help="seconds to wait for Kafka and Redis at start before giving up (SEEDLOOP_CONNECT_TIMEOUT_S, default 10)",
    )


def _sim_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="random seed of the simulation (SEEDLOOP_SEED, default 7)")
    parser.add_argument("--rate", type=float, help="max events/s produced (SEEDLOOP_RATE, default 2000)")
    parser.add_argument(
        "--speed",
        type=float,
        dest="sim_speed",
        help="simulated seconds per real second (SEEDLOOP_SIM_SPEED, default 720)",
    )
    parser.add_argument("--users", type=int, help="simulated user population (SEEDLOOP_USERS)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seedloop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="the whole closed loop on embedded services, with a live table and a report",
        description="Start the embedded broker and Redis, workers, the optimizer and the simulator; "
        "show a live campaign table; at the end write DIR/report.json and DIR/report.md.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of simulation (default 60)")
    p.add_argument("--report-dir", type=Path, default=Path("reports/demo"), help="where to write the report")
    p.add_argument("--workers", type=int, default=2, help="Faust worker processes (default 2)")
    p.add_argument("--no-live", action="store_true", help="no live table (logs only)")
    _sim_flags(p)
    _common(p)

    p = sub.add_parser(
        "stack",
        help="run a local broker and Redis until interrupted",
        description="Starts a Kafka broker and a Redis server on free localhost ports and prints "
        "KAFKA_BOOTSTRAP_SERVERS=... and REDIS_URL=... lines to export. The broker is the embedded "
        "Tansu (memory only, starts at once) or, with --kafka apache, Apache Kafka in KRaft mode as JVM "
        "processes (needs Java 17+ and Maven the first time, which resolves its jars into "
        "~/.cache/seedloop; durable when --kafka-data names a folder kept between runs).",
    )
    p.add_argument("--kafka", choices=("embedded", "apache"), default="embedded",
                   help="which broker to start (default embedded)")
    p.add_argument("--kafka-nodes", type=int, default=1, choices=(1, 3),
                   help="Apache Kafka nodes, each broker and controller (default 1; 3: replication factor 3, "
                   "min.insync.replicas 2)")
    p.add_argument("--kafka-data", type=Path, default=None,
                   help="Apache Kafka's data folder, kept after exit (default: a temporary folder, removed)")
    # stack only starts services: topics, partitions, seeds and connect timeouts are the business
    # of the commands that use them, so it offers the logging flags alone.
    _logging_flags(p)

    p = sub.add_parser(
        "simulate",
        help="produce simulated user actions to the configured broker",
        description="Runs the seeded simulation against KAFKA_BOOTSTRAP_SERVERS. With --json, prints "
        "what the broker acknowledged.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--events", type=int, help="stop after this many events")
    g.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print acknowledged totals as JSON on stdout")
    p.add_argument("--no-bids", action="store_true", help="do not read bid adjustments (open loop)")
    _sim_flags(p)
    _common(p)

    p = sub.add_parser(
        "worker",
        help="run one Faust attribution worker against the configured services",
        description="Consumes the four action topics (view, follow, add_to_cart, checkout) of "
        "KAFKA_BOOTSTRAP_SERVERS as one member of the consumer group, attributes every conversion to "
        "the touches before it (six models) and applies each partition batch to REDIS_URL in one atomic "
        "call; undecodable or invalid events go to the dead-letter topic. Serves /metrics, /api/campaigns "
        "and /live on SEEDLOOP_WEB_HOST:--web-port. Run several for more throughput: the partitions are "
        "shared among them.",
    )
    p.add_argument("--worker-id", help="name in logs and dead-letter headers (SEEDLOOP_WORKER_ID)")
    p.add_argument(
        "--web-port", type=int, help="HTTP port for /metrics and the API (SEEDLOOP_WEB_PORT, default 6066)"
    )
    _common(p)

    p = sub.add_parser(
        "optimize",
        help="run the bid optimizer against the configured services",
        description="Every SEEDLOOP_OPTIMIZER_INTERVAL_S seconds reads each campaign's rolling figures "
        "from REDIS_URL, moves every channel's bid toward the campaign's CPA or ROAS target within its "
        "guardrails (learning phase, at most +-25% a round, floor and cap, pacing to the daily budget) "
        "and publishes each decision, with its reason, to <prefix>.bid_adjustments, where the ad "
        "scheduler picks it up. HTTP (metrics, bids, decisions, control) on SEEDLOOP_WEB_HOST:--port.",
    )
    p.add_argument("--once", action="store_true", help="run one control round, print its decisions as JSON, exit")
    p.add_argument("--dry-run", action="store_true", help="decide and record, publish nothing (SEEDLOOP_OPTIMIZER_MODE=dry_run)")
    p.add_argument(
        "--port",
        type=int,
        dest="optimizer_port",
        help="HTTP port for /metrics, /api/bids, /api/decisions and control (SEEDLOOP_OPTIMIZER_PORT, default 6067)",
    )
    _common(p)

    p = sub.add_parser(
        "report",
        help="print the current campaign figures from Redis",
        description="Reads the figures the workers applied to REDIS_URL and prints, per campaign, spend, "
        "views, follows, add-to-carts, checkouts, GMV, CPA, ROAS (last-touch) and the current bids, then "
        "loyalty per campaign and the totals, as a Markdown document (valid when piped: one table row per "
        "line), or with --json every attribution model's figures.",
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a Markdown table")
    _common(p)

    p = sub.add_parser(
        "evaluate",
        help="compare static bids, the optimizer and an oracle in a pure, faster-than-real-time simulation",
        description="Runs the seeded scenario without Kafka or Redis, once per policy (static, optimizer, oracle) "
        "plus a mid-run shock, and prints GMV, ROAS, settle rounds and pacing error per policy and campaign.",
    )
    p.add_argument("--json", type=Path, dest="json_path", help="write the results as JSON to this file")
    p.add_argument(
        "--plots", type=Path, help="write PNG charts (bids, efficiency, spend vs plan) to this folder"
    )
    p.add_argument("--days", type=float, default=2.0, help="simulated days (default 2)")
    p.add_argument("--processes", type=int, default=2, help="policies run in parallel processes (default 2)")
    p.add_argument("--seed", type=int, help="random seed of the simulation (SEEDLOOP_SEED, default 7)")
    p.add_argument(
        "--seeds",
        type=_seed_list,
        help="several random seeds, comma-separated (e.g. 7,11,13): the evaluation once per seed, then a "
        "summary across seeds (median and worst); --json then writes {seeds: {...}, summary: {...}}",
    )
    p.add_argument(
        "--seeds-dir", type=Path, help="scenario folder (SEEDLOOP_SEEDS_DIR, default: the seeds shipped with seedloop)"
    )
    p.add_argument(
        "--volume",
        type=_positive_float,
        default=1.0,
        help="market size: ad inventory, daily budgets and users times this, rates and targets unchanged "
        "(default 1); shows how settling depends on the evidence each control round carries",
    )

    p = sub.add_parser(
        "bench",
        help="throughput, latency, memory and scale-out on embedded services, beside a stock Faust baseline",
        description="Measures baseline_eps (a Faust agent that only counts), pipeline_eps, their ratio, "
        "latency p50/p99 at half the sustainable rate, producer_eps, worker RSS and Redis memory per user, "
        "and the two-worker scale-out factor, in one run, and beside them the peers a user would pick "
        "instead (a quixstreams app and a plain confluent-kafka loop doing last-touch attribution), each "
        "in events/s and events per CPU-second of the consumer with and without its Redis server's CPU. "
        "Prints a table; --json writes the figures.",
    )
    p.add_argument("--json", type=Path, dest="json_path", help="write the figures as JSON to this file")
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None,
                   help="also drain with a quixstreams app (from its own venv, .venv/bench-peers or "
                   "SEEDLOOP_BENCH_QUIX_PYTHON) and a plain confluent-kafka loop (default: on; off with --quick)")

    p = sub.add_parser(
        "soak",
        help="sustained load on embedded services: memory, lag and completeness over time",
        description="Produces at SEEDLOOP_RATE for --duration seconds through N workers, sampling worker RSS, "
        "Redis memory and lag; checks that processed + dead letters == produced.",
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--sample", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--json", type=Path, dest="json_path", help="write the result as JSON to this file")
    _sim_flags(p)
    _common(p)

    p = sub.add_parser(
        "attribute",
        help="attribute exported journeys (path;total_conversions;... CSV)",
        description="Runs one attribution model over journeys exported as CSV (the format of "
        "ChannelAttribution: path;total_conversions;total_conversion_value;total_null, a path being "
        "channels joined by '>') and prints the conversions and value credited to each channel. No "
        "Kafka or Redis needed.",
    )
    p.add_argument(
        "--paths",
        required=True,
        help="CSV file with header path;total_conversions;total_conversion_value;total_null ('-' for stdin)",
    )
    p.add_argument(
        "--model",
        required=True,
        choices=MODEL_NAMES,
        help="attribution model: " + ", ".join(MODEL_NAMES),
    )
    p.add_argument("--json", action="store_true", help='print {"model": M, "channels": {...}}')
    return parser


_FLAG_SETTINGS = (
    "topic_prefix",
    "partitions",
    "seeds_dir",
    "log_format",
    "log_level",
    "seed",
    "rate",
    "sim_speed",
    "users",
    "worker_id",
    "web_port",
    "optimizer_port",
    "connect_timeout_s",
)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in _FLAG_SETTINGS if getattr(args, k, None) is not None
    }
    if getattr(args, "dry_run", False):
        overrides["optimizer_mode"] = "dry_run"
    return Settings(**overrides)


def _stop_flag() -> Callable[[], bool]:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop.is_set


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from seedloop.embedded import EmbeddedStack, redis_process

    should_stop = _stop_flag()
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
            should_stop=_stop_flag(),
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


def cmd_worker(settings: Settings) -> int:
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
        service.run_forever(settings.optimizer_interval_s, should_stop=_stop_flag())
    finally:
        server.stop()
    return 0


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop import runtime
    from seedloop.report import build_report, report_markdown

    report = build_report(settings, runtime.scenario_of(settings))
    print(json.dumps(report, indent=2) if args.json else report_markdown(report))
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from stream_processors.attribution.paths import PathFormatError, run_attribute

    try:
        print(run_attribute(args.paths, args.model, args.json))
    except (PathFormatError, FileNotFoundError) as exc:
        print(f"seedloop attribute: {exc}", file=sys.stderr)
        return 2
    return 0


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _seed_list(text: str) -> list[int]:
    from stream_processors.optimizer.evaluate import parse_seeds

    return parse_seeds(text)


# Progress messages per seed: 9 policy runs (5 policies, 4 of them shocked too), the evidence bound,
# the lever headroom (and plots).
_EVAL_STEPS_PER_SEED = 11


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stream_processors.optimizer.evaluate import EvalConfig, format_evaluations, run_evaluate_seeds

    seeds = args.seeds or [settings.seed]
    err = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        if err.is_terminal:
            # On a terminal a bar (it tells how long is left); elsewhere one line per step on stderr.
            bar = stack.enter_context(
                Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True,
                )
            )
            task = bar.add_task("evaluating", total=_EVAL_STEPS_PER_SEED * len(seeds))

            def progress(msg: str) -> None:
                if "plots" not in msg:
                    bar.update(task, advance=1, description=msg)
        else:

            def progress(msg: str) -> None:
                print(f"seedloop evaluate: {msg}", file=sys.stderr, flush=True)

        if not err.is_terminal:
            progress(f"{len(seeds)} seed(s) x 9 runs of {args.days:g} simulated day(s), {args.processes} process(es)")
        out = run_evaluate_seeds(
            settings.seeds_dir,
            args.json_path,
            args.plots,
            days=args.days,
            seeds=seeds,
            workers=args.processes,
            cfg=EvalConfig(attribution_scope=settings.attribution_scope, volume=args.volume),
            progress=progress,
        )
    print(format_evaluations(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from seedloop.bench import format_bench, run_bench
        from seedloop.embedded import embedded_problem

        if problem := embedded_problem():
            print(f"seedloop bench: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        configure_logging("console", "WARNING")
        result = run_bench(
            args.json_path, quick=args.quick, peers=args.peers, progress=lambda msg: print(msg, file=sys.stderr)
        )
        print(format_bench(result))
        return 0
    if args.command == "evaluate":
        configure_logging("console", "WARNING")
        return cmd_evaluate(settings_from(args), args)
    if args.command == "attribute":
        configure_logging("console", "WARNING")
        return cmd_attribute(args)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"seedloop: invalid settings: {_settings_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format, settings.log_level, secrets_of(settings))
    if args.command in ("stack", "soak") or (
        args.command == "demo" and (settings.kafka_bootstrap_servers is None or settings.redis_url is None)
    ):
        from seedloop.embedded import embedded_problem

        # The embedded services are an optional extra (not in the production image): say so in one line.
        if problem := embedded_problem():
            print(f"seedloop {args.command}: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command == "demo":
        from seedloop.demo import run_demo

        return _reporting_service_errors(settings, lambda: run_demo(settings, args))
    if args.command == "stack":
        return cmd_stack(settings, args)
    if args.command == "soak":
        from seedloop.soak import run_soak

        result = run_soak(settings, args.duration, args.workers, args.sample, args.json_path)
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
        return 0 if result["lost"] == 0 else 1
    if settings.kafka_bootstrap_servers is None or settings.redis_url is None:
        print(
            "seedloop: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL (or run `seedloop stack` and export its "
            "output, or use `seedloop demo`)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    handlers: dict[str, Callable[[], int]] = {
        "simulate": lambda: cmd_simulate(settings, args),
        "worker": lambda: cmd_worker(settings),
        "optimize": lambda: cmd_optimize(settings, args),
        "report": lambda: cmd_report(settings, args),
    }

    def run() -> int:
        # simulate only produces: it needs Kafka, and a REDIS_URL that parses (checked anyway).
        preflight.preflight(settings, kafka=True, redis_needed=args.command != "simulate")
        return handlers[args.command]()

    return _reporting_service_errors(settings, run)


# librdkafka's codes for "the broker cannot be used from here": reported as one line; any other
# KafkaException is a bug or an unusual broker state, and keeps its traceback.
_KAFKA_SERVICE_CODES = frozenset({
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._SSL,
})


def _reporting_service_errors(settings: Settings, command: Callable[[], int]) -> int:
    """Run `command`; a service it cannot use (at the preflight check or later) becomes one
    CRITICAL line and its exit code (seedloop/preflight.py), never a traceback: an operator reads
    the cause at once, and log pipelines can parse it (one JSON record with --log-format json)."""
    try:
        return command()
    except preflight.ServiceError as exc:
        return preflight.report(exc.problems, settings)
    except (RedisConnectionError, RedisTimeoutError) as exc:  # AuthenticationError included
        log.debug("Redis failed", exc_info=True)
        return preflight.report([preflight.redis_problem(settings, exc)], settings)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not isinstance(err, KafkaError) or err.code() not in _KAFKA_SERVICE_CODES:
            raise
        log.debug("Kafka failed", exc_info=True)
        return preflight.report([preflight.kafka_problem(settings, exc)], settings)


def _settings_error(exc: ValidationError) -> str:
    """pydantic's errors without their `input_value` (which can be a password or a whole REDIS_URL),
    each naming the environment variable to fix."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{_env_name(field)}: {msg}" if field else msg)
    return redact_text("; ".join(parts), _environment_secrets())


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"SEEDLOOP_{field.upper()}" if info is not None else field


def _environment_secrets() -> set[str]:
    """Secret values in the environment, for when no Settings object could be built."""
    found: set[str] = set()
    for key, value in os.environ.items():
        if key in ("REDIS_URL", "SEEDLOOP_REDIS_URL"):
            found |= url_secrets(value)
        elif is_secret_key(key) and value:
            found.add(value)
    return found
