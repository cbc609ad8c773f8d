"""A healthy worker exports 0, not nothing, for every labelled counter whose label values are known:
dashboards show 0 dead letters and `rate()` sees the first one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from prometheus_client import generate_latest

from schemas.codec import DecodeReason
from schemas.events import ACTIONS
from stream_processors import processor
from stream_processors.metrics import DEAD_LETTER_REASONS, PipelineMetrics


def series(metrics: PipelineMetrics, name: str) -> dict[str, float]:
    """{label value: value} of a single-label counter's `_total` samples."""
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        m = re.fullmatch(rf'{name}_total\{{\w+="([^"]*)"\}} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def reasons_in_processor() -> set[str]:
    """Reasons processor.py dead-letters for: `DeadLetter(msg, "reason", ...)` and the
    `return "reason", detail` of its placement and catalogue checks."""
    source = Path(processor.__file__).read_text()
    found = set(re.findall(r'DeadLetter\(\s*[\w.]+,\s*"(\w+)"', source))
    # `return "reason", detail`, or the same tuple in parentheses over several lines.
    found |= set(re.findall(r'return \(?\s*"(\w+)",\s*f?"', source))
    return found


def test_every_dead_letter_reason_is_listed() -> None:
    found = reasons_in_processor()
    # The scan finds what it should (so an empty scan cannot pass this test).
    assert {"key_mismatch", "wrong_partition", "unknown_campaign", "late", "future", "duplicate"} <= found
    assert found | set(get_args(DecodeReason)) <= set(DEAD_LETTER_REASONS), (
        "add the new reasons to DEAD_LETTER_REASONS in stream_processors/metrics.py: "
        f"{sorted(found - set(DEAD_LETTER_REASONS))}"
    )
    assert len(DEAD_LETTER_REASONS) == len(set(DEAD_LETTER_REASONS))


def test_counters_exist_at_zero_before_anything_happens() -> None:
    metrics = PipelineMetrics()
    assert series(metrics, "seedloop_dead_letters") == dict.fromkeys(DEAD_LETTER_REASONS, 0.0)
    for name in ("seedloop_events_applied", "seedloop_duplicate_events", "seedloop_late_events"):
        assert series(metrics, name) == dict.fromkeys(ACTIONS, 0.0), name


def test_a_consumed_topic_has_its_replay_counter_at_zero() -> None:
    metrics = PipelineMetrics()
    assert series(metrics, "seedloop_replayed_events") == {}
    metrics.events_consumed.labels("p.view").inc(5)
    metrics.events_consumed.labels(topic="p.follow").inc()
    assert series(metrics, "seedloop_events_consumed") == {"p.view": 5.0, "p.follow": 1.0}
    assert series(metrics, "seedloop_replayed_events") == {"p.view": 0.0, "p.follow": 0.0}
    # Counting still works on both.
    metrics.replayed.labels("p.view").inc(2)
    assert series(metrics, "seedloop_replayed_events")["p.view"] == 2.0
    metrics.dead_letters.labels("late").inc()
    assert series(metrics, "seedloop_dead_letters")["late"] == 1.0
