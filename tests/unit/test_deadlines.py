"""Deadline scopes: asyncio.timeout's semantics, enforced by one sweep per loop."""

from __future__ import annotations

import asyncio

import pytest

from modelroute_sidecar.deadlines import TICK_SECONDS, Deadlines


@pytest.fixture
async def deadlines() -> Deadlines:
    return Deadlines(asyncio.get_running_loop())


async def test_a_block_that_ends_in_time_is_left_alone(deadlines: Deadlines) -> None:
    async with deadlines.scope(deadlines.now() + 5) as scope:
        await asyncio.sleep(0)
    assert not scope.expired


async def test_a_block_past_its_deadline_gets_timeout_error_about_a_tick_late(deadlines: Deadlines) -> None:
    started = deadlines.now()
    with pytest.raises(TimeoutError):
        async with deadlines.scope(started + 0.05):
            await asyncio.sleep(10)
    elapsed = deadlines.now() - started
    assert 0.05 - 0.002 <= elapsed < 0.05 + TICK_SECONDS + 0.5  # the upper slack is for a loaded machine


async def test_a_deadline_already_past_cancels_at_the_first_await(deadlines: Deadlines) -> None:
    reached = []

    async def late() -> None:
        async with deadlines.scope(deadlines.now() - 1):
            reached.append(True)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await late()
    assert reached


async def test_reschedule_moves_the_deadline(deadlines: Deadlines) -> None:
    async with deadlines.scope(deadlines.now() + 0.03) as scope:
        scope.reschedule(deadlines.now() + 5)
        await asyncio.sleep(0.1)
    assert not scope.expired

    async def shortened() -> None:
        async with deadlines.scope(deadlines.now() + 5) as scope:
            scope.reschedule(deadlines.now() + 0.02)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await shortened()


async def test_a_cancellation_from_outside_stays_a_cancellation(deadlines: Deadlines) -> None:
    entered = asyncio.Event()

    async def guarded() -> None:
        async with deadlines.scope(deadlines.now() + 5):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(guarded())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_inner_asyncio_timeout_is_its_own(deadlines: Deadlines) -> None:
    async with deadlines.scope(deadlines.now() + 5) as scope:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        await asyncio.sleep(0)  # the task is not left cancelled
    assert not scope.expired


async def test_only_overdue_blocks_are_cancelled_and_the_timer_stops_when_idle(deadlines: Deadlines) -> None:
    async def block(seconds: float, sleep: float) -> str:
        try:
            async with deadlines.scope(deadlines.now() + seconds):
                await asyncio.sleep(sleep)
        except TimeoutError:
            return "timeout"
        return "done"

    outcomes = await asyncio.gather(
        *(block(0.03, 0.2) for _ in range(5)), *(block(2, 0.05) for _ in range(5))
    )
    assert outcomes == ["timeout"] * 5 + ["done"] * 5
    for _ in range(200):  # the sweep that finds nothing open does not re-arm (polled, up to ~2 s)
        if deadlines._timer is None:
            break
        await asyncio.sleep(TICK_SECONDS)
    assert deadlines._timer is None


async def test_a_late_scope_whose_block_never_awaits_leaves_no_cancellation_behind(
    deadlines: Deadlines,
) -> None:
    async def quick() -> str:
        async with deadlines.scope(deadlines.now() - 1):
            pass  # ends before any await: nothing to time out
        await asyncio.sleep(0.02)  # must not raise CancelledError
        return "done"

    assert await asyncio.create_task(quick()) == "done"
