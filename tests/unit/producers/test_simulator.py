from __future__ import annotations

from pathlib import Path

import pytest

from producers.ground_truth import true_incremental_gmv
from producers.holdout import in_holdout
from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, load_truth
from schemas.events import Follow, UserAction, View

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
HOURS = 3 * 3600.0


def _run(seed: int, bids: dict[tuple[str, str], float] | None = None) -> tuple[Simulator, list[UserAction]]:
    scenario = load_scenario(SEEDS)
    scheduler = AdScheduler(scenario)
    scheduler.bids.update(bids or {})
    sim = Simulator(scenario, TrafficModel(load_truth(SEEDS)), scheduler, SimConfig(seed=seed, users=5_000))
    return sim, sim.advance(sim.now + HOURS)


def test_same_seed_and_bids_same_events() -> None:
    _, a = _run(7)
    _, b = _run(7)
    assert a and [e.model_dump() for e in a] == [e.model_dump() for e in b]
    _, c = _run(8)
    assert [e.model_dump() for e in a] != [e.model_dump() for e in c]


def test_one_campaigns_bids_leave_the_others_draws_alone() -> None:
    scenario = load_scenario(SEEDS)
    moved = scenario.campaigns[0]
    bids = {(moved.campaign_id, ch): min(moved.bid_cap, b * 1.6) for ch, b in moved.channels.items()}
    sim_a, a = _run(7)
    sim_b, b = _run(7, bids)
    others = [c.campaign_id for c in scenario.campaigns[1:]]
    # ground truth per campaign: the same for every campaign but the one whose bids moved
    for cid in others:
        assert sim_a.truth.views.get(cid) == sim_b.truth.views.get(cid)
        assert sim_a.truth.caused_checkouts.get(cid) == sim_b.truth.caused_checkouts.get(cid)
        assert sim_a.truth.caused_gmv_minor.get(cid) == sim_b.truth.caused_gmv_minor.get(cid)
    assert sim_a.truth.views.get(moved.campaign_id) != sim_b.truth.views.get(moved.campaign_id)
    views_a = [e.model_dump(exclude={"event_id"}) for e in a if getattr(e, "campaign_id", None) in others]
    views_b = [e.model_dump(exclude={"event_id"}) for e in b if getattr(e, "campaign_id", None) in others]
    assert views_a and views_a == views_b


def test_a_bid_change_changes_the_draws_of_its_own_minutes_only() -> None:
    """Common random numbers: the draws of a minute depend on the seed, the campaign, the channel
    and the minute, so a campaign's views after a temporary bid change are those of a run without it."""
    scenario = load_scenario(SEEDS)
    c = scenario.campaigns[0]
    ch = next(iter(c.channels))
    runs = []
    for moved in (False, True):
        scheduler = AdScheduler(scenario)
        sim = Simulator(scenario, TrafficModel(load_truth(SEEDS)), scheduler, SimConfig(seed=7, users=5_000))
        start = sim.now
        if moved:
            scheduler.bids[(c.campaign_id, ch)] = c.channels[ch] * 1.5
        events = sim.advance(start + 3600.0)
        scheduler.bids[(c.campaign_id, ch)] = c.channels[ch]
        events += sim.advance(start + HOURS)
        runs.append(
            [
                e.model_dump(exclude={"event_id"})
                for e in events
                if isinstance(e, View) and e.campaign_id == c.campaign_id and e.channel == ch
            ]
        )
    hour = SimConfig().start_ts + 3600.0
    first_hour = [len([v for v in r if v["event_time"].timestamp() < hour]) for r in runs]
    assert first_hour[0] != first_hour[1]
    later = [[v for v in r if v["event_time"].timestamp() >= hour] for r in runs]
    assert later[0] and later[0] == later[1]


def _sim(**cfg: object) -> Simulator:
    scenario = load_scenario(SEEDS)
    sim_cfg = SimConfig(seed=7, users=5_000, **cfg)  # type: ignore[arg-type]
    return Simulator(scenario, TrafficModel(load_truth(SEEDS)), AdScheduler(scenario), sim_cfg)


def _views(events: list[UserAction]) -> list[View]:
    return [e for e in events if isinstance(e, View)]


