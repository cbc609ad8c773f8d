from __future__ import annotations

from pathlib import Path

from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, load_truth
from schemas.events import UserAction, View

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
