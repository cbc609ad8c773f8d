"""seedloop's Faust transport: Faust's aiokafka transport with two changes, for our apps only.

Faust builds its consumer from the app's transport (`Transport.Consumer`, whose
`_new_consumer_thread` makes the thread that creates the aiokafka consumer), and `App.transport`
is a settable property, so `install_transport(app, ...)` gives one app these subclasses while
every other `faust.App` in the process keeps the stock transport. The worker (`build_app`) and the
benchmark's counting agent install it; nothing in Faust is patched.

Why this extension point: a `broker="<scheme>://"` transport would need a scheme registered in
Faust's process-wide driver table (or a setuptools entry point) and every broker URL rewritten;
overriding `App._new_transport` is a private method. Setting `app.transport` right after the app
is built is public, explicit, and local to the app.

* Fetch wait (`fetch_max_wait_ms`): Faust builds its aiokafka consumer with fetch_max_wait_ms=1500
  and no setting to change it. A broker that does not answer a long-poll fetch as soon as data
  arrives (Tansu does not) then adds up to 1.5 s to every event's latency. A short wait costs a
  few more empty fetches and keeps latency independent of the broker's long-poll behaviour.
  `SeedloopConsumerThread._create_worker_consumer` is Faust's with that one argument taken from
  the transport, so the value reaches aiokafka as a constructor argument (aiokafka is not pinned;
  its private attributes are not ours to set).
* Eager delivery: Faust hands every fetched message to its streams through
  `Service.wait_first(callback(message), suspend_flow.wait())`, which creates four tasks and an
  `asyncio.wait` per message, so that a delivery blocked on a full stream buffer can be abandoned
  when a rebalance suspends the flow. Almost every delivery completes without blocking (the
  buffer has room), and those need none of that: `start_eagerly` runs the delivery coroutine up to
  its first suspension in the caller, and only a delivery that does block becomes a task, awaited
  as before (abandoned when the flow is suspended). In a py-spy profile of the worker the
  per-message tasks took about a fifth of its CPU time; the stock counting agent of `seedloop
  bench` drains about 1.7x as fast with this change (72 -> 42 us of CPU per event).

* Batch delivery (`BatchDelivery`): for the topics an app names, the consumer hands each fetch's
  messages to one coroutine as a list (at most `max_messages` at a time) instead of one Faust event
  per message through the conductor, a channel queue and the agent's stream. That hand-over cost
  the worker more CPU than its own decoding and planning (in a py-spy profile of a drain, Faust's
  per-message path was about 30 % of the worker's CPU; with batches the worker drains the same
  events with about half the CPU). What Faust's stream does per event and the batch path keeps:
  a message fetched under an older consumer generation (before a rebalance) is not delivered,
  and nothing is delivered while the flow is suspended by a rebalance (Faust seeks back to the
  committed offsets afterwards, so those messages are fetched and delivered again). The handler
  acknowledges each message (`Consumer.ack`) once it is done with it; Faust commits acknowledged
  offsets as before. Group membership, rebalances, commits, the web server and the app model stay
  Faust's.

The overrides are copies of faust-streaming 0.15.3 methods (pinned in pyproject.toml) with one
statement changed; `COPIED` holds the digests of the originals, and a unit test fails when the
installed Faust's differ. Eager delivery is also checked at install time: on another Faust it
is left off (with a warning), as the consumer then drains with Faust's own loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import tempfile
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message, TransportT
from yarl import URL

log = logging.getLogger("seedloop.faust_transport")

# What Faust passes to aiokafka; the benchmark's stock agent keeps it.
FAUST_FETCH_MAX_WAIT_MS = 1500

# sha256 of inspect.getsource(...) of each Faust method copied below, in faust-streaming 0.15.3.
COPIED: dict[str, tuple[Callable[..., Any], str]] = {
    "Consumer._drain_messages": (
        BaseConsumer._drain_messages,
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
    ),
    "aiokafka Consumer._new_consumer_thread": (
        faust_aiokafka.Consumer._new_consumer_thread,
        "0870ec53dea75083995e3565c0f0a25a1c63ecceaeb238e92e2585e3623af5a9",
    ),
    "AIOKafkaConsumerThread._create_worker_consumer": (
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
    ),
}


@dataclass(frozen=True)
class BatchDelivery:
    """Deliver the messages of `topics` to `handler`, a list per fetch of at most `max_messages`."""

    handler: Callable[[list[Message]], Coroutine[Any, Any, None]]
    topics: frozenset[str]
    max_messages: int = 1000


def source_digest(fn: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()


def changed_upstream() -> list[str]:
    """The copied Faust methods whose installed source is not the one copied."""
    return [name for name, (fn, digest) in COPIED.items() if source_digest(fn) != digest]


def eager_delivery_applies() -> bool:
    """Whether the installed Faust's delivery loop is the one the eager loop was copied from."""
    name = "Consumer._drain_messages"
    fn, digest = COPIED[name]
    actual = source_digest(fn)
    if actual != digest:
        log.warning(
            "Faust's delivery loop is not the one eager delivery was written for; left unchanged",
            extra={"sha256": actual},
        )
        return False
    return True


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any] | None:
    """Run `coro` until it first suspends. None if it finished (its exception, if any, is raised
    here); otherwise a task that goes on with it from where it stopped, as if it had been a task
    from the start (cancelling the task cancels what the coroutine is waiting on)."""
    try:
        awaiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_resume(coro, awaiting))


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], awaiting: Any) -> Generator[Any, None, Any]:
    """Drive a started coroutine the way asyncio.Task does: hand the future it is waiting on (or
    None, a bare yield) up to the enclosing task, then step the coroutine when that returns, and
    pass anything thrown in (a cancellation) on to it."""
    while True:
        try:
            yield awaiting
        except BaseException as exc:
            try:
                awaiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            awaiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


class SeedloopConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the aiokafka consumer with the transport's fetch wait."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        # faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer
        # (faust-streaming 0.15.3), verbatim except for the marked argument and module-qualified
        # names.
        isolation_level: str = "read_uncommitted"
        conf = self.app.conf
        if self.consumer.in_transaction:
            isolation_level = "read_committed"
        has_changelog_tables = bool(self.app.tables.changelog_topics)
        self._assignor = (
            self.app.assignor
            if self.app.conf.table_standby_replicas > 0 or has_changelog_tables
            else faust_aiokafka.RoundRobinPartitionAssignor
        )
        auth_settings = faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
        max_poll_interval = conf.broker_max_poll_interval or 0

        request_timeout = conf.broker_request_timeout
        session_timeout = conf.broker_session_timeout
        rebalance_timeout = conf.broker_rebalance_timeout

        if session_timeout > request_timeout:
            raise faust_aiokafka.ImproperlyConfigured(
                f"Setting broker_session_timeout={session_timeout} "
                f"cannot be greater than "
                f"broker_request_timeout={request_timeout}"
            )

        consumer_kwargs: dict[str, Any] = {}
        if faust_aiokafka._AIOKAFKA_HAS_API_VERSION:
            consumer_kwargs["api_version"] = conf.consumer_api_version
        return aiokafka.AIOKafkaConsumer(
            **consumer_kwargs,
            client_id=conf.broker_client_id,
            group_id=conf.id,
            group_instance_id=conf.consumer_group_instance_id,
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            partition_assignment_strategy=[self._assignor],
            enable_auto_commit=False,
            auto_offset_reset=conf.consumer_auto_offset_reset,
            max_poll_records=conf.broker_max_poll_records,
            max_poll_interval_ms=int(max_poll_interval * 1000.0),
            max_partition_fetch_bytes=conf.consumer_max_fetch_size,
            # Changed: upstream passes 1500.
            fetch_max_wait_ms=cast(SeedloopTransport, transport).fetch_max_wait_ms,
            request_timeout_ms=int(request_timeout * 1000.0),
            check_crcs=conf.broker_check_crcs,
            session_timeout_ms=int(session_timeout * 1000.0),
            rebalance_timeout_ms=int(rebalance_timeout * 1000.0),
            heartbeat_interval_ms=int(conf.broker_heartbeat_interval * 1000.0),
            isolation_level=isolation_level,
            metadata_max_age_ms=conf.consumer_metadata_max_age_ms,
            connections_max_idle_ms=conf.consumer_connections_max_idle_ms,
            **auth_settings,
        )


class SeedloopConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with our consumer thread and, if the transport says so, the eager
    delivery loop."""

    def _new_consumer_thread(self) -> SeedloopConsumerThread:
        # Faust's own, with our thread class.
        return SeedloopConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in the worker
        if not cast(SeedloopTransport, self.transport).eager_delivery:
            await super()._drain_messages(fetcher)
            return
        # faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15.3), verbatim
        # except for the marked changes (batch delivery: the `batch`/`pending` lines, the batch
        # branch and the delivery after each fetch; eager delivery: `_deliver` and its `suspended`
        # waiter) and two nested ifs joined.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        suspended: asyncio.Future[Any] | None = None
        batch = cast(SeedloopTransport, self.transport).batch_delivery
        batch_topics = batch.topics if batch is not None else frozenset()
        batch_max = batch.max_messages if batch is not None else 0
        pending: list[Message] = []

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # Changed: upstream awaits wait_first(callback(message),
                            # suspend_flow.wait()) here. A delivery that completes without blocking
                            # needs no tasks; one that blocks (full buffer) is awaited until done,
                            # or abandoned when the flow is suspended by a rebalance or the
                            # consumer stops, as upstream does.
                            if message.topic in batch_topics:
                                # Changed (batch delivery): collected, delivered below per fetch.
                                set_read_offset(tp, offset)
                                pending.append(message)
                                if len(pending) >= batch_max:
                                    suspended = await self._deliver_batch(pending, suspended)
                                    pending = []
                                continue
                            suspended = await self._deliver(
                                cast(Coroutine[Any, Any, Any], callback(message)), suspended
                            )
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    if pending:
                        suspended = await self._deliver_batch(pending, suspended)
                        pending = []
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
            if suspended is not None:
                suspended.cancel()

    async def _deliver(
        self, delivery: Coroutine[Any, Any, Any], suspended: asyncio.Future[Any] | None
    ) -> asyncio.Future[Any] | None:
        """Run one delivery (eagerly); if it blocks, await it until it is done, or abandon it when
        the flow is suspended or the consumer stops, as Faust's `wait_first` does. Returns the
        long-lived "suspended" waiter, created on the first delivery that blocks and shared by
        every later one until it fires."""
        blocked = start_eagerly(delivery)
        if blocked is None:
            return suspended
        if suspended is None or suspended.done():
            suspended = asyncio.ensure_future(self.wait_first(self.suspend_flow.wait()))
        try:
            await asyncio.wait((blocked, suspended), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            blocked.cancel()  # as wait_first's cleanup does when it is cancelled
            raise
        if blocked.done():
            blocked.result()  # a failed delivery raises here, as in wait_first
        else:
            blocked.cancel()
        return suspended

    async def _deliver_batch(
        self, messages: list[Message], suspended: asyncio.Future[Any] | None
    ) -> asyncio.Future[Any] | None:
        """Hand `messages` to the batch handler, less what Faust's stream would not deliver
        either: nothing while a rebalance has suspended the flow, and no message fetched under an
        older consumer generation. Faust seeks to the committed offsets after a rebalance, so what
        is held back here is fetched and delivered again."""
        batch = cast(SeedloopTransport, self.transport).batch_delivery
        assert batch is not None
        if self.suspend_flow.is_set() or not self.app.flow_control.is_active():
            return suspended
        generation = self.app.consumer_generation_id
        current = [m for m in messages if m.generation_id == generation]
        if not current:
            return suspended
        return await self._deliver(batch.handler(current), suspended)


class SeedloopTransport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer is `SeedloopConsumer`, configured per instance."""

    Consumer = SeedloopConsumer

    def __init__(
        self,
        url: list[URL],
        app: faust.App,
        *,
        fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS,
        eager_delivery: bool = False,
    ) -> None:
        super().__init__(url, app)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.eager_delivery = eager_delivery
        # Set by the app (`install_transport`, or later, before the app starts): see BatchDelivery.
        self.batch_delivery: BatchDelivery | None = None


def install_transport(
    app: faust.App, *, fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS, eager_delivery: bool = False
) -> SeedloopTransport:
    """Make `app` consume through `SeedloopTransport`. Call it right after building the app: Faust
    creates the transport on first use (`app.topic` does not use it; starting the app does).
    Eager delivery is left off, with a warning, on a Faust it was not written for."""
    if app._transport is not None:
        raise RuntimeError("the app already has a transport; install ours before it is used")
    transport = SeedloopTransport(
        app.conf.broker_consumer,
        app,
        fetch_max_wait_ms=fetch_max_wait_ms,
        eager_delivery=eager_delivery and eager_delivery_applies(),
    )
    app.transport = cast(TransportT, transport)
    return transport


def consumer_app_options(rebalance_timeout_s: float, datadir_prefix: str) -> dict[str, Any]:
    """faust.App options of every consuming app we run: the worker and the benchmark's stock
    counting agent share them, so the benchmark's baseline differs from the worker only in what
    the agent does per event."""
    return {
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_disable_leader": True,
        "broker_rebalance_timeout": rebalance_timeout_s,
        "broker_session_timeout": max(10.0, rebalance_timeout_s),
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        "datadir": tempfile.mkdtemp(prefix=datadir_prefix),
        "store": "memory://",
    }
