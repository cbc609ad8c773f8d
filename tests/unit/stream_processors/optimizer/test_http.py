"""The optimizer HTTP's request models: what a bid and a limit may be (the server itself is tested
over sockets in tests/integration/test_optimizer_http.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream_processors.optimizer.http import AudienceQuery, BidBody, DecisionsQuery, describe


@pytest.mark.parametrize("raw", [b'{"bid": 111}', b'{"bid": 0.5}', b'{"bid": 1e-9}'])
def test_a_positive_finite_number_is_a_bid(raw: bytes) -> None:
    assert BidBody.model_validate_json(raw).bid > 0


@pytest.mark.parametrize(
    "raw",
    [b'{"bid": true}', b'{"bid": false}', b'{"bid": "1"}', b'{"bid": null}', b'{"bid": 0}', b'{"bid": -1}',
     b'{"bid": NaN}', b'{"bid": Infinity}', b'{"bid": -Infinity}', b'{"bid": 1e999}', b'{"bid": [1]}',
     b"{}", b'{"bid": 1, "extra": 2}', b"[]", b"1", b"", b"not json"],
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        BidBody.model_validate_json(raw)


def test_limits_are_integers_within_bounds() -> None:
    assert DecisionsQuery.model_validate({}).limit == 100
    assert DecisionsQuery.model_validate({"limit": "1000"}).limit == 1000
    assert AudienceQuery.model_validate({"limit": "100000"}).limit == 100_000
    for bad in ({"limit": "abc"}, {"limit": "0"}, {"limit": "1001"}, {"limit": "1.5"}, {"other": "1"}):
        with pytest.raises(ValidationError):
            DecisionsQuery.model_validate(bad)


def test_a_reason_names_the_field_and_does_not_echo_the_input() -> None:
    secret = "x" * 50
    with pytest.raises(ValidationError) as exc:
        BidBody.model_validate_json(f'{{"bid": "{secret}"}}'.encode())
    reason = describe(exc.value, "body")
    assert reason.startswith("invalid body: bid: ") and secret not in reason
