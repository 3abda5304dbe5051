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
        *(block(0.03, 0.2) for _ in range(5)), *(block(0.5, 0.05) for _ in range(5))
    )
    assert outcomes == ["timeout"] * 5 + ["done"] * 5
    # the timer armed for the 0.5 s deadlines fires once more, finds nothing open and does not re-arm
    for _ in range(300):  # polled, up to ~3 s
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


async def test_a_long_open_scope_is_swept_at_its_deadline_not_every_tick(deadlines: Deadlines) -> None:
    sweeps = 0
    sweep = deadlines._sweep

    def counted() -> None:
        nonlocal sweeps
        sweeps += 1
        sweep()

    deadlines._sweep = counted  # type: ignore[method-assign]
    async with deadlines.scope(deadlines.now() + 30) as scope:
        await asyncio.sleep(20 * TICK_SECONDS)  # a relayed stream: its scope stays open
        assert deadlines._timer is not None
        assert deadlines._timer.when() >= scope.when - 0.001  # armed for the deadline, not for the tick
    assert sweeps == 0
    assert not scope.expired


async def test_an_earlier_deadline_than_the_armed_one_still_fires_in_time(deadlines: Deadlines) -> None:
    async def block(seconds: float, sleep: float) -> str:
        try:
            async with deadlines.scope(deadlines.now() + seconds):
                await asyncio.sleep(sleep)
        except TimeoutError:
            return "timeout"
        return "done"

    slow = asyncio.create_task(block(30, 0.5))  # arms the timer 30 s out
    await asyncio.sleep(0)
    started = deadlines.now()
    assert await block(0.03, 10) == "timeout"  # re-armed for its own deadline
    assert deadlines.now() - started < 0.03 + TICK_SECONDS + 0.5  # the slack is for a loaded machine
    assert await slow == "done"


async def test_a_deadline_moved_earlier_fires_at_the_new_time(deadlines: Deadlines) -> None:
    started = deadlines.now()

    async def shortened() -> None:
        async with deadlines.scope(started + 30) as scope:
            await asyncio.sleep(0)  # the timer is armed 30 s out
            scope.reschedule(deadlines.now() + 0.03)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await shortened()
    assert deadlines.now() - started < 0.03 + TICK_SECONDS + 0.5  # the slack is for a loaded machine
