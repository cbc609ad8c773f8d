"""The command line's grammar: `seedloop --help`, every subcommand's flags, and the settings the
flags override. Parsing only: what each command does is in seedloop/cli_commands.py."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from seedloop.settings import Settings
from stream_processors.attribution.models import MODEL_NAMES

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

# Flags that add their argument to a parser or to one of its groups.
FlagContainer = argparse.ArgumentParser | argparse._ArgumentGroup


def _seed_flag(parser: FlagContainer) -> None:
    parser.add_argument("--seed", type=int, help="random seed of the simulation (SEEDLOOP_SEED, default 7)")


def _seeds_dir_flag(parser: FlagContainer) -> None:
    parser.add_argument(
        "--seeds-dir",
        type=Path,
        help="scenario folder (SEEDLOOP_SEEDS_DIR, default: the seeds shipped with seedloop)",
    )


def _logging_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    g = parser.add_argument_group("common settings (flags override SEEDLOOP_* environment variables)")
    g.add_argument("--log-format", choices=["json", "console"], help="SEEDLOOP_LOG_FORMAT (default console)")
    g.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="SEEDLOOP_LOG_LEVEL (default INFO)"
    )
    return g


def _common_flags(parser: argparse.ArgumentParser) -> None:
    g = _logging_flags(parser)
    g.add_argument(
        "--topic-prefix", help="topic and Redis key prefix (SEEDLOOP_TOPIC_PREFIX, default seedloop)"
    )
    g.add_argument("--partitions", type=int, help="partitions per topic (SEEDLOOP_PARTITIONS, default 4)")
    _seeds_dir_flag(g)
    g.add_argument(
        "--connect-timeout",
        type=float,
        dest="connect_timeout_s",
        help="seconds to wait for Kafka and Redis at start before giving up (SEEDLOOP_CONNECT_TIMEOUT_S, default 10)",
    )


def _simulation_and_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that runs the simulation: its own, then the common settings."""
    _seed_flag(parser)
    parser.add_argument("--rate", type=float, help="max events/s produced (SEEDLOOP_RATE, default 2000)")
    parser.add_argument(
        "--speed",
        type=float,
        dest="sim_speed",
        help="simulated seconds per real second (SEEDLOOP_SIM_SPEED, default 720)",
    )
    parser.add_argument("--users", type=int, help="simulated user population (SEEDLOOP_USERS)")
    _common_flags(parser)


def _json_path_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", type=Path, dest="json_path", help=f"write {what} as JSON to this file")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _holdout_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 0.5, got {text!r}")
    return value


def _seed_list(text: str) -> list[int]:
    from stream_processors.optimizer.evaluate import parse_seeds

    return parse_seeds(text)


def _demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=60.0, help="seconds of simulation (default 60)")
    p.add_argument("--report-dir", type=Path, default=Path("reports/demo"), help="where to write the report")
    p.add_argument("--workers", type=int, default=2, help="Faust worker processes (default 2)")
    p.add_argument("--no-live", action="store_true", help="no live table (logs only)")
    _simulation_and_common_flags(p)


def _stack_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kafka",
        choices=("embedded", "apache"),
        default="embedded",
        help="which broker to start (default embedded)",
    )
    p.add_argument(
        "--kafka-nodes",
        type=int,
        default=1,
        choices=(1, 3),
        help="Apache Kafka nodes, each broker and controller (default 1; 3: replication factor 3, "
        "min.insync.replicas 2)",
    )
    p.add_argument(
        "--kafka-data",
        type=Path,
        default=None,
        help="Apache Kafka's data folder, kept after exit (default: a temporary folder, removed)",
    )
    # stack only starts services: topics, partitions, seeds and connect timeouts are the business
    # of the commands that use them, so it offers the logging flags alone.
    _logging_flags(p)


def _simulate_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--events", type=int, help="stop after this many events")
    g.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="print acknowledged totals as JSON on stdout")
    p.add_argument("--no-bids", action="store_true", help="do not read bid adjustments (open loop)")
    _simulation_and_common_flags(p)


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--worker-id", help="name in logs and dead-letter headers (SEEDLOOP_WORKER_ID)")
    p.add_argument(
        "--web-port", type=int, help="HTTP port for /metrics and the API (SEEDLOOP_WEB_PORT, default 6066)"
    )
    _common_flags(p)


