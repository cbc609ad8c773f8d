from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from stream_processors.attribution.models import MODEL_NAMES, ModelName
from stream_processors.attribution.paths import (
    PathFormatError,
    PathRecord,
    attribute_paths,
    format_table,
    read_paths,
    run_attribute,
)

HEADER = "path;total_conversions;total_conversion_value;total_null\n"
SAMPLE = HEADER + "kol > feed > search;2;30.5;1\nbrand;1;10;0\nfeed > feed;0;0;4\n"


def test_read_paths_parses_records() -> None:
    records = read_paths(SAMPLE)
    assert records == [
        PathRecord(("kol", "feed", "search"), 2.0, 30.5, 1.0),
        PathRecord(("brand",), 1.0, 10.0, 0.0),
        PathRecord(("feed", "feed"), 0.0, 0.0, 4.0),
    ]


def test_read_paths_accepts_bom_crlf_blank_lines_streams_and_paths(tmp_path: Path) -> None:
    text = "\ufeff" + SAMPLE.replace("\n", "\r\n") + "\r\n\r\n"
    assert read_paths(text) == read_paths(SAMPLE)
    assert read_paths(io.StringIO(SAMPLE)) == read_paths(SAMPLE)
    file = tmp_path / "paths.csv"
    file.write_text(text, encoding="utf-8")
    assert read_paths(file) == read_paths(SAMPLE)
    assert read_paths(HEADER) == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "missing header"),
        ("path,total_conversions,total_conversion_value,total_null\nkol,1,1,0\n", 1, "header"),
        ("path;total_conversions;total_conversion_value\n", 1, "header"),
        (HEADER + "kol;1;1;0\nfeed;one;1;0\n", 3, "total_conversions is not a number"),
        (HEADER + "kol;1;1,5;0\n", 2, "total_conversion_value is not a number"),
        (HEADER + "kol;1;1;-2\n", 2, "total_null must be a finite number >= 0"),
        (HEADER + "kol;nan;1;0\n", 2, "total_conversions must be a finite number"),
        (HEADER + "kol;inf;1;0\n", 2, "total_conversions must be a finite number"),
        (HEADER + ";1;1;0\n", 2, "empty path"),
        (HEADER + "kol;1;1;0\n   ;1;1;0\n", 3, "empty path"),
        (HEADER + "kol > > feed;1;1;0\n", 2, "empty channel name at position 2"),
        (HEADER + "kol >;1;1;0\n", 2, "empty channel name"),
        (HEADER + "(start) > kol;1;1;0\n", 2, "reserved"),
        (HEADER + "kol;1;1\n", 2, "expected 4"),
        (HEADER + "kol;1;1;0;9\n", 2, "expected 4"),
        (HEADER + 'kol;1;"1;0\n', 2, "malformed CSV"),
    ],
)
def test_read_paths_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PathFormatError, match=message) as info:
        read_paths(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")


def test_path_format_error_is_a_value_error() -> None:
    assert issubclass(PathFormatError, ValueError)


def test_attribute_paths_heuristics_by_hand() -> None:
    records = read_paths(SAMPLE)
    first = attribute_paths(records, "first")
    assert first == {
        "kol": {"conversions": 2.0, "value": 30.5},
        "feed": {"conversions": 0.0, "value": 0.0},
        "search": {"conversions": 0.0, "value": 0.0},
        "brand": {"conversions": 1.0, "value": 10.0},
    }
    assert attribute_paths(records, "last")["search"] == {"conversions": 2.0, "value": 30.5}
    linear = attribute_paths(records, "linear")
    assert linear["feed"] == pytest.approx({"conversions": 2 / 3, "value": 30.5 / 3})
    position = attribute_paths(records, "position")
    assert position["feed"] == pytest.approx({"conversions": 0.4, "value": 0.2 * 30.5})
    assert position["kol"] == pytest.approx({"conversions": 0.8, "value": 0.4 * 30.5})


def test_attribute_paths_time_decay_counts_half_life_in_steps() -> None:
    records = [PathRecord(("a", "b", "c"), 7.0, 70.0, 0.0)]
    # Ages 3, 2, 1 steps: one-step half-life gives 1:2:4.
    got = attribute_paths(records, "time_decay")
    assert [got[c]["conversions"] for c in "abc"] == pytest.approx([1.0, 2.0, 4.0])
    slow = attribute_paths(records, "time_decay", half_life_steps=1e12)
    assert [slow[c]["conversions"] for c in "abc"] == pytest.approx([7 / 3] * 3)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_attribute_paths_conserves_totals(model: ModelName) -> None:
    records = read_paths(SAMPLE)
    got = attribute_paths(records, model)
    assert list(got) == ["kol", "feed", "search", "brand"]
    assert math.fsum(v["conversions"] for v in got.values()) == pytest.approx(3.0)
    assert math.fsum(v["value"] for v in got.values()) == pytest.approx(40.5)


def test_attribute_paths_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown attribution model"):
        attribute_paths([], "shapley")  # type: ignore[arg-type]


def test_format_table_has_aligned_rows_and_total() -> None:
    table = format_table(attribute_paths(read_paths(SAMPLE), "linear"), "linear")
    lines = table.splitlines()
    assert lines[0] == "model: linear"
    assert lines[1].split() == ["channel", "conversions", "value", "share"]
    assert lines[-1].split()[:3] == ["TOTAL", "3.0000", "40.50"]
    assert len({len(line) for line in lines[1:]}) == 1  # every row padded to the same width
    assert format_table({}, "first").splitlines()[-1].split() == ["TOTAL", "0.0000", "0.00", "0.0%"]


def test_run_attribute_json_and_table(tmp_path: Path) -> None:
    file = tmp_path / "paths.csv"
    file.write_text(SAMPLE, encoding="utf-8")
    doc = json.loads(run_attribute(str(file), "markov", as_json=True))
    assert doc["model"] == "markov"
    assert set(doc["channels"]) == {"kol", "feed", "search", "brand"}
    assert set(doc["channels"]["kol"]) == {"conversions", "value"}
    assert "TOTAL" in run_attribute(str(file), "first", as_json=False)
    file.write_text(HEADER + "kol;x;1;0\n", encoding="utf-8")
    with pytest.raises(PathFormatError, match="line 2"):
        run_attribute(str(file), "first", as_json=True)
