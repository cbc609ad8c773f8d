from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DecodeError, View, decode_action, encode
from schemas.events import Checkout

VIEW = View(
    event_id="e1",
    user_id="u1",
    event_time=datetime(2026, 11, 11, 8, tzinfo=UTC),
    campaign_id="c1",
    channel="kol",
    creative_id="cr1",
    creator_id="k1",
    cost_minor=30,
)


def test_round_trip() -> None:
    assert decode_action(encode(VIEW), "view") == VIEW


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not_json"),
        (b"[]", "not_an_object"),
        (b'{"action": "purchase"}', "unknown_action"),
        (json.dumps({**json.loads(encode(VIEW)), "schema_version": 2}).encode(), "unknown_schema_version"),
        (json.dumps({**json.loads(encode(VIEW)), "cost_minor": -1}).encode(), "invalid_fields"),
        (
            json.dumps({**json.loads(encode(VIEW)), "cost_minor": "7"}).encode(),
            None,
        ),  # lax numeric strings ok
        (json.dumps({**json.loads(encode(VIEW)), "surprise": 1}).encode(), "invalid_fields"),
        (json.dumps({**json.loads(encode(VIEW)), "channel": "tv"}).encode(), "invalid_fields"),
        (
            json.dumps({**json.loads(encode(VIEW)), "event_time": "2026-11-11T08:00:00"}).encode(),
            "invalid_fields",
        ),
        (encode(VIEW).replace(b'"cost_minor":30', b'"cost_minor":NaN'), "not_json"),
        (encode(VIEW).replace(b'"cost_minor":30', b'"cost_minor":Infinity'), "not_json"),
        (encode(VIEW).replace(b'"engaged":false', b'"engaged":-Infinity'), "not_json"),
        (b"{" * 20_000, "oversized"),
    ],
)
def test_each_bad_input_has_a_stable_reason(payload: bytes, reason: str | None) -> None:
    if reason is None:
        decode_action(payload, "view")
        return
    with pytest.raises(DecodeError) as info:
        decode_action(payload, "view")
    assert info.value.reason == reason


def test_action_must_match_its_topic() -> None:
    with pytest.raises(DecodeError) as info:
        decode_action(encode(VIEW), "checkout")
    assert info.value.reason == "action_topic_mismatch"


def test_event_time_with_an_offset_is_the_same_instant() -> None:
    raw = json.loads(encode(VIEW))
    raw["event_time"] = "2026-11-11T16:00:00+08:00"
    event = decode_action(json.dumps(raw).encode())
    assert event.event_time == datetime(2026, 11, 11, 8, tzinfo=UTC)
    assert event.event_ts == datetime(2026, 11, 11, 8, tzinfo=UTC).timestamp()


def test_a_naive_event_time_is_rejected() -> None:
    raw = json.loads(encode(VIEW))
    raw["event_time"] = "2026-11-11T08:00:00"
    with pytest.raises(DecodeError) as info:
        decode_action(json.dumps(raw).encode(), "view")
    assert info.value.reason == "invalid_fields" and "timezone" in info.value.detail


def test_checkout_needs_order_and_currency() -> None:
    raw = {
        "action": "checkout",
        "event_id": "o1",
        "user_id": "u1",
        "event_time": "2026-11-11T08:00:00Z",
        "spu_id": "s1",
        "value_minor": 100,
        "currency": "CNY",
        "order_id": "ord1",
    }
    assert isinstance(decode_action(json.dumps(raw).encode()), Checkout)
    for missing in ("order_id", "currency"):
        with pytest.raises(DecodeError):
            decode_action(json.dumps({k: v for k, v in raw.items() if k != missing}).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_decoder_raises_nothing_but_its_own_error(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_action(payload)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(list(json.loads(encode(VIEW)))), json_values, max_size=14))
def test_decoder_on_near_valid_views(overrides: dict[str, object]) -> None:
    payload = json.dumps({**json.loads(encode(VIEW)), **overrides}).encode()
    with contextlib.suppress(DecodeError):
        decode_action(payload, "view")