def _optimize_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--once", action="store_true", help="run one control round, print its decisions as JSON, exit"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and record, publish nothing (SEEDLOOP_OPTIMIZER_MODE=dry_run)",
    )
    p.add_argument(
        "--port",
        type=int,
        dest="optimizer_port",
        help="HTTP port for /metrics, /api/bids, /api/decisions and control (SEEDLOOP_OPTIMIZER_PORT, default 6067)",
    )
    _common_flags(p)


def _report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON instead of a Markdown table")
    _common_flags(p)


def _evaluate_flags(p: argparse.ArgumentParser) -> None:
    _json_path_flag(p, "the results")
    p.add_argument(
        "--plots", type=Path, help="write PNG charts (bids, efficiency, spend vs plan) to this folder"
    )
    p.add_argument("--days", type=float, default=2.0, help="simulated days (default 2)")
    p.add_argument("--processes", type=int, default=2, help="policies run in parallel processes (default 2)")
    _seed_flag(p)
    p.add_argument(
        "--seeds",
        type=_seed_list,
        help="several random seeds, comma-separated (e.g. 7,11,13): the evaluation once per seed, then a "
        "summary across seeds (median and worst); --json then writes {seeds: {...}, summary: {...}}",
    )
    _seeds_dir_flag(p)
    p.add_argument(
        "--volume",
        type=_positive_float,
        default=1.0,
        help="market size: ad inventory, daily budgets and users times this, rates and targets unchanged "
        "(default 1); shows how settling depends on the evidence each control round carries",
    )
    p.add_argument(
        "--holdout-share",
        type=_holdout_share,
        default=0.05,
        help="share of each campaign's users held out of its ads (ghost views) to measure conversion lift, "
        "0 to 0.5 (default 0.05: the cheapest share whose lift intervals cover the truth on >= 90%% of "
        "campaign-days on seeds 7-23)",
    )


def _bench_flags(p: argparse.ArgumentParser) -> None:
    _json_path_flag(p, "the figures")
    p.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    p.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also drain with a quixstreams app (from its own venv, .venv/bench-peers or "
        "SEEDLOOP_BENCH_QUIX_PYTHON) and a plain confluent-kafka loop (default: on; off with --quick)",
    )


def _soak_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--sample", type=float, default=30.0, help="seconds between samples (default 30)")
    _json_path_flag(p, "the result")
    _simulation_and_common_flags(p)


def _attribute_flags(p: argparse.ArgumentParser) -> None:
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


