from __future__ import annotations

from stream_processors.optimizer.efficiency import estimated_conversions
from tests.unit.stream_processors.optimizer.observations import obs


def test_carts_lower_the_variance_of_the_conversion_estimate() -> None:
    # 4 checkouts but 40 carts at a long-run ratio of 0.25: the estimate leans on the carts (10).
    est = estimated_conversions(obs(conversions=4.0, add_to_carts=40.0, checkout_ratio=0.25))
    assert 8.0 < est < 10.0
    assert estimated_conversions(obs(conversions=4.0)) == 4.0
