"""start_eagerly behaves like a task for every coroutine, without one when it does not block; our
transport is what the worker's app consumes through, and only that app: Faust itself is unchanged;
the fetch wait reaches aiokafka; the copied Faust methods are the installed Faust's."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from pydantic import SecretStr

from seedloop import runtime
from seedloop.settings import Settings
from stream_processors.faust_transport import (
    COPIED,
    FAUST_FETCH_MAX_WAIT_MS,
    BatchDelivery,
    SeedloopConsumer,
    SeedloopConsumerThread,
    SeedloopTransport,
    changed_upstream,
    consumer_app_options,
    install_transport,
    start_eagerly,
)
from stream_processors.worker import build_app

REPO = Path(__file__).resolve().parents[3]


def test_a_coroutine_that_does_not_block_runs_to_the_end_without_a_task() -> None:
    seen: list[str] = []

    async def deliver() -> None:
        lock = asyncio.Lock()
        async with lock:  # an uncontended lock does not suspend
            seen.append("delivered")

    async def main() -> None:
        before = len(asyncio.all_tasks())
        assert start_eagerly(deliver()) is None
        assert seen == ["delivered"]
        assert len(asyncio.all_tasks()) == before

    asyncio.run(main())


def test_an_exception_before_the_first_suspension_is_raised_to_the_caller() -> None:
    async def broken() -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        start_eagerly(broken())


def test_a_coroutine_that_blocks_goes_on_as_a_task_with_its_result() -> None:
    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        queue.put_nowait(1)
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("start")
            await queue.put(2)  # full: suspends until a get
            steps.append("put")
            await asyncio.sleep(0)  # a bare yield
            await asyncio.sleep(0.001)  # a timer future
            steps.append("end")
            return "done"

        blocked = start_eagerly(deliver())
        assert blocked is not None and not blocked.done()
        assert steps == ["start"]
        assert await queue.get() == 1
        assert await asyncio.wait_for(blocked, 1) == "done"
        assert steps == ["start", "put", "end"]
        assert queue.get_nowait() == 2

    asyncio.run(main())


def test_cancelling_a_blocked_delivery_cancels_what_it_waits_on_and_runs_its_cleanup() -> None:
    async def main() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        cleaned: list[bool] = []

        async def deliver() -> None:
            try:
                await never
            finally:
                cleaned.append(True)

        blocked = start_eagerly(deliver())
        assert blocked is not None
        await asyncio.sleep(0)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        assert cleaned == [True]
        assert never.cancelled()

    asyncio.run(main())


def test_an_exception_after_blocking_reaches_whoever_awaits_the_task() -> None:
    async def main() -> None:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def deliver() -> None:
            await gate
            raise RuntimeError("failed after resuming")

        blocked = start_eagerly(deliver())
        assert blocked is not None
        gate.set_result(None)
        with pytest.raises(RuntimeError, match="after resuming"):
            await blocked

    asyncio.run(main())


def test_the_installed_faust_is_the_one_the_copied_methods_were_taken_from() -> None:
    # Fails on a faust-streaming upgrade: re-read each method named here, port the changed
    # statement into its copy in stream_processors/faust_transport.py, and update the digest.
    assert changed_upstream() == []
    assert set(COPIED) == {
        "Consumer._drain_messages",
        "aiokafka Consumer._new_consumer_thread",
        "AIOKafkaConsumerThread._create_worker_consumer",
    }


@pytest.fixture(autouse=True)
def collect_the_apps() -> Iterator[None]:
    """Finalize the apps and unstarted clients a test built while it ends. Left to a later garbage
    collection, their finalizers can run inside another module's `ast.parse` (pytest's assertion
    rewriting), where CPython 3.11.7 raises "AST constructor recursion depth mismatch"."""
    yield
    gc.collect()


@pytest.fixture
def worker_app() -> Iterator[faust.App]:
    # Nothing is started or connected: port 1 and a Redis URL are only written into clients.
    settings = Settings(
        seeds_dir=REPO / "seeds",
        kafka_bootstrap_servers="127.0.0.1:1",
        redis_url=SecretStr("redis://127.0.0.1:1"),
        redis_mode="standalone",
        fetch_max_wait_ms=50,
    )
    yield build_app(runtime.worker_config(settings, runtime.scenario_of(settings)))


def _stock_app(app_id: str, rebalance_timeout_s: float = 3.0) -> faust.App:
    return faust.App(
        app_id, broker="kafka://127.0.0.1:1", **consumer_app_options(rebalance_timeout_s, "seedloop-test-")
    )


def test_the_worker_app_consumes_through_our_transport_and_no_other_app_does(worker_app: faust.App) -> None:
    transport = worker_app.transport
    assert type(transport) is SeedloopTransport
    assert transport.Consumer is SeedloopConsumer
    assert transport.fetch_max_wait_ms == 50
    assert transport.eager_delivery is True
    # Built after the worker app, in the same process: Faust's own transport and classes.
    stock = _stock_app("another-app")
    assert type(stock.transport) is faust_aiokafka.Transport
    assert stock.transport.Consumer is faust_aiokafka.Consumer
    # Nothing in Faust was replaced: its classes still have their own methods.
    for fn, _ in COPIED.values():
        assert fn.__module__.startswith("faust.")
    assert faust_aiokafka.Consumer._drain_messages is BaseConsumer._drain_messages
    assert faust_aiokafka.Consumer._new_consumer_thread is COPIED["aiokafka Consumer._new_consumer_thread"][0]
    assert (
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
        is COPIED["AIOKafkaConsumerThread._create_worker_consumer"][0]
    )


def _aiokafka_consumer(app: faust.App) -> Any:
    # The aiokafka consumer the app's consumer thread would create when it starts (not started).
    thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
    return thread._create_worker_consumer(app.transport)


def _settings(consumer: Any) -> dict[str, Any]:
    # The constructor arguments aiokafka keeps as plain values (objects such as the assignor by type).
    plain = (int, float, str, bool, type(None))
    return {
        k: v if isinstance(v, plain) else [type(x) for x in v]
        for k, v in vars(consumer).items()
        if isinstance(v, (*plain, tuple, list))
    }


def test_the_fetch_wait_reaches_aiokafka_and_nothing_else_differs(worker_app: faust.App) -> None:
    async def main() -> None:
        ours = _aiokafka_consumer(worker_app)
        assert isinstance(worker_app.consumer._thread, SeedloopConsumerThread)  # type: ignore[attr-defined]
        assert ours._fetch_max_wait_ms == 50  # what aiokafka hands its Fetcher on start()
        stock = _aiokafka_consumer(_stock_app(worker_app.conf.id, worker_app.conf.broker_rebalance_timeout))
        assert stock._fetch_max_wait_ms == FAUST_FETCH_MAX_WAIT_MS
        # The copied constructor call passes every other argument as Faust does.
        mine, theirs = _settings(ours), _settings(stock)
        assert mine.pop("_fetch_max_wait_ms") == 50 and theirs.pop("_fetch_max_wait_ms") == 1500
        assert mine == theirs
        await ours.stop()  # never started: only marks it closed
        await stock.stop()

    asyncio.run(main())


def test_the_benchmark_agent_can_take_the_fetch_wait_without_eager_delivery() -> None:
    app = _stock_app("bench-agent")
    transport = install_transport(app, fetch_max_wait_ms=20)
    assert app.transport is transport and transport.eager_delivery is False

    async def main() -> None:
        consumer = _aiokafka_consumer(app)
        assert consumer._fetch_max_wait_ms == 20
        await consumer.stop()

    asyncio.run(main())


def test_installing_after_the_transport_was_created_is_refused() -> None:
    app = _stock_app("late")
    assert type(app.transport) is faust_aiokafka.Transport
    with pytest.raises(RuntimeError, match="already has a transport"):
        install_transport(app, fetch_max_wait_ms=20)


def test_the_worker_app_takes_its_action_topics_in_batches(worker_app: faust.App) -> None:
    batch = worker_app.transport.batch_delivery
    assert batch is not None
    cfg = worker_app.seedloop_runtime.cfg  # type: ignore[attr-defined]
    assert batch.topics == frozenset(cfg.topic_actions)
    assert batch.max_messages == cfg.batch_max
    # The dead-letter topic is produced to, never consumed: not in the batch topics either.
    assert cfg.dead_letter_topic not in batch.topics


class _Fetched:
    """What the batch path reads of a fetched message: its consumer generation."""

    def __init__(self, offset: int, generation_id: int) -> None:
        self.offset = offset
        self.generation_id = generation_id


def test_a_batch_delivers_only_what_faust_would_deliver(worker_app: faust.App) -> None:
    """Nothing while a rebalance suspends the flow, and nothing fetched under an older consumer
    generation: Faust seeks back to the committed offsets after a rebalance, so those messages are
    fetched again, and delivering the stale copies first would apply them out of turn."""
    delivered: list[list[int]] = []

    async def handler(messages: list[Any]) -> None:
        delivered.append([m.offset for m in messages])

    async def main() -> None:
        consumer = worker_app.consumer
        worker_app.transport.batch_delivery = BatchDelivery(handler, frozenset({"t"}), 10)
        worker_app.consumer_generation_id = 7
        worker_app.flow_control.resume()
        consumer.suspend_flow.clear()
        await consumer._deliver_batch([_Fetched(1, 7), _Fetched(2, 6), _Fetched(3, 7)], None)
        assert delivered == [[1, 3]]
        await consumer._deliver_batch([_Fetched(4, 6)], None)
        assert delivered == [[1, 3]]  # all stale: the handler is not called with an empty batch
        consumer.suspend_flow.set()  # a rebalance began
        await consumer._deliver_batch([_Fetched(5, 7)], None)
        assert delivered == [[1, 3]]
        consumer.suspend_flow.clear()
        worker_app.flow_control.suspend()
        await consumer._deliver_batch([_Fetched(6, 7)], None)
        assert delivered == [[1, 3]]

    asyncio.run(main())
