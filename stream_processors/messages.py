"""What a partition batch is made of: the consumed messages, their decoded events, and the
messages dead-lettered on the way (processor.py decodes and plans them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from schemas.events import UserAction


class RawMessage(NamedTuple):
    """One consumed message (a tuple: built for every event, and cheaper than a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # When the broker (or producer) stamped it, POSIX seconds: the start of event-to-Redis latency.
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: RawMessage
    reason: str
    detail: str


class Decoded(NamedTuple):
    message: RawMessage
    event: UserAction
    at: float  # event time, POSIX seconds (computed once: it is read several times per event)


@dataclass(slots=True)
class DecodedBatch:
    partition: int
    messages: list[RawMessage]
    events: list[Decoded]
    dead_letters: list[DeadLetter]

    @property
    def user_ids(self) -> list[str]:
        return sorted({d.event.user_id for d in self.events})

    @property
    def event_ids(self) -> list[str]:
        """The ids to look up in the partition's event-id sets (read_batch.lua)."""
        return sorted({d.event.event_id for d in self.events})
