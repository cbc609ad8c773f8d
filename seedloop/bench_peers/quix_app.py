"""A quixstreams 3.x application doing the bench peers' job, written the way its docs suggest.

The job (the same in plain_loop.py): every user's last view (its campaign) is kept, here in the
app's state store (RocksDB, changelogged to Kafka: quixstreams' defaults); a checkout is credited
last-touch to the campaign of that view; per-campaign checkout counts and value sums are flushed
to Redis once a second. The four action topics are keyed by user_id and co-partitioned, so the
four dataframes are concatenated and the state is per message key (the user).

quixstreams' run loop has no timer, so a daemon thread does what the Faust baseline's timer does:
it writes the processed-events counter the bench samples (every 25 ms) and flushes the sums
(every second). The processing path takes the lock only on checkouts.

Standalone on purpose (quixstreams, orjson, redis only): quixstreams pins confluent-kafka < 2.13,
so this runs from its own virtual environment, as a script.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from quixstreams import Application, State

ACTIONS = ("view", "follow", "add_to_cart", "checkout")
COUNTER_S = 0.025
FLUSH_S = 1.0


class Totals:
    """Events processed, and per-campaign sums not yet flushed (swapped out under the lock)."""

    def __init__(self) -> None:
        self.processed = 0
        self.lock = threading.Lock()
        self.count: dict[str, int] = {}
        self.value: dict[str, int] = {}

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        with self.lock:
            out = self.count, self.value
            self.count, self.value = {}, {}
        return out


def reporter(totals: Totals, client: redis.Redis, counter_key: str, sums_key: str) -> None:
    next_flush = time.monotonic() + FLUSH_S
    while True:
        time.sleep(COUNTER_S)
        with client.pipeline(transaction=False) as pipe:
            if time.monotonic() >= next_flush:
                next_flush += FLUSH_S
                count, value = totals.take()
                for campaign, n in count.items():
                    pipe.hincrby(sums_key, f"{campaign}:checkouts", n)
                    pipe.hincrby(sums_key, f"{campaign}:value_minor", value[campaign])
            pipe.set(counter_key, totals.processed)
            pipe.execute()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="quix_app")
    for name in (
        "--bootstrap",
        "--redis",
        "--prefix",
        "--group",
        "--counter-key",
        "--sums-key",
        "--state-dir",
    ):
        ap.add_argument(name, required=True)
    # librdkafka properties for the consumer group (bench_peers.runner.group_timeouts), as JSON
    ap.add_argument("--group-config", type=json.loads, required=True)
    args = ap.parse_args(argv)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
        consumer_extra_config=args.group_config,
    )
    totals = Totals()

    def process(event: dict[str, Any], state: State) -> None:
        action = event["action"]
        if action == "view":
            state.set("campaign", event["campaign_id"])
        elif action == "checkout":
            campaign = state.get("campaign")
            if campaign is not None:
                with totals.lock:
                    totals.count[campaign] = totals.count.get(campaign, 0) + 1
                    totals.value[campaign] = totals.value.get(campaign, 0) + event["value_minor"]
        totals.processed += 1

    frames = [app.dataframe(app.topic(f"{args.prefix}.{a}", value_deserializer="json")) for a in ACTIONS]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.update(process, stateful=True)

    client = redis.Redis.from_url(args.redis)
    threading.Thread(
        target=reporter, args=(totals, client, args.counter_key, args.sums_key), daemon=True
    ).start()
    app.run()  # until SIGTERM/SIGINT (quixstreams stops gracefully on both)
    return 0


if __name__ == "__main__":
    sys.exit(main())
