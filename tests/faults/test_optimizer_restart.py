"""The optimizer restarts between rounds: the new instance continues the same sequence of rounds
from Redis, so its decisions neither repeat nor contradict the old instance's, and the ad
scheduler that applies them (possibly twice, after its own restart) ends with the same bids."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable

import pytest
import redis

from producers.scheduler import AdScheduler
from schemas.codec import decode_bid_adjustment
from schemas.decisions import BidAdjustment
from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.faults.test_worker_crashes import assert_redis_equals_recount
from tests.integration.test_pipeline import produce_simulated, read_topic

# The subject is the optimizer's restart (rounds, decisions), not the broker: one service tier.
pytestmark = [pytest.mark.integration, pytest.mark.one_tier]

ROUNDS = 3


def read_bid_adjustments(
    settings: Settings, expected: int, timeout: float = 30
) -> list[tuple[int, int, BidAdjustment]]:
    """Every message of the topic as (partition, offset, decision), read without a consumer group."""
    return [
        (m.partition(), m.offset(), decode_bid_adjustment(m.value()))
        for m in read_topic(settings, "bid_adjustments", expected, timeout)
    ]


def test_restarted_optimizer_continues_rounds_without_duplicate_or_conflicting_decisions(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    start_worker()
    settings = settings.model_copy(update={"min_conversions": 1.0})  # leave the learning phase early
    scenario = runtime.scenario_of(settings)
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    events = produce_simulated(settings, sim_seconds=3 * 3600)
    wait_for(lambda: caught_up(settings, reader), 60, "the worker to apply the first stretch")

    first = runtime.optimizer_of(settings, scenario)
    before: list[BidAdjustment] = []
    for _ in range(ROUNDS):
        before += first.run_round()
    assert before, "the optimizer decided nothing: no figures?"
    # The restart: a new process knows nothing but what is in Redis. More traffic meanwhile.
    del first
    more = produce_simulated(settings, sim_seconds=3600, start_after=3 * 3600)
    wait_for(lambda: caught_up(settings, reader), 60, "the worker to apply the second stretch")
    second = runtime.optimizer_of(settings, scenario)
    after: list[BidAdjustment] = []
    for _ in range(ROUNDS):
        after += second.run_round()
    assert after

    published = read_bid_adjustments(settings, len(before) + len(after))
    assert len(published) == len(before) + len(after)
    ids = [d.decision_id for _, _, d in published]
    assert len(set(ids)) == len(ids), "a decision id was published twice"
    assert {d.decision_id for d in before}.isdisjoint(d.decision_id for d in after)
    assert min(d.round for d in after) > max(d.round for d in before), "the restart reused round numbers"

    # Per campaign and channel (one key, so one partition, in publish order): rounds strictly
    # increase across the restart, and each decision starts from the bid the previous one set.
    by_key: dict[tuple[str, str], list[BidAdjustment]] = defaultdict(list)
    for _, _, d in sorted(published, key=lambda x: (x[0], x[1])):
        by_key[(d.campaign_id, d.channel)].append(d)
    moved = 0
    for key, seq in by_key.items():
        assert len(seq) == 2 * ROUNDS, (key, [d.round for d in seq])
        for prev, nxt in itertools.pairwise(seq):
            assert nxt.round > prev.round, (key, prev.round, nxt.round)
            assert nxt.old_bid == prev.new_bid, (
                key,
                prev.decision_id,
                prev.new_bid,
                nxt.decision_id,
                nxt.old_bid,
            )
        last_before = [d for d in seq if d.round <= max(x.round for x in before)][-1]
        first_after = next(d for d in seq if d.round > max(x.round for x in before))
        assert first_after.old_bid == last_before.new_bid, key
        moved += sum(1 for d in seq if d.new_bid != d.old_bid)
    reasons = sorted({d.reason for _, _, d in published})
    print(f"{len(published)} decisions, {moved} moved a bid, reasons {reasons}")
    assert moved > 0, f"no bid moved ({reasons}): the continuity checks above prove little"

    # The scheduler applies the log, then (restarted, re-reading from the start) applies it again.
    decisions = [d for _, _, d in published]
    scheduler = AdScheduler(scenario)
    applied_once = sum(scheduler.apply(d) for d in decisions)
    bids_once = dict(scheduler.bids)
    assert sum(scheduler.apply(d) for d in decisions) == 0, "a replayed decision was applied again"
    assert scheduler.bids == bids_once
    shuffled = AdScheduler(scenario)
    for d in reversed(decisions):
        shuffled.apply(d)
    assert shuffled.bids == bids_once, "reordered delivery changed the outcome"
    assert applied_once == len(decisions)
    for (cid, ch), seq in by_key.items():
        c = scenario.campaign(cid)
        assert bids_once[(cid, ch)] == min(c.bid_cap, max(c.bid_floor, seq[-1].new_bid))
    # The optimizer's own record of the current bids agrees with what the scheduler ended with.
    assert {k: v for k, v in second.current_bids().items() if k in by_key} == {
        k: seq[-1].new_bid for k, seq in by_key.items()
    }
    assert_redis_equals_recount(settings, redis_client, events + more)
