from __future__ import annotations

import pytest

from stream_processors.optimizer.evaluation.settling import in_band_bound, in_band_share, settle


def test_in_band_bound_grows_with_evidence() -> None:
    assert in_band_bound(0) == 0.0
    # 100 carts: a standard error of 10%, about the +-10% band itself: 2 Phi(0.953) - 1
    assert in_band_bound(100) == pytest.approx(0.6594, abs=1e-3)
    assert in_band_bound(25) < in_band_bound(100) < in_band_bound(400) < 1.0
    assert in_band_bound(2000) > 0.99


def test_settle_is_the_first_round_from_which_it_stays_in_band() -> None:
    ref = [100.0] * 6
    # in band at round 2, out at 3 (12% off), in again from round 4 on
    assert settle([150.0, 105.0, 112.0, 95.0, 101.0, 109.0], ref, "cpa") == 4
    assert settle([150.0] * 6, ref, "cpa") is None
    assert settle([100.0] * 5 + [89.0], ref, "cpa") is None
    assert in_band_share([100.0, 150.0, 0.0, 91.0], [100.0] * 4) == 0.5
    assert in_band_share([], []) is None
