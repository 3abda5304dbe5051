"""Leader election with a clock an hour off, against the real API server: two electors share one Lease,
one of them with its wall clock (which stamps `renewTime`) and its monotonic clock (which judges expiry)
skewed. It never steals a lease that is being renewed, is not stuck when the holder stops renewing, takes
over within the bound the lease duration sets, and at no moment do two electors act as leader.

The electors are the operator's own `LeaderElector` on `KubeLeaseLock`; the only thing added is a switch
that cuts one elector off the API server (its calls fail), which is how a holder stops renewing while it
still believes it leads until its renew deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import config as kube_config

from modelroute_operator.clients.leader import (
    JITTER,
    Clock,
    KubeLeaseLock,
    LeaderElector,
    LeaseRecord,
    LeaseSettings,
)
from tests.kube_harness import ControlPlane, Kubectl, new_namespace

pytestmark = pytest.mark.integration

LEASE_SECONDS = 4
"""Renew deadline 2.7 s, retries every 0.53 s (client-go's proportions, as `--lease-seconds 4`)."""
SLACK_SECONDS = 1.5
"""API round trips and scheduling on a loaded machine, on top of the protocol's own bound."""


class CuttableLock:
    """The real Lease lock, with a switch that makes every call fail as if the network were gone."""

    def __init__(self, inner: KubeLeaseLock) -> None:
        self.inner, self.cut = inner, False
        self.last_write = 0.0
        """Real monotonic time of the last write that reached the API server."""

    def _reachable(self) -> None:
        if self.cut:
            raise ConnectionError("cut off from the API server (test)")

    def get(self) -> LeaseRecord | None:
        self._reachable()
        return self.inner.get()

    def create(self, record: LeaseRecord) -> None:
        self._reachable()
        self.inner.create(record)
        self.last_write = time.monotonic()

    def update(self, record: LeaseRecord) -> None:
        self._reachable()
        self.inner.update(record)
        self.last_write = time.monotonic()


def skewed(seconds: float) -> Clock:
    return Clock(
        monotonic=lambda: time.monotonic() + seconds,
        wall=lambda: datetime.now(UTC) + timedelta(seconds=seconds),
    )


@dataclass
class Candidate:
    """One elector and the task acquiring, then keeping, the lease."""

    elector: LeaderElector
    lock: CuttableLock
    task: asyncio.Task[None] | None = None
    acquired_at: float | None = None
    """Real monotonic time when `acquire` returned."""

    def acting(self) -> bool:
        """Whether it behaves as leader now: acquired, not yet given up, still running."""
        return (
            self.acquired_at is not None
            and self.task is not None
            and not self.task.done()
            and not self.elector.lost.is_set()
        )

    async def _run(self) -> None:
        await self.elector.acquire()
        self.acquired_at = time.monotonic()
        await self.elector.keep()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.elector.settings.identity)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class SplitBrainWatch:
    """Polls every candidate every 20 ms; remembers any moment two acted as leader at once."""

    candidates: list[Candidate]
    overlaps: list[str] = field(default_factory=list)
    polls: int = 0

    async def run(self) -> None:
        while True:
            acting = [c.elector.settings.identity for c in self.candidates if c.acting()]
            self.polls += 1
            if len(acting) > 1:
                self.overlaps.append(",".join(acting))
            await asyncio.sleep(0.02)


async def wait_until(check: Callable[[], bool], what: str, within: float) -> float:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def hold_for(seconds: float, check: Callable[[], bool], what: str) -> None:
    """Assert `check` stays true for `seconds`, polled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("skew", [3600.0, -3600.0], ids=["ahead-1h", "behind-1h"])
async def test_a_skewed_clock_neither_steals_nor_waits_forever(
    plane: ControlPlane, kubectl: Kubectl, skew: float
) -> None:
    ns = new_namespace(kubectl, "lease-skew")
    api = kube_config.new_client_from_config(config_file=str(plane.kubeconfig))
    lease_name = "modelroute-operator"

    def candidate(identity: str, clock: Clock) -> Candidate:
        lock = CuttableLock(KubeLeaseLock(ns, lease_name, api_client=api))
        settings = LeaseSettings.for_lease(ns, lease_name, LEASE_SECONDS, identity=identity)
        return Candidate(LeaderElector(settings, lock, clock), lock)

    def holder() -> str:
        record = KubeLeaseLock(ns, lease_name, api_client=api).get()
        return record.holder if record else ""

    settings = LeaseSettings.for_lease(ns, lease_name, LEASE_SECONDS, identity="x")
    # The latest a candidate can take over after the holder's last write: it sees that write at its next
    # attempt (one retry later at most), waits the lease duration from then, and acts at its next attempt.
    bound = LEASE_SECONDS + 2 * settings.retry_seconds * JITTER + SLACK_SECONDS

    plain, off = candidate("plain", Clock()), candidate("skewed", skewed(skew))
    later = candidate("plain-2", Clock())
    watch = SplitBrainWatch([plain, off, later])
    watcher = asyncio.get_running_loop().create_task(watch.run())
    try:
        # 1. The plain clock leads; the skewed one, whose clock makes renewTime look an hour off, waits.
        plain.start()
        await wait_until(plain.acting, "the first leader", 30)
        off.start()
        await hold_for(
            1.5 * LEASE_SECONDS, lambda: not off.acting(), "the skewed candidate stole a held lease"
        )
        assert holder() == "plain"

        # 2. The holder is cut off: it gives up at its renew deadline, and only then, within the bound,
        # the skewed candidate takes over.
        plain.lock.cut = True
        last_write = plain.lock.last_write
        took_over = await wait_until(off.acting, "the skewed candidate to take over", 3 * LEASE_SECONDS)
        assert plain.elector.lost.is_set()
        assert LEASE_SECONDS - 0.25 <= took_over - last_write <= bound, took_over - last_write
        assert holder() == "skewed"
        await plain.stop()

        # 3. Roles swapped: the skewed clock holds, a plain one waits and then takes over.
        later.start()
        await hold_for(
            1.5 * LEASE_SECONDS, lambda: not later.acting(), "the plain candidate stole a held lease"
        )
        assert holder() == "skewed"
        off.lock.cut = True
        last_write = off.lock.last_write
        took_over = await wait_until(later.acting, "the plain candidate to take over", 3 * LEASE_SECONDS)
        assert off.elector.lost.is_set()
        assert LEASE_SECONDS - 0.25 <= took_over - last_write <= bound, took_over - last_write
        assert holder() == "plain-2"
    finally:
        watcher.cancel()
        for c in (plain, off, later):
            await c.stop()
        api.close()
    assert watch.overlaps == [], f"two leaders at once: {watch.overlaps[:5]}"
    assert watch.polls > 100
