"""Settings that contradict each other are refused with a line naming the variables."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from seedloop.runtime import optimizer_of, processing_rules, scenario_of
from seedloop.settings import Settings


def test_a_lift_window_shorter_than_lateness_plus_future_is_refused() -> None:
    # 1 h of lateness + 1 day of future bound: a 2-hour window could count a checkout on one
    # replay and not on another.
    with pytest.raises(ValidationError, match="SEEDLOOP_LIFT_WINDOW_S must exceed"):
        Settings(lift_window_s=2 * 3600.0, allowed_lateness_s=3600.0, max_future_s=86_400.0)
    assert (
        Settings(lift_window_s=2 * 86_400.0, allowed_lateness_s=3600.0, max_future_s=86_400.0).holdout_share
        > 0
    )


def test_state_that_expires_inside_the_lift_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="SEEDLOOP_STATE_TTL_S must be at least SEEDLOOP_LIFT_WINDOW_S"):
        Settings(state_ttl_s=3 * 86_400, lift_window_s=7 * 86_400.0)
    assert Settings(state_ttl_s=3 * 86_400, holdout_share=0.0).state_ttl_s == 3 * 86_400


def test_without_a_holdout_the_engine_keeps_no_lift_state_and_any_window_is_allowed() -> None:
    no_holdout = Settings(holdout_share=0.0, lift_window_s=60.0)
    assert processing_rules(no_holdout, scenario_of(no_holdout)).engine.lift_window_s == 0.0
    default = Settings()
    assert processing_rules(default, scenario_of(default)).engine.lift_window_s == default.lift_window_s > 0


def test_the_live_optimizer_steers_as_the_settings_say() -> None:
    # Nothing is reached: clients connect on first use, and a standalone Redis is not probed.
    services = {
        "redis_url": SecretStr("redis://127.0.0.1:1/0"),
        "redis_mode": "standalone",
        "kafka_bootstrap_servers": "127.0.0.1:1",
    }
    lift = Settings.model_validate({**services, "optimizer_steer": "lift", "lift_window_s": 3 * 86_400.0})
    service = optimizer_of(lift, scenario_of(lift))
    assert service.cfg.steer == "lift" and service.cfg.lift.window_s == 3 * 86_400.0
    default = Settings.model_validate(services)
    assert optimizer_of(default, scenario_of(default)).cfg.steer == "attributed"
