"""`seedloop`: the command line. Every flag also has an environment variable (see README).

The grammar is seedloop/cli_parser.py, what each command does seedloop/cli_commands.py; this
module decides which command runs with which services, and turns a service it cannot use into
one line and an exit code (seedloop/preflight.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException
from pydantic import AliasChoices, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seedloop import cli_commands, preflight
from seedloop.cli_parser import build_parser, settings_from
from seedloop.logs import configure_logging
from seedloop.preflight import EXIT_CONFIG
from seedloop.redact import is_secret_key, redact_text, secrets_of, url_secrets
from seedloop.settings import Settings

__all__ = ["build_parser", "main", "settings_from"]

log = logging.getLogger("seedloop.cli")

Command = Callable[[Settings, argparse.Namespace], int]

# Commands against the configured KAFKA_BOOTSTRAP_SERVERS and REDIS_URL, checked before they run.
_SERVICE_COMMANDS: dict[str, Command] = {
    "simulate": cli_commands.cmd_simulate,
    "worker": cli_commands.cmd_worker,
    "optimize": cli_commands.cmd_optimize,
    "report": cli_commands.cmd_report,
}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        return _invalid_settings(exc)
    configure_logging("console", "WARNING")
    return cli_commands.cmd_evaluate(settings, args)


def _invalid_settings(exc: ValidationError) -> int:
    print(f"seedloop: invalid settings: {_settings_error(exc)}", file=sys.stderr)
    return EXIT_CONFIG


# Commands that need neither services nor the SEEDLOOP_* logging settings.
_OFFLINE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bench": cli_commands.cmd_bench,
    "evaluate": _cmd_evaluate,
    "attribute": cli_commands.cmd_attribute,
}


def _cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from seedloop.demo import run_demo

    return _reporting_service_errors(settings, lambda: run_demo(settings, args))


# Commands that start (or, demo, may start) the embedded broker and Redis themselves.
_EMBEDDED_COMMANDS: dict[str, Command] = {
    "demo": _cmd_demo,
    "stack": cli_commands.cmd_stack,
    "soak": cli_commands.cmd_soak,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in _OFFLINE_COMMANDS:
        return _OFFLINE_COMMANDS[args.command](args)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        return _invalid_settings(exc)
    configure_logging(settings.log_format, settings.log_level, secrets_of(settings))
    services_set = settings.kafka_bootstrap_servers is not None and settings.redis_url is not None
    if args.command in ("stack", "soak") or (args.command == "demo" and not services_set):
        from seedloop.embedded import embedded_problem

        # The embedded services are an optional extra (not in the production image): say so in one line.
        if problem := embedded_problem():
            print(f"seedloop {args.command}: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    if args.command in _EMBEDDED_COMMANDS:
        return _EMBEDDED_COMMANDS[args.command](settings, args)
    if not services_set:
        print(
            "seedloop: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL (or run `seedloop stack` and export its "
            "output, or use `seedloop demo`)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    command = _SERVICE_COMMANDS[args.command]

    def run() -> int:
        # simulate only produces: it needs Kafka, and a REDIS_URL that parses (checked anyway).
        preflight.preflight(settings, kafka=True, redis_needed=args.command != "simulate")
        return command(settings, args)

    return _reporting_service_errors(settings, run)


# librdkafka's codes for "the broker cannot be used from here": reported as one line; any other
# KafkaException is a bug or an unusual broker state, and keeps its traceback.
_KAFKA_SERVICE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._SSL,
    }
)


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
