"""A plain confluent-kafka loop doing the bench peers' job, as a user would write it by hand.

The job (the same in quix_app.py): every user's last view (its campaign) is kept; a checkout is
credited last-touch to the campaign of that view: per-campaign checkout counts and value sums.
Here: `consume(1000)`, orjson, a dict for the state, and one Redis pipeline per batch (the batch's
sums plus the processed-events counter the bench samples). Offsets: librdkafka's auto-commit.

Standalone on purpose (confluent_kafka, orjson, redis only): run as a script by the bench.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import orjson
import redis
from confluent_kafka import Consumer

ACTIONS = ("view", "follow", "add_to_cart", "checkout")
BATCH = 1000


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plain_loop")
    for name in ("--bootstrap", "--redis", "--prefix", "--group", "--counter-key", "--sums-key"):
        ap.add_argument(name, required=True)
    # librdkafka properties for the consumer group (bench_peers.runner.group_timeouts), as JSON
    ap.add_argument("--group-config", type=json.loads, required=True)
    args = ap.parse_args(argv)

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            **args.group_config,
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
