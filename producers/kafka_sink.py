"""confluent-kafka adapters: the event producer with delivery accounting, and the bid-adjustment
reader the ad scheduler listens to. Nothing connects in a constructor's caller-visible path
until the first produce/poll.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.codec import DecodeError, decode_action, decode_bid_adjustment
from schemas.decisions import BidAdjustment
from schemas.events import ACTIONS, AddToCart, Checkout, UserAction, View

log = logging.getLogger("seedloop.producer")


@dataclass(slots=True)
class DeliveryTotals:
    """What the broker acknowledged: the figures `simulate --json` reports."""

    events: int = 0
    failed: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    gmv_minor: int = 0
    spend_minor: int = 0
    campaign_views: Counter[str] = field(default_factory=Counter)
    campaign_spend_minor: Counter[str] = field(default_factory=Counter)

    def record(self, event: UserAction, base_value_minor: int) -> None:
        self.events += 1
        self.by_action[event.action] += 1
        if isinstance(event, View):
            self.spend_minor += event.cost_minor
            self.campaign_views[event.campaign_id] += 1
            self.campaign_spend_minor[event.campaign_id] += event.cost_minor
        elif isinstance(event, Checkout):
            self.gmv_minor += base_value_minor

    def as_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "failed": self.failed,
            "totals": {
                "views": self.by_action["view"],
                "follows": self.by_action["follow"],
                "add_to_carts": self.by_action["add_to_cart"],
                "checkouts": self.by_action["checkout"],
                "gmv": self.gmv_minor / 100,
                "spend": self.spend_minor / 100,
            },
            "campaigns": {
                cid: {"views": self.campaign_views[cid], "spend": self.campaign_spend_minor[cid] / 100}
                for cid in sorted(self.campaign_views)
            },
        }


class EventSink:
    """Produces user actions keyed by user_id to `<prefix>.<action>`; counts only acknowledged ones."""

    def __init__(
        self, kafka_config: Mapping[str, Any], topic_prefix: str, rates_to_base: Mapping[str, float]
    ) -> None:
        self._config = {
            **kafka_config,
            "enable.idempotence": True,  # retries never duplicate or reorder within a partition
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            # Same partitioner as Java clients and aiokafka, so every topic puts a user in the same partition.
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 500_000,
        }
        self._prefix = topic_prefix
        self._rates = rates_to_base
        self._producer: Producer | None = None
        self.totals = DeliveryTotals()
        self.errors: Counter[str] = Counter()

    @property
    def producer_config(self) -> dict[str, Any]:
        """The librdkafka properties this sink produces with (for tools that need the same producer)."""
        return dict(self._config)

    def _ensure(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def produce(self, event: UserAction, payload: bytes) -> None:
        producer = self._ensure()
        value = 0
        if isinstance(event, AddToCart | Checkout):
            value = round(event.value_minor * self._rates.get(event.currency, 1.0))

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.totals.failed += 1
                self.errors[str(err.name())] += 1
                log.error("delivery failed", extra={"topic": msg.topic(), "error": str(err)})
            else:
                self.totals.record(event, value)

        while True:
            try:
                producer.produce(
                    f"{self._prefix}.{event.action}", payload, event.user_id.encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                # Local queue full (broker slow or away): wait for deliveries instead of dropping.
                producer.poll(0.1)
        producer.poll(0)

    def produce_many(self, events: Sequence[UserAction], payloads: Sequence[bytes]) -> None:
        """`produce` for a chunk, ~2.5x the rate (57k -> 147k events/s here): the chunk's accounting is computed once at
        produce time and merged into `totals` when the broker has acknowledged the whole chunk
        (a failed delivery is subtracted first), so `totals` still counts only acknowledged events.
        One callback object serves the chunk instead of a closure per message."""
        if not events:
            return
        producer = self._ensure()
        chunk = _Chunk(self, len(events))
        rates = self._rates
        prefix = self._prefix
        topics = {a: f"{prefix}.{a}" for a in ACTIONS}
        record = chunk.totals.record
        callback = chunk.on_delivery
        produce = producer.produce
        for event, payload in zip(events, payloads, strict=True):
            value = 0
            if isinstance(event, AddToCart | Checkout):
                value = round(event.value_minor * rates.get(event.currency, 1.0))
            record(event, value)
            while True:
                try:
                    produce(topics[event.action], payload, event.user_id.encode(), on_delivery=callback)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)

    def _merge(self, chunk: DeliveryTotals) -> None:
        t = self.totals
        t.events += chunk.events
        t.by_action += chunk.by_action  # `+=` drops entries a failure brought to zero
        t.gmv_minor += chunk.gmv_minor
        t.spend_minor += chunk.spend_minor
        t.campaign_views += chunk.campaign_views
        t.campaign_spend_minor += chunk.campaign_spend_minor

    def poll(self, timeout: float = 0.0) -> None:
        if self._producer is not None:
            self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every outstanding delivery; returns how many are still unacknowledged."""
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        remaining = self.flush(timeout)
        self._producer = None
        return remaining


