"""The bench's baseline: a stock Faust agent that only counts, with the worker's broker settings.
Run as a child by the drain phase (`python -m seedloop.bench_baseline ...`, bench_drain.start_baseline);
a timer (not the agent) writes the count to Redis, so the measurement adds nothing per event."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from seedloop.bench_drain import SAMPLE_S
from seedloop.topics import ACTIONS
from stream_processors.faust_transport import FAUST_FETCH_MAX_WAIT_MS, consumer_app_options, install_transport


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import faust
    import redis.asyncio as aioredis

    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        **consumer_app_options(args.rebalance_timeout, "seedloop-bench-baseline-"),
        topic_partitions=args.partitions,
        web_enabled=False,
    )
    if args.fetch_max_wait_ms is not None or args.eager_delivery:
        # The worker's consumer, with only what was asked for; otherwise Faust's own transport.
        fetch_max_wait_ms = args.fetch_max_wait_ms
        if fetch_max_wait_ms is None:
            fetch_max_wait_ms = FAUST_FETCH_MAX_WAIT_MS
        transport = install_transport(
            app, fetch_max_wait_ms=fetch_max_wait_ms, eager_delivery=args.eager_delivery
        )
        if args.eager_delivery and not transport.eager_delivery:
            raise SystemExit("eager delivery does not apply to the installed Faust")
    topics = app.topic(*(f"{args.prefix}.{a}" for a in ACTIONS), value_serializer="raw", key_serializer="raw")
    counted = [0]

    @app.agent(topics)
    async def count(stream: Any) -> None:
        async for _ in stream:
            counted[0] += 1

    client = aioredis.Redis.from_url(args.redis)

    @app.timer(SAMPLE_S / 2)
    async def report() -> None:
        await client.set(args.counter_key, counted[0])

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
