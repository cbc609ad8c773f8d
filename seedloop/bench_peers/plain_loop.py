"""A plain confluent-kafka loop doing the bench peers' job, as a user would write it by hand.

The job (the same in quix_app.py): every user's last view (its campaign) is kept; a checkout is
credited last-touch to the campaign of that view: per-campaign checkout counts and value sums.
Here: `consume(1000)`, orjson, a dict for the state, and one Redis pipeline per batch (the batch's
sums plus the processed-events counter the bench samples). Offsets: librdkafka's auto-commit.

Standalone on purpose (confluent_kafka, orjson, redis only): run as a script by the bench.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import orjson
import redis
from confluent_kafka import Consumer

ACTIONS = ("view", "follow", "add_to_cart", "checkout")
BATCH = 1000


def group_timeouts(rebalance_timeout_s: float) -> dict[str, int]:
    """The group settings the Faust apps get (stream_processors.worker.consumer_app_options):
    10 s session, 1 s heartbeat. librdkafka sends max.poll.interval.ms as the JoinGroup rebalance
    timeout and wants it >= the session timeout; with its 300 s default the broker may hold a new
    group's first join for a long time (outside the measured window, but it slows every run)."""
    session_ms = int(max(10.0, rebalance_timeout_s) * 1000)
    return {
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": session_ms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plain_loop")
    for name in ("--bootstrap", "--redis", "--prefix", "--group", "--counter-key", "--sums-key"):
        ap.add_argument(name, required=True)
    ap.add_argument("--rebalance-timeout", type=float, default=3.0)
    args = ap.parse_args(argv)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            **group_timeouts(args.rebalance_timeout),
        }
    )
    consumer.subscribe([f"{args.prefix}.{a}" for a in ACTIONS])
    client = redis.Redis.from_url(args.redis)
    running = [True]

    def stop(signum: int, frame: FrameType | None) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    last_view: dict[str, str] = {}  # user -> campaign of their last view
    processed = 0
    try:
        while running[0]:
            msgs = consumer.consume(BATCH, timeout=0.1)
            if not msgs:
                continue
            count: dict[str, int] = {}
            value: dict[str, int] = {}
            for msg in msgs:
                if msg.error() is not None:
                    continue
                event = orjson.loads(msg.value())  # type: ignore[arg-type]
                action = event["action"]
                if action == "view":
                    last_view[event["user_id"]] = event["campaign_id"]
                elif action == "checkout":
                    campaign = last_view.get(event["user_id"])
                    if campaign is not None:
                        count[campaign] = count.get(campaign, 0) + 1
                        value[campaign] = value.get(campaign, 0) + event["value_minor"]
            processed += len(msgs)
            with client.pipeline(transaction=False) as pipe:
                for campaign, n in count.items():
                    pipe.hincrby(args.sums_key, f"{campaign}:checkouts", n)
                    pipe.hincrby(args.sums_key, f"{campaign}:value_minor", value[campaign])
                pipe.set(args.counter_key, processed)
                pipe.execute()
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
