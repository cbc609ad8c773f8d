"""start_eagerly behaves like a task for every coroutine, without one when it does not block; the
eager delivery loop applies only to the Faust it was written against."""

from __future__ import annotations

import asyncio

import pytest

from stream_processors.faust_tuning import (
    UPSTREAM_DRAIN_SHA256,
    deliver_eagerly,
    start_eagerly,
    upstream_drain_digest,
)


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


def test_the_installed_faust_is_the_one_the_eager_loop_was_written_against() -> None:
    # Fails on a faust-streaming upgrade: re-read its Consumer._drain_messages, port the one
    # changed statement, and update the digest.
    assert upstream_drain_digest() == UPSTREAM_DRAIN_SHA256
    assert deliver_eagerly() is True
    assert deliver_eagerly() is True  # idempotent
    assert upstream_drain_digest() == UPSTREAM_DRAIN_SHA256  # the original stays reachable