class Subcommand(NamedTuple):
    name: str
    summary: str  # the line in `seedloop --help`
    description: str  # the paragraph of `seedloop NAME --help`
    add_flags: Callable[[argparse.ArgumentParser], None]


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "demo",
        "the whole closed loop on embedded services, with a live table and a report",
        "Start the embedded broker and Redis, workers, the optimizer and the simulator; "
        "show a live campaign table; at the end write DIR/report.json and DIR/report.md.",
        _demo_flags,
    ),
    Subcommand(
        "stack",
        "run a local broker and Redis until interrupted",
        "Starts a Kafka broker and a Redis server on free localhost ports and prints "
        "KAFKA_BOOTSTRAP_SERVERS=... and REDIS_URL=... lines to export. The broker is the embedded "
        "Tansu (memory only, starts at once) or, with --kafka apache, Apache Kafka in KRaft mode as JVM "
        "processes (needs Java 17+ and Maven the first time, which resolves its jars into "
        "~/.cache/seedloop; durable when --kafka-data names a folder kept between runs).",
        _stack_flags,
    ),
    Subcommand(
        "simulate",
        "produce simulated user actions to the configured broker",
        "Runs the seeded simulation against KAFKA_BOOTSTRAP_SERVERS. With --json, prints "
        "what the broker acknowledged.",
        _simulate_flags,
    ),
    Subcommand(
        "worker",
        "run one Faust attribution worker against the configured services",
        "Consumes the four action topics (view, follow, add_to_cart, checkout) of "
        "KAFKA_BOOTSTRAP_SERVERS as one member of the consumer group, attributes every conversion to "
        "the touches before it (six models) and applies each partition batch to REDIS_URL in one atomic "
        "call; undecodable or invalid events go to the dead-letter topic. Serves /metrics, /api/campaigns "
        "and /live on SEEDLOOP_WEB_HOST:--web-port. Run several for more throughput: the partitions are "
        "shared among them.",
        _worker_flags,
    ),
    Subcommand(
        "optimize",
        "run the bid optimizer against the configured services",
        "Every SEEDLOOP_OPTIMIZER_INTERVAL_S seconds reads each campaign's rolling figures "
        "from REDIS_URL, moves every channel's bid toward the campaign's CPA or ROAS target within its "
        "guardrails (learning phase, at most +-25% a round, floor and cap, pacing to the daily budget) "
        "and publishes each decision, with its reason, to <prefix>.bid_adjustments, where the ad "
        "scheduler picks it up. HTTP (metrics, bids, decisions, control) on SEEDLOOP_WEB_HOST:--port.",
        _optimize_flags,
    ),
    Subcommand(
        "report",
        "print the current campaign figures from Redis",
        "Reads the figures the workers applied to REDIS_URL and prints, per campaign, spend, "
        "views, follows, add-to-carts, checkouts, GMV, CPA, ROAS (last-touch) and the current bids, then "
        "loyalty per campaign and the totals, as a Markdown document (valid when piped: one table row per "
        "line), or with --json every attribution model's figures.",
        _report_flags,
    ),
    Subcommand(
        "evaluate",
        "compare static bids, the optimizer, the field's controllers and an oracle in a pure, "
        "faster-than-real-time simulation",
        "Runs the seeded scenario without Kafka or Redis, once per policy (static, optimizer, optimizer_lift, "
        "pid, pacing, oracle) plus a mid-run shock, and prints GMV, ROAS, settle rounds and pacing error per "
        "policy and campaign, attribution models against the simulator's causal truth, and conversion lift "
        "(holdout intervals against the true incremental GMV, the holdout's cost).",
        _evaluate_flags,
    ),
    Subcommand(
        "bench",
        "throughput, latency, memory and scale-out on embedded services, beside a stock Faust baseline",
        "Measures baseline_eps (a Faust agent that only counts), pipeline_eps, their ratio, "
        "latency p50/p99 at half the sustainable rate, producer_eps, worker RSS and Redis memory per user, "
        "and the two-worker scale-out factor, in one run, and beside them the peers a user would pick "
        "instead (a quixstreams app and a plain confluent-kafka loop doing last-touch attribution), each "
        "in events/s and events per CPU-second of the consumer with and without its Redis server's CPU. "
        "Prints a table; --json writes the figures.",
        _bench_flags,
    ),
    Subcommand(
        "soak",
        "sustained load on embedded services: memory, lag and completeness over time",
        "Produces at SEEDLOOP_RATE for --duration seconds through N workers, sampling worker RSS, "
        "Redis memory and lag; checks that processed + dead letters == produced.",
        _soak_flags,
    ),
    Subcommand(
        "attribute",
        "attribute exported journeys (path;total_conversions;... CSV)",
        "Runs one attribution model over journeys exported as CSV (the format of "
        "ChannelAttribution: path;total_conversions;total_conversion_value;total_null, a path being "
        "channels joined by '>') and prints the conversions and value credited to each channel. No "
        "Kafka or Redis needed.",
        _attribute_flags,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seedloop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_flags(sub.add_parser(command.name, help=command.summary, description=command.description))
    return parser


# Flags whose value overrides the setting of the same name (argparse's `dest` is the field name).
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
    """Settings from the environment, overridden by the flags given. (pydantic-settings' own CLI,
    `CliSettingsSource`, would add one flag per field at the top level, named after the
    environment variables, passwords included, instead of these subcommands; fed the parsed flags
    it gives the same Settings about six times more slowly.)"""
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in _FLAG_SETTINGS if getattr(args, k, None) is not None
    }
    if getattr(args, "dry_run", False):
        overrides["optimizer_mode"] = "dry_run"
    return Settings(**overrides)
