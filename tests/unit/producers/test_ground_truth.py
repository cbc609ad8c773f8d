from __future__ import annotations

from producers.ground_truth import GroundTruth, OrderCause, true_incremental_gmv
from producers.holdout import in_holdout

DAY = 86_400


def _users(share: float) -> tuple[str, str]:
    """One user held out of campaign c1 at `share`, one exposed."""
    ids = [f"u{u:07d}" for u in range(100)]
    return next(u for u in ids if in_holdout("c1", u, share)), next(u for u in ids if not in_holdout("c1", u, share))


def test_first_view_is_the_earliest_ghost_or_real_view_whatever_the_order_recorded() -> None:
    truth = GroundTruth(users=10)
    truth.record_view("c1", 3, 500.0, ghost=False)
    truth.record_view("c1", 3, 200.0, ghost=True)
    truth.record_view("c1", 3, 900.0, ghost=False)
    assert truth.first_view_at("c1", "u0000003") == 200.0
    assert truth.first_view_at("c1", "u0000004") is None
    assert truth.first_view_at("c2", "u0000003") is None
    assert (truth.views["c1"], truth.ghost_views["c1"]) == (2, 1)
    assert truth.first_exposures("c1") == {3: 200.0}


def test_orders_are_totalled_by_cause_organic_under_the_audiences_campaign() -> None:
    truth = GroundTruth(users=10)
    truth.record_order("o-1", OrderCause("u0000001", "c1", "kol", 10.0, 500), "c1")
    truth.record_order("o-2", OrderCause("u0000002", None, None, 20.0, 300), "c1")
    assert (truth.caused_checkouts, truth.caused_gmv_minor) == ({"c1": 1}, {"c1": 500})
    assert (truth.organic_checkouts, truth.organic_gmv_minor) == ({"c1": 1}, {"c1": 300})
    assert truth.orders["o-2"].campaign_id is None


def test_true_incremental_gmv_counts_caused_orders_of_exposed_users_in_the_window_by_cohort() -> None:
    held, exposed = _users(0.5)
    truth = GroundTruth(users=100, holdout_share=0.5)
    hi, ei = int(held[1:]), int(exposed[1:])
    truth.record_view("c1", ei, DAY + 100.0, ghost=False)  # cohort: day 1
    truth.record_view("c1", hi, DAY + 100.0, ghost=True)
    window = 2 * DAY

    def order(event_id: str, user: str, campaign: str | None, at: float, gmv: int) -> None:
        truth.record_order(event_id, OrderCause(user, campaign, "kol" if campaign else None, at, gmv), "c1")

    order("o-1", exposed, "c1", DAY + 200.0, 1_000)  # counted
    order("o-2", exposed, "c1", DAY + 100.0 + window, 2_000)  # the window's last instant: counted
    order("o-3", exposed, "c1", DAY + 101.0 + window, 4_000)  # past the window
    order("o-4", exposed, None, DAY + 300.0, 8_000)  # organic: no campaign caused it
    order("o-5", exposed, "c1", 4 * DAY, 16_000)  # past the run's end below
    # a held-out user's order cannot be caused by c1; recorded anyway, it must not count
    order("o-6", held, "c1", DAY + 200.0, 32_000)
    out = true_incremental_gmv(truth, DAY, window, until=DAY + 101.0 + window)
    assert out == {("c1", DAY): 3_000}
