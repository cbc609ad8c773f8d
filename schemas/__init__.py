"""Message schemas: every record that crosses a Kafka topic, and the one decoder for them.

This package imports nothing else of seedloop's: it is the contract between producers,
stream processors and the optimizer.
"""

from schemas.codec import DecodeError, decode_action, decode_bid_adjustment, encode
from schemas.decisions import BidAdjustment
from schemas.events import (
    ACTION_MODELS,
    Action,
    AddToCart,
    Channel,
    Checkout,
    Follow,
    UserAction,
    View,
)

__all__ = [
    "ACTION_MODELS",
    "Action",
    "AddToCart",
    "BidAdjustment",
    "Channel",
    "Checkout",
    "DecodeError",
    "Follow",
    "UserAction",
    "View",
    "decode_action",
    "decode_bid_adjustment",
    "encode",
]
