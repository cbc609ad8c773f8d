"""The peers' JSON keys, the worker's gaps to them, and their table in `seedloop bench`'s output.
(No import of seedloop.bench here: bench.py and bench_report.py import this at module level.)"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

PEERS = ("quix", "plain")


IMPLEMENTATIONS = {
    "baseline": "stock Faust counting agent",
    "baseline_eager": "Faust counting agent, eager delivery",
    "pipeline": "seedloop worker (full pipeline)",
    "quix": "quixstreams app (last-touch job)",
    "plain": "plain confluent-kafka loop (same job)",
}


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


CPU_MEASURES = (
    "events_per_cpu_s",
    "events_per_cpu_s_with_redis",
    "events_per_cpu_s_drain",
    "events_per_cpu_s_drain_with_redis",
)


def cpu_keys(name: str, drains: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median events per CPU-second of `name`'s drains (consumer; consumer + Redis server), over
    the 10-90 % window and, as a cross-check, over the whole drain."""
    return {f"{name}_{m}": _median([d.get(m) for d in drains]) for m in CPU_MEASURES}


def peer_keys(name: str, drains: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A peer's JSON keys: median events/s, its runs, its CPU figures, what it credited."""
    return {
        f"{name}_eps": _median([d["eps"] for d in drains]),
        f"{name}_runs_eps": [d["eps"] for d in drains],
        **cpu_keys(name, drains),
        f"{name}_credited_checkouts": [d.get("credited_checkouts") for d in drains],
    }


def gaps(result: dict[str, Any]) -> dict[str, Any]:
    """seedloop's worker / each other implementation, per measure (medians of the same run)."""
    out: dict[str, Any] = {}
    for other in ("baseline", "baseline_eager", *PEERS):
        row = {}
        for measure in ("eps", *CPU_MEASURES):
            ours, theirs = result.get(f"pipeline_{measure}"), result.get(f"{other}_{measure}")
            row[measure] = ours / theirs if ours and theirs else None
        out[other] = row
    return out


def table_lines(result: dict[str, Any], fmt: Callable[[Any], str]) -> list[str]:
    """The implementations side by side: events/s and events per CPU-second (consumer; consumer +
    Redis server) over the 10-90 % window, then the whole-drain cross-check."""
    head = ("implementation", "events/s", "ev/CPU-s", "+Redis", "drain ev/CPU-s", "+Redis", "worker/it")
    rows = []
    for name, label in IMPLEMENTATIONS.items():
        if result.get(f"{name}_eps") is None:
            continue
        gap = (result.get("pipeline_gaps") or {}).get(name, {}).get("eps")
        rows.append(
            (
                f"{name}: {label}",
                fmt(result.get(f"{name}_eps")),
                *(fmt(result.get(f"{name}_{m}")) for m in CPU_MEASURES),
                "-" if name == "pipeline" else fmt(gap),
            )
        )
    w = max(len(r[0]) for r in [head, *rows])
    lines = [f"{head[0]:<{w}}" + "".join(f"{h:>15}" for h in head[1:]), "-" * (w + 15 * (len(head) - 1))]
    lines += [f"{r[0]:<{w}}" + "".join(f"{v:>15}" for v in r[1:]) for r in rows]
    for name, why in (result.get("peers_skipped") or {}).items():
        lines.append(f"{name}: not measured: {why}")
    return lines


def collect(
    result: dict[str, Any], drains: Mapping[str, Sequence[dict[str, Any]]], skipped: Mapping[str, str] | None
) -> None:
    """Adds the CPU figures of every drained implementation, the peers' keys (None where a peer was
    not measured) and `pipeline_gaps` to `result` (new keys only)."""
    for name in ("baseline", "baseline_eager", "pipeline"):
        result.update(cpu_keys(name, drains.get(name, ())))
    result["peers_measured"] = skipped is not None
    result["peers_skipped"] = dict(skipped or {})
    for name in PEERS:
        result.update(peer_keys(name, drains.get(name, ())))
    result["pipeline_gaps"] = gaps(result)
    result["peers_method"] = (
        "the same drains (same topics, partitions, data, a fresh group and flushed Redis each), "
        "alternating with the Faust ones; events per CPU-second = events between the 10% and 90% "
        "samples / the consumer process's utime+stime (/proc) over them, and with the Redis "
        "server's used_cpu_user+used_cpu_sys (INFO cpu) added; pipeline_gaps = the worker's median / "
        "each other's median, per measure"
    )
