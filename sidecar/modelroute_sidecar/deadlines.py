"""Deadlines of upstream attempts, enforced by one coarse sweep instead of a timer each.

`asyncio.timeout_at()` arms a libuv timer and cancels it (twice when rescheduled) and looks up the
running loop and task. On Python 3.11 each lookup was a getpid() syscall: ~40K instructions and three
syscalls per attempt, ~5% of a proxied request. Python 3.12 keeps the running loop in the thread
state (no syscall), but swapping this module for `asyncio.timeout_at` still measured +14K instructions
per proxied request under callgrind (860K against 845K, 1.7%: uvloop makes, arms and closes a libuv
timer handle per scope), so the sweep stays. Here an open scope is a set entry, and one timer, armed
only while some scope is open, ticks every `TICK_SECONDS` and cancels the tasks whose deadline passed.
A deadline fires up to one tick late, noise against timeouts of seconds.

Otherwise the semantics are asyncio.timeout's: on expiry the task is cancelled, and leaving the scope
turns that cancellation into `TimeoutError` (a cancellation from elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

TICK_SECONDS = 0.01


class Deadlines:
    """The open scopes of one event loop and the timer that sweeps them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._open: set[DeadlineScope] = set()
        self._timer: asyncio.TimerHandle | None = None

    def now(self) -> float:
        """The loop's clock, on which deadlines are given."""
        return self.loop.time()

    def scope(self, when: float) -> DeadlineScope:
        """`async with deadlines.scope(when):` cancels the block at loop time `when` (TimeoutError)."""
        return DeadlineScope(self, when)

    def _enter(self, scope: DeadlineScope) -> None:
        self._open.add(scope)
        if self._timer is None:
            self._timer = self.loop.call_later(TICK_SECONDS, self._sweep)

    def _leave(self, scope: DeadlineScope) -> None:
        self._open.discard(scope)

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        for scope in [s for s in self._open if s.when <= now]:
            scope.expire()
        if self._open:
            self._timer = self.loop.call_later(TICK_SECONDS, self._sweep)

    def close(self) -> None:
        """Cancel the pending sweep, at shutdown (a scope opened later arms it again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class DeadlineScope:
    """One block under a deadline; `reschedule` moves the deadline while the block runs."""

    __slots__ = ("_cancelling", "_deadlines", "_left", "_task", "expired", "when")

    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self._deadlines = deadlines
        self.when = when
        self.expired = False
        self._left = False
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def reschedule(self, when: float) -> None:
        """A new deadline (no effect once expired: the cancellation is already on its way)."""
        self.when = when

    def expire(self) -> None:
        """Cancel the block's task now (the sweep calls this when the deadline passed); nothing once
        the block was left, so a cancellation never outlives its scope."""
        if self.expired or self._left or self._task is None:
            return
        self.expired = True
        self._deadlines._leave(self)
        self._task.cancel()

    async def __aenter__(self) -> DeadlineScope:
        task = asyncio.current_task(self._deadlines.loop)  # the loop given: no get_running_loop()
        if task is None:
            raise RuntimeError("a deadline scope must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self.when <= self._deadlines.loop.time():
            # already late: cancel once this step yields, as asyncio does (cancelling the running task
            # here would leave the cancellation pending if the block ended without awaiting)
            self._deadlines.loop.call_soon(self.expire)
        else:
            self._deadlines._enter(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._left = True
        self._deadlines._leave(self)
        if not self.expired:
            return
        assert self._task is not None
        uncancelled = self._task.uncancel() <= self._cancelling  # always undo our own cancel
        if uncancelled and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            raise TimeoutError from exc