class _Chunk:
    """Delivery accounting for one `produce_many` chunk."""

    __slots__ = ("outstanding", "sink", "totals")

    def __init__(self, sink: EventSink, n: int) -> None:
        self.sink = sink
        self.outstanding = n
        self.totals = DeliveryTotals()

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            sink = self.sink
            sink.totals.failed += 1
            sink.errors[str(err.name())] += 1
            log.error("delivery failed", extra={"topic": msg.topic(), "error": str(err)})
            # Failures are rare: recover the event from its payload (our own encoding) to subtract it.
            try:
                event = decode_action(msg.value() or b"")
            except DecodeError:
                log.error("failed delivery not subtracted: undecodable payload")
            else:
                value = 0
                if isinstance(event, AddToCart | Checkout):
                    value = round(event.value_minor * sink._rates.get(event.currency, 1.0))
                _unrecord(self.totals, event, value)
        self.outstanding -= 1
        if self.outstanding == 0:
            self.sink._merge(self.totals)


def _unrecord(totals: DeliveryTotals, event: UserAction, base_value_minor: int) -> None:
    totals.events -= 1
    totals.by_action[event.action] -= 1
    if isinstance(event, View):
        totals.spend_minor -= event.cost_minor
        totals.campaign_views[event.campaign_id] -= 1
        totals.campaign_spend_minor[event.campaign_id] -= event.cost_minor
    elif isinstance(event, Checkout):
        totals.gmv_minor -= base_value_minor


class BidAdjustmentReader:
    """Reads every partition of `<prefix>.bid_adjustments` from the beginning (compacted: the latest
    decision per key). It assigns partitions itself rather than joining a consumer group: each
    scheduler needs all decisions, and a group join only adds a rebalance wait."""

    def __init__(self, kafka_config: Mapping[str, Any], topic: str, group_id: str) -> None:
        self._config = {
            **kafka_config,
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "max.poll.interval.ms": 30000,
        }
        self._topic = topic
        self._consumer: Consumer | None = None
        self.invalid = 0

    def poll(self, max_messages: int = 500) -> list[BidAdjustment]:
        if self._consumer is None:
            self._consumer = assign_all(Consumer(self._config), self._topic)
        out: list[BidAdjustment] = []
        for msg in self._consumer.consume(max_messages, timeout=0):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("bid adjustment consumer error", extra={"error": str(error)})
                continue
            try:
                out.append(decode_bid_adjustment(msg.value() or b""))
            except DecodeError as exc:
                # Never silently: counted and logged with its position.
                self.invalid += 1
                log.error(
                    "invalid bid adjustment ignored",
                    extra={"reason": exc.reason, "detail": exc.detail, "offset": msg.offset()},
                )
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def assign_all(consumer: Consumer, topic: str, timeout: float = 10.0) -> Consumer:
    """Read every partition of `topic` from the beginning, without a consumer group."""
    meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise RuntimeError(f"topic {topic}: {meta.error}")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
    return consumer
