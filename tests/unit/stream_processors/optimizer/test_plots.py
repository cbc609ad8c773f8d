"""The evaluation's charts: written, labelled with units and currency, ROAS and CPA apart, the
shock marked, static and oracle drawn beside the optimizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_processors.optimizer import plots
from stream_processors.optimizer.evaluate import EvalConfig, run_evaluate

SEEDS = Path(__file__).resolve().parents[4] / "seeds"


def test_plots_of_a_short_run_are_labelled_and_mark_the_shock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: dict[str, Any] = {}
    original = plots.evaluation_figures

    def keep(*args: Any, **kwargs: Any) -> Any:
        made.update(original(*args, **kwargs))
        return made

    monkeypatch.setattr(plots, "evaluation_figures", keep)
    messages: list[str] = []
    run_evaluate(
        SEEDS, EvalConfig(days=0.25, seed=7), plots_dir=tmp_path, workers=1, progress=messages.append
    )
    names = {f"{run}_{what}" for run in ("optimizer", "shock") for what in plots.WHATS}
    assert {p.stem for p in tmp_path.glob("*.png")} == names
    assert all(p.stat().st_size > 10_000 for p in tmp_path.glob("*.png"))
    assert set(made) == names
    assert any("plots written" in m for m in messages)
    cfg = EvalConfig()
    for name, fig in made.items():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(axes) == 10, name
        assert all(ax.get_ylabel() for ax in axes), name
        assert any(ax.get_xlabel() == "simulated hours" for ax in axes), name
        assert "CNY" in fig._suptitle.get_text(), name
        if name.endswith(("bids", "spend")):
            assert all("CNY" in ax.get_ylabel() for ax in axes), name
        if name.endswith("efficiency"):
            # ROAS campaigns on the left column's axes, CPA on the right: never the same axis.
            left = [ax.get_ylabel() for ax in axes if ax.get_subplotspec().colspan.start == 0]
            right = [ax.get_ylabel() for ax in axes if ax.get_subplotspec().colspan.start == 1]
            assert set(left) == {"ROAS (GMV / spend)"} and set(right) == {"CPA (CNY / checkout)"}, name
            labels = {line.get_label() for ax in axes for line in ax.get_lines()}
            expected = {"optimizer", "target"} | (
                {"static", "oracle"} if name.startswith("optimizer") else {"static (shocked)"}
            )
            assert expected <= labels, (name, labels)
        shock_lines = [
            line for ax in axes for line in ax.get_lines() if line.get_label() == plots.SHOCK_LABEL
        ]
        if name.startswith("shock"):
            assert len(shock_lines) == 10, name
            shocked = next(ax for ax in axes if cfg.shock_campaign in ax.get_title())
            assert any("x0.5" in t.get_text() for t in shocked.texts), name
        else:
            assert not shock_lines, name
