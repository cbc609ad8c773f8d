"""One round's observation of campaign c1's feed channel with defaults, for the controller's tests."""

from __future__ import annotations

from stream_processors.optimizer.control_types import Observation


def obs(**kw: object) -> Observation:
    base: dict[str, object] = dict(
        campaign_id="c1",
        channel="feed",
        target_kind="cpa",
        target=100.0,
        bid=200.0,
        bid_floor=50.0,
        bid_cap=800.0,
        spend=1000.0,
        conversions=20.0,
        gmv=0.0,
    )
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]
