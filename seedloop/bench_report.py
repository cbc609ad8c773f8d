"""`seedloop bench`'s printed table: the figures, their baseline or target, the runs, the peers
and the memory curve."""

from __future__ import annotations

from typing import Any

from seedloop.bench_peers import figures as peer_figures


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.2f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def _figure_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    base = result.get("baseline_eps")
    return [
        ("baseline_eps (stock Faust counting agent)", _fmt(base), "-"),
        ("pipeline_eps (full pipeline, 1 worker)", _fmt(result.get("pipeline_eps")), _fmt(base)),
        ("ratio pipeline / baseline", _fmt(result.get("ratio")), ">= 0.8"),
        (
            "baseline_eager_eps (same agent, eager delivery)",
            _fmt(result.get("baseline_eager_eps")),
            _fmt(base),
        ),
        ("ratio_same_delivery (pipeline / that)", _fmt(result.get("ratio_same_delivery")), "-"),
        ("scaleout_eps (2 workers)", _fmt(result.get("scaleout_eps")), _fmt(base)),
        ("scaleout_factor", _fmt(result.get("scaleout_factor")), "-"),
        (
            "latency_p50_ms",
            _fmt(result.get("latency_p50_ms")),
            f"at {_fmt(result.get('latency_rate_eps'))} ev/s",
        ),
        ("latency_p99_ms", _fmt(result.get("latency_p99_ms")), "<= 1000"),
        ("producer_eps (acknowledged)", _fmt(result.get("producer_eps")), _fmt(base)),
        ("simulator_eps (generation only)", _fmt(result.get("simulator_eps")), "-"),
        ("simulate_produce_eps (one thread)", _fmt(result.get("simulate_produce_eps")), "-"),
        (
            "worker_rss_mb",
            _fmt(result.get("worker_rss_mb")),
            f"start {_fmt(result.get('worker_rss_start_mb'))}",
        ),
        ("redis_mb", _fmt(result.get("redis_mb")), f"{_fmt(result.get('memory_users'))} users"),
        ("redis_bytes_per_user", _fmt(result.get("redis_bytes_per_user")), "-"),
    ]


def format_bench(result: dict[str, Any]) -> str:
    rows = _figure_rows(result)
    w = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{w}}  {'value':>12}  {'baseline / note':>18}", "-" * (w + 34)]
    lines += [f"{name:<{w}}  {val:>12}  {note:>18}" for name, val, note in rows]
    runs_b = ", ".join(_fmt(x) for x in result.get("baseline_runs_eps", []))
    runs_e = ", ".join(_fmt(x) for x in result.get("baseline_eager_runs_eps", []))
    runs_p = ", ".join(_fmt(x) for x in result.get("pipeline_runs_eps", []))
    runs_x = ", ".join(_fmt(x) for x in result.get("producer_runs_eps", []))
    lines.append(
        f"runs: baseline [{runs_b}]  eager baseline [{runs_e}]  pipeline [{runs_p}]  producer [{runs_x}]"
        "  (medians above)"
    )
    lines += ["", *peer_figures.table_lines(result, _fmt)]
    curve = result.get("memory_curve") or []
    if curve:
        lines.append(
            "memory: "
            + "  ".join(
                f"{c['users']:,}u: {_fmt(c['worker_rss_mb'])}/{_fmt(c['redis_mb'])} MB" for c in curve
            )
            + "  (worker RSS / Redis)"
        )
    return "\n".join(lines)
