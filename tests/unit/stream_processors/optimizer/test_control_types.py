from __future__ import annotations

from stream_processors.optimizer.control_types import (
    ChannelFigures,
    ChannelState,
    efficiency_window,
    spend_by_campaign,
)


def test_the_efficiency_window_sets_conversions_against_the_lagged_spend() -> None:
    converted = {("c1", "feed"): ChannelFigures(500.0, 4.0, 800.0, 20.0)}
    lagged = {("c1", "feed"): ChannelFigures(300.0, 9.0), ("c1", "kol"): ChannelFigures(120.0, 2.0, 50.0)}
    window = efficiency_window(converted, lagged)
    assert window[("c1", "feed")] == ChannelFigures(300.0, 4.0, 800.0, 20.0)
    # spend whose conversions have not arrived yet: counted, with none of them
    assert window[("c1", "kol")] == ChannelFigures(120.0, 0.0, 0.0)


def test_spend_by_campaign_sums_the_channels() -> None:
    figures = {
        ("c1", "feed"): ChannelFigures(300.0),
        ("c1", "kol"): ChannelFigures(20.0),
        ("c2", "feed"): ChannelFigures(),
    }
    assert spend_by_campaign(figures) == {"c1": 320.0, "c2": 0.0}


def test_channel_state_is_json() -> None:
    state = ChannelState(150.0, learned=True, history=[140.0, 150.0], weights=[0.5, 1.0], memory_s=14_400.0)
    assert ChannelState.from_json(state.to_json()) == state