def test_held_out_users_get_ghost_views_that_pay_nothing_and_cause_nothing() -> None:
    sim = _sim(holdout_share=0.3)
    events = sim.advance(sim.now + HOURS)
    views = _views(events)
    ghosts = [v for v in views if v.held_out]
    assert ghosts and len(ghosts) < len(views)
    for v in views:
        assert v.held_out == in_holdout(v.campaign_id, v.user_id, 0.3)
    assert all(v.cost_minor == 0 and not v.engaged for v in ghosts)
    assert all(v.cost_minor > 0 for v in views if not v.held_out)
    # spend is the real views' cost, in the scheduler and in the truth alike
    for c in sim.scenario.campaigns:
        cost = sum(v.cost_minor for v in views if v.campaign_id == c.campaign_id)
        assert sim.truth.spend_minor.get(c.campaign_id, 0) == cost
        assert sim.scheduler.spend_today_minor.get(c.campaign_id, 0) == cost
        assert sim.truth.ghost_views.get(c.campaign_id, 0) == sum(
            1 for v in ghosts if v.campaign_id == c.campaign_id
        )
    # no order is caused by a campaign whose holdout holds its buyer, and no follow or cart of a
    # user follows only ghost views
    caused = [o for o in sim.truth.orders.values() if o.campaign_id is not None]
    assert caused and not any(in_holdout(o.campaign_id, o.user_id, 0.3) for o in caused)
    seen = {v.user_id for v in views if not v.held_out}
    assert all(e.user_id in seen for e in events if isinstance(e, Follow))


def test_the_holdout_suppresses_outcomes_and_leaves_every_draw_alone() -> None:
    """Common random numbers across holdout shares: the same impressions go to the same users at
    the same times, and an exposed user's outcomes are the same whatever the share (budgets do not
    bind in these night hours, so the unspent cost of ghosts buys nothing yet)."""
    open_, held = _sim(), _sim(holdout_share=0.3)
    a, b = open_.advance(open_.now + HOURS), held.advance(held.now + HOURS)
    fields = {"event_id", "cost_minor", "engaged", "held_out"}
    assert [v.model_dump(exclude=fields) for v in _views(a)] == [v.model_dump(exclude=fields) for v in _views(b)]

    def exposed(sim: Simulator) -> list[tuple[object, ...]]:
        """Organic orders and those caused in users outside the holdout (at the larger share)."""
        return sorted(
            (o.user_id, o.campaign_id, o.channel, o.at, o.gmv_minor)
            for o in sim.truth.orders.values()
            if o.campaign_id is None or not in_holdout(o.campaign_id, o.user_id, 0.3)
        )

    assert exposed(held) == exposed(open_)
    assert len(held.truth.orders) < len(open_.truth.orders)


def test_first_views_and_true_incremental_gmv_come_from_the_public_record() -> None:
    sim = _sim(holdout_share=0.2)
    events = sim.advance(sim.now + HOURS)
    first: dict[tuple[str, str], float] = {}
    for v in _views(events):
        key = (v.campaign_id, v.user_id)
        first[key] = min(first.get(key, v.event_ts), v.event_ts)
    assert first
    assert all(sim.truth.first_view_at(cid, uid) == pytest.approx(at, abs=1e-3) for (cid, uid), at in first.items())
    unseen = next(f"u{u:07d}" for u in range(5_000) if ("c_pd_feed", f"u{u:07d}") not in first)
    assert sim.truth.first_view_at("c_pd_feed", unseen) is None
    # within a week's window every caused order that happened counts, each in its buyer's cohort
    truth = true_incremental_gmv(sim.truth, 3600, 7 * 86_400.0, until=sim.now)
    happened = [o for o in sim.truth.orders.values() if o.campaign_id is not None and o.at <= sim.now]
    assert happened and sum(truth.values()) == sum(o.gmv_minor for o in happened)
    assert {cohort for _, cohort in truth} <= {int(at // 3600) * 3600 for at in first.values()}


def test_a_holdout_share_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="holdout_share"):
        SimConfig(holdout_share=1.0)
    with pytest.raises(ValueError, match="holdout_share"):
        SimConfig(holdout_share=-0.1)
