"""Deadlines of upstream attempts, enforced by one coarse sweep instead of a timer each.

`asyncio.timeout_at()` arms a libuv timer and cancels it (twice when rescheduled) and looks up the
running loop and task. On Python 3.11 each lookup was a getpid() syscall: ~40K instructions and three
syscalls per attempt, ~5% of a proxied request. Python 3.12 keeps the running loop in the thread
state (no syscall), but swapping this module for `asyncio.timeout_at` still measured +14K instructions
per proxied request under callgrind (860K against 845K, 1.7%: uvloop makes, arms and closes a libuv
timer handle per scope), so the sweep stays. Here an open scope is a set entry, and one timer fires
at the earliest deadline of the scopes open when it was armed and cancels the tasks whose deadline
passed; it stops when it finds no scope open. It is re-armed only for a scope whose deadline comes more than
a tick before it (deadlines of the same policy grow with the clock, so that is rare), and never on
leaving a scope: a timer that finds nothing overdue just arms for the next deadline. (It used to tick
every `TICK_SECONDS` while a scope was open: a relayed stream, whose scope stays open for its whole
life, paid a sweep every 10 ms, ~4,700 instructions a relayed event under callgrind for one stream
with events 5 ms apart, 12% of the event.) A deadline fires up to one tick late, noise against
timeouts of seconds.

Otherwise the semantics are asyncio.timeout's: on expiry the task is cancelled, and leaving the scope
turns that cancellation into `TimeoutError` (a cancellation from elsewhere stays a cancellation).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

TICK_SECONDS = 0.01
"""The sweep runs at most once per tick, so a deadline fires up to one tick late."""
_NEVER = float("inf")


class Deadlines:
    """The open scopes of one event loop and the timer that sweeps them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._open: set[DeadlineScope] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER
        """Loop time the armed timer fires at (`_NEVER` when none is armed)."""

    def now(self) -> float:
        """The loop's clock, on which deadlines are given."""
        return self.loop.time()

    def scope(self, when: float) -> DeadlineScope:
        """`async with deadlines.scope(when):` cancels the block at loop time `when` (TimeoutError)."""
        return DeadlineScope(self, when)

    def _enter(self, scope: DeadlineScope) -> None:
        self._open.add(scope)
        if scope.when + TICK_SECONDS < self._timer_at:
            self._arm(scope.when)

    def _leave(self, scope: DeadlineScope) -> None:
        self._open.discard(scope)

    def _moved(self, scope: DeadlineScope) -> None:
        """An open scope's deadline changed: fire in time for it if it is now the earliest."""
        if scope in self._open and scope.when + TICK_SECONDS < self._timer_at:
            self._arm(scope.when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._timer, self._timer_at = None, _NEVER
        now = self.loop.time()
        earliest = _NEVER
        overdue: list[DeadlineScope] = []
        for scope in self._open:
            if scope.when <= now:
                overdue.append(scope)
            elif scope.when < earliest:
                earliest = scope.when
        for scope in overdue:
            scope.expire()
        if earliest < _NEVER:  # deadlines close together are swept together, a tick apart at least
            self._arm(max(earliest, now + TICK_SECONDS))

    def close(self) -> None:
        """Cancel the pending sweep, at shutdown (a scope opened later arms it again)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, _NEVER


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
        self._deadlines._moved(self)

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
