"""Bytes <-> models. The only place that parses wire data, so every failure has one shape."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from schemas.decisions import BidAdjustment
from schemas.events import (
    ACTION_MODELS,
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    AddToCart,
    Checkout,
    Follow,
    UserAction,
    View,
)

# The fast path: pydantic parses and validates the bytes in Rust in one pass (no Python dict).
# It accepts only what the step-by-step path below accepts; anything it rejects is decoded again
# step by step, so every failure keeps its stable reason.
_ACTIONS: TypeAdapter[UserAction] = TypeAdapter(
    Annotated[View | Follow | AddToCart | Checkout, Field(discriminator="action")]
)

DecodeReason = Literal[
    "oversized",
    "not_json",
    "not_an_object",
    "unknown_action",
    "action_topic_mismatch",
    "unknown_schema_version",
    "invalid_fields",
]


class DecodeError(ValueError):
    """Raised for any payload that is not a valid message; `reason` is a stable metric label."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DecodeReason = reason
        self.detail = detail


def _load_object(payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DecodeError("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        # parse_constant rejects NaN/Infinity: they are not JSON and not money.
        obj = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("not_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise DecodeError("not_an_object", f"top-level JSON is {type(obj).__name__}")
    return obj


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-finite number {name} is not allowed")


def decode_action(payload: bytes, expected_action: str | None = None) -> UserAction:
    """Decode one user action. `expected_action` is the action its topic carries, if known."""
    # NaN/Infinity are not JSON: no model field accepts them (allow_inf_nan=False, and the rest are
    # ints, strings and times), so the fast path fails on them and the slow path names the reason.
    if len(payload) <= MAX_PAYLOAD_BYTES:
        try:
            event = _ACTIONS.validate_json(payload)
        except ValidationError:
            pass  # decode step by step below, for the precise reason
        else:
            if expected_action is not None and event.action != expected_action:
                raise DecodeError(
                    "action_topic_mismatch", f"{event.action!r} on the {expected_action!r} topic"
                )
            return event
    return _decode_action_slow(payload, expected_action)


def _decode_action_slow(payload: bytes, expected_action: str | None) -> UserAction:
    obj = _load_object(payload)
    action = obj.get("action", expected_action)
    model = ACTION_MODELS.get(action) if isinstance(action, str) else None
    if model is None:
        raise DecodeError("unknown_action", f"action={action!r}")
    if expected_action is not None and action != expected_action:
        raise DecodeError("action_topic_mismatch", f"{action!r} on the {expected_action!r} topic")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise DecodeError("unknown_schema_version", f"schema_version={version!r}")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise DecodeError("invalid_fields", _summarise(exc)) from None


def decode_bid_adjustment(payload: bytes) -> BidAdjustment:
    obj = _load_object(payload)
    try:
        return BidAdjustment.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("invalid_fields", _summarise(exc)) from None


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
