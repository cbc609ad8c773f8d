"""Offline attribution of aggregated paths, in the file format common to attribution tools.

The file is ';'-separated with the header ``path;total_conversions;total_conversion_value;total_null``
and paths written ``a > b > c`` (the format of ChannelAttribution's sample ``Data.csv``). The heuristic
models go through the very same ``model_weights`` as the stream, so the CLI and the live pipeline cannot
drift apart.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from .markov import MarkovChain
from .models import MODEL_NAMES, ModelName, Touch, model_weights

HEADER = ("path", "total_conversions", "total_conversion_value", "total_null")
PATH_SEPARATOR = ">"


@dataclass(frozen=True, slots=True)
class PathRecord:
    channels: tuple[str, ...]
    conversions: float
    value: float
    nulls: float


class PathFormatError(ValueError):
    """A malformed paths file; the message names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def _parse_amount(line: int, column: str, raw: str) -> float:
    text = raw.strip()
    try:
        x = float(text)
    except ValueError:
        raise PathFormatError(line, f"{column} is not a number: {raw!r}") from None
    if not math.isfinite(x) or x < 0.0:
        raise PathFormatError(line, f"{column} must be a finite number >= 0, got {raw!r}")
    return x


def _parse_path(line: int, raw: str) -> tuple[str, ...]:
    if not raw.strip():
        raise PathFormatError(line, "empty path")
    channels = tuple(part.strip() for part in raw.split(PATH_SEPARATOR))
    for position, channel in enumerate(channels, start=1):
        if not channel:
            raise PathFormatError(line, f"empty channel name at position {position} in path {raw!r}")
        if channel.startswith("(") and channel.endswith(")"):
            # "(start)", "(conversion)", "(null)" are the Markov chain's own states.
            raise PathFormatError(line, f"channel name {channel!r} is reserved")
    return channels


def read_paths(text_or_file: str | os.PathLike[str] | IO[str]) -> list[PathRecord]:
    """Parse a paths file. A str is the file's *text*; a PathLike is opened (UTF-8); anything else is a
    text stream. Raises PathFormatError naming the line of the first problem."""
    if isinstance(text_or_file, str):
        text = text_or_file
    elif isinstance(text_or_file, os.PathLike):
        with open(text_or_file, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    else:
        text = text_or_file.read()
    # Spreadsheet exports often start with a byte-order mark; it is not part of the header.
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    records: list[PathRecord] = []
    header_seen = False
    try:
        for row in reader:
            line = reader.line_num
            if not header_seen:
                if tuple(c.strip() for c in row) != HEADER:
                    raise PathFormatError(
                        line, f"header must be exactly {';'.join(HEADER)!r}, got {';'.join(row)!r}"
                    )
                header_seen = True
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(HEADER):
                raise PathFormatError(line, f"expected {len(HEADER)} ';'-separated fields, got {len(row)}")
            records.append(
                PathRecord(
                    channels=_parse_path(line, row[0]),
                    conversions=_parse_amount(line, HEADER[1], row[1]),
                    value=_parse_amount(line, HEADER[2], row[2]),
                    nulls=_parse_amount(line, HEADER[3], row[3]),
                )
            )
    except csv.Error as exc:
        raise PathFormatError(reader.line_num, f"malformed CSV: {exc}") from None
    if not header_seen:
        raise PathFormatError(1, f"missing header {';'.join(HEADER)!r}")
    return records


def attribute_paths(
    records: Sequence[PathRecord], model: ModelName, *, half_life_steps: float = 1.0
) -> dict[str, dict[str, float]]:
    """-> {"<channel>": {"conversions": x, "value": y}}, channels in order of first appearance.

    Paths carry no timestamps, so touch i of n sits at time i and the conversion at time n; time_decay's
    half-life is therefore counted in steps.
    """
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown attribution model {model!r}; expected one of {MODEL_NAMES}")
    result: dict[str, dict[str, float]] = {}
    for record in records:
        for channel in record.channels:
            result.setdefault(channel, {"conversions": 0.0, "value": 0.0})
    if model == "markov":
        chain = MarkovChain.from_valued_paths((r.channels, r.conversions, r.value, r.nulls) for r in records)
        split = chain.attribute(
            math.fsum(r.conversions for r in records), math.fsum(r.value for r in records)
        )
        for channel, (conversions, value) in split.items():
            result[channel] = {"conversions": conversions, "value": value}
        return result
    for record in records:
        n = len(record.channels)
        touches = [Touch(float(i), "", c, "", None, False) for i, c in enumerate(record.channels)]
        weights = model_weights(model, touches, float(n), half_life_s=half_life_steps)
        for touch, w in zip(touches, weights, strict=True):
            slot = result[touch.channel]
            slot["conversions"] += record.conversions * w
            slot["value"] += record.value * w
    return result


def format_table(result: dict[str, dict[str, float]], model: ModelName) -> str:
    """Human-readable aligned table, biggest conversions first, with share of conversions and a total row."""
    total_conv = math.fsum(v["conversions"] for v in result.values())
    total_value = math.fsum(v["value"] for v in result.values())
    rows = sorted(result.items(), key=lambda kv: (-kv[1]["conversions"], kv[0]))
    header = ("channel", "conversions", "value", "share")
    body = [
        (
            channel,
            f"{v['conversions']:.4f}",
            f"{v['value']:.2f}",
            f"{(100.0 * v['conversions'] / total_conv) if total_conv else 0.0:.1f}%",
        )
        for channel, v in rows
    ]
    footer = ("TOTAL", f"{total_conv:.4f}", f"{total_value:.2f}", "100.0%" if total_conv else "0.0%")
    table = [header, *body, footer]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))])

    rule = "  ".join("-" * w for w in widths)
    lines = [f"model: {model}", fmt(header), rule, *(fmt(r) for r in body), rule, fmt(footer)]
    return "\n".join(lines)


def run_attribute(paths_file: str, model: ModelName, as_json: bool) -> str:
    """Body of ``seedloop attribute --paths FILE --model M [--json]``: returns the text to print."""
    with open(paths_file, encoding="utf-8-sig", newline="") as fh:
        records = read_paths(fh)
    result = attribute_paths(records, model)
    if as_json:
        return json.dumps({"model": model, "channels": result}, indent=2)
    return format_table(result, model)
