"""Leader election with client-go semantics: expiry judged by the candidate's own monotonic clock since it
last saw the record change, renewals bounded by the renew deadline, and wall clocks that may be hours
apart changing nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from tests.kube_harness import wait_for

from modelroute_operator.clients.leader import (
    Clock,
    LeaderElector,
    LeaseConflictError,
    LeaseKeeper,
    LeaseRecord,
    LeaseSettings,
    default_identity,
)

HOUR = timedelta(hours=1)
BASE = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@dataclass
class Store:
    """One Lease in memory with a resourceVersion; `gate` cleared makes every call hang."""

    record: LeaseRecord | None = None
    version: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def __post_init__(self) -> None:
        self.gate.set()

    def wait(self) -> None:
        self.calls += 1
        self.gate.wait(30)


@dataclass
class FakeLock:
    store: Store
    seen: int = -1

    def get(self) -> LeaseRecord | None:
        self.store.wait()
        self.seen = self.store.version
        return self.store.record

    def create(self, record: LeaseRecord) -> None:
        self.store.wait()
        if self.store.record is not None:
            raise LeaseConflictError("exists")
        self._write(record)

    def update(self, record: LeaseRecord) -> None:
        self.store.wait()
        if self.seen != self.store.version:
            raise LeaseConflictError("changed")
        self._write(record)

    def _write(self, record: LeaseRecord) -> None:
        self.store.record = record
        self.store.version += 1
        self.seen = self.store.version


@dataclass
class FakeClock:
    """A monotonic clock the test moves, and a wall clock `skew` away from the true time."""

    mono: float = 1000.0
    skew: timedelta = timedelta()

    def clock(self) -> Clock:
        return Clock(
            monotonic=lambda: self.mono, wall=lambda: BASE + timedelta(seconds=self.mono) + self.skew
        )


def candidate(name: str, store: Store, clock: FakeClock, lease: int = 15) -> LeaderElector:
    settings = LeaseSettings(namespace="ns", identity=name, lease_seconds=lease)
    return LeaderElector(settings, FakeLock(store), clock.clock())


@pytest.mark.parametrize("holder_skew", [HOUR, -HOUR, timedelta()], ids=["ahead", "behind", "in-step"])
def test_a_holders_skewed_clock_neither_blocks_nor_hands_over_the_lease(holder_skew: timedelta) -> None:
    store = Store()
    a_clock, b_clock = FakeClock(skew=holder_skew), FakeClock(mono=5.0)  # unrelated monotonic origins
    a, b = candidate("a", store, a_clock), candidate("b", store, b_clock)
    assert a.try_acquire_or_renew() and a.is_leader()
    assert (
        store.record is not None and store.record.renew_time == BASE + timedelta(seconds=1000) + holder_skew
    )

    # While the holder renews, the candidate never takes over, however long this goes on.
    for _ in range(20):
        assert not b.try_acquire_or_renew()
        a_clock.mono += 10
        b_clock.mono += 10
        assert a.try_acquire_or_renew()
    assert store.record.holder == "a"

    # The holder stops. The candidate waits a full lease by its own clock from when it saw the last
    # change (an hour-ahead renewTime does not make it wait an hour; an hour-behind one does not let it
    # take over at once), then takes over.
    assert not b.try_acquire_or_renew()  # sees the last renewal now
    b_clock.mono += 14.9
    assert not b.try_acquire_or_renew()
    b_clock.mono += 0.2
    assert b.try_acquire_or_renew() and b.is_leader()
    assert store.record.holder == "b" and store.record.transitions == 1


@pytest.mark.parametrize("candidate_skew", [HOUR, -HOUR], ids=["ahead", "behind"])
def test_a_candidates_skewed_clock_does_not_make_it_steal(candidate_skew: timedelta) -> None:
    store = Store()
    a_clock, b_clock = FakeClock(), FakeClock(skew=candidate_skew)
    a, b = candidate("a", store, a_clock), candidate("b", store, b_clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b_clock.mono += 14
    assert not b.try_acquire_or_renew()
    assert store.record is not None and store.record.holder == "a"


def test_the_expiry_uses_the_holders_lease_duration() -> None:
    store = Store()
    a_clock, b_clock = FakeClock(), FakeClock()
    a = candidate("a", store, a_clock, lease=30)
    b = candidate("b", store, b_clock, lease=15)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b_clock.mono += 20  # past b's own 15 s, within the 30 s the holder asked for
    assert not b.try_acquire_or_renew()
    b_clock.mono += 11
    assert b.try_acquire_or_renew()


def test_renewals_keep_the_acquire_time_and_a_takeover_counts_a_transition() -> None:
    store = Store()
    a_clock, b_clock = FakeClock(), FakeClock()
    a, b = candidate("a", store, a_clock), candidate("b", store, b_clock)
    assert a.try_acquire_or_renew()
    assert store.record is not None
    acquired = store.record.acquire_time
    a_clock.mono += 5
    assert a.try_acquire_or_renew()
    assert store.record.acquire_time == acquired and store.record.renew_time != acquired
    assert store.record.transitions == 0
    assert not b.try_acquire_or_renew()
    b_clock.mono += 16
    assert b.try_acquire_or_renew()
    assert store.record.transitions == 1 and store.record.acquire_time != acquired
    # The old leader finds out on its next attempt and does not take the lease back.
    a_clock.mono += 1
    assert not a.try_acquire_or_renew() and not a.is_leader()
    assert store.record.holder == "b"


def test_a_released_lease_is_taken_at_once() -> None:
    store = Store()
    a, b = candidate("a", store, FakeClock()), candidate("b", store, FakeClock())
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert store.record is not None and store.record.holder == "" and store.record.lease_seconds == 1
    assert b.try_acquire_or_renew() and store.record.holder == "b"


def test_two_candidates_racing_for_a_free_lease_get_one_leader() -> None:
    store = Store()
    a, b = candidate("a", store, FakeClock()), candidate("b", store, FakeClock())
    b.try_acquire_or_renew()  # both read "no lease" / b creates it
    assert not a.try_acquire_or_renew()
    assert [a.is_leader(), b.is_leader()] == [False, True]


def test_the_identity_is_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "modelroute-operator-7d9c-x2x")
    assert default_identity() == "modelroute-operator-7d9c-x2x"
    assert LeaseSettings(namespace="ns").identity == "modelroute-operator-7d9c-x2x"
    monkeypatch.delenv("POD_NAME")
    assert default_identity().endswith(f"-{__import__('os').getpid()}")


@pytest.mark.parametrize(
    ("lease", "deadline", "retry", "field"),
    [(10, 10.0, 2.0, "lease_seconds"), (15, 2.0, 2.0, "renew_deadline_seconds")],
)
def test_settings_that_would_let_two_leaders_overlap_are_refused(
    lease: int, deadline: float, retry: float, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        LeaseSettings(
            namespace="ns", lease_seconds=lease, renew_deadline_seconds=deadline, retry_seconds=retry
        )


def test_client_go_proportions() -> None:
    settings = LeaseSettings.for_lease("ns", "lease", 15, identity="me")
    assert (settings.renew_deadline_seconds, settings.retry_seconds) == (10.0, 2.0)


# ------------------------------------------------------------------------------------- the loops


def fast(name: str, store: Store) -> LeaderElector:
    settings = LeaseSettings(
        namespace="ns", identity=name, lease_seconds=2, renew_deadline_seconds=0.6, retry_seconds=0.1
    )
    return LeaderElector(settings, FakeLock(store))


async def test_a_leader_whose_renewals_hang_stops_within_the_renew_deadline() -> None:
    store = Store()
    leader = fast("a", store)
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    try:
        await asyncio.to_thread(wait_for, lambda: store.calls >= 4, "a few renewals")
        store.gate.clear()  # the API server stops answering
        hung_at = time.monotonic()
        await asyncio.wait_for(leader.lost.wait(), 3)
        # Gave up before a candidate could take over (2 s after the last renewal it saw).
        assert time.monotonic() - hung_at < 0.6 + 0.3
    finally:
        store.gate.set()
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_leader_whose_lease_was_taken_stops() -> None:
    store = Store()
    leader = fast("a", store)
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    store.record = LeaseRecord("b", 2, BASE, BASE, 1)  # someone overwrote it (e.g. an operator by hand)
    store.version += 1
    await asyncio.wait_for(leader.lost.wait(), 3)
    assert keeper.done()


async def test_cancelling_the_keeper_is_not_a_loss() -> None:
    store = Store()
    leader = fast("a", store)
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    await asyncio.sleep(0.3)
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    assert not leader.lost.is_set()
    assert leader.release() and store.record is not None and store.record.holder == ""


async def test_a_standby_takes_over_a_crashed_leaders_lease_after_a_lease_by_its_clock() -> None:
    store = Store()
    leader, standby = fast("a", store), fast("b", store)
    await leader.acquire()  # and then "crashes": nobody renews
    started = time.monotonic()
    await asyncio.wait_for(standby.acquire(), 5)
    waited = time.monotonic() - started
    assert 2.0 <= waited < 2.0 + 0.6, waited
    assert store.record is not None and store.record.holder == "b"


async def test_a_busy_operator_loop_does_not_cost_the_lease() -> None:
    """The keeper renews on its own thread: the caller's loop blocked past the renew deadline (Kopf's
    start-up on a loaded node did this) loses nothing, and a real loss still reaches the caller."""
    store = Store()
    leader = fast("a", store)
    await leader.acquire()
    ended = asyncio.Event()
    keeper = LeaseKeeper(leader, on_end=ended.set)
    keeper.start()
    try:
        before = store.calls
        # Blocking the loop is the behaviour under test (not a wait): longer than the 0.6 s deadline.
        time.sleep(1.5)  # noqa: ASYNC251
        assert store.calls > before + 2, "renewals went on while the caller's loop was blocked"
        await asyncio.sleep(0)
        assert not leader.lost.is_set() and not ended.is_set()
        store.gate.clear()  # the API server stops answering: the loss reaches the caller's loop
        await asyncio.wait_for(ended.wait(), 3)
        assert leader.lost.is_set()
    finally:
        store.gate.set()
        await keeper.stop()


async def test_stopping_the_keeper_is_not_a_loss() -> None:
    store = Store()
    leader = fast("a", store)
    await leader.acquire()
    ended = asyncio.Event()
    keeper = LeaseKeeper(leader, on_end=ended.set)
    keeper.start()
    await asyncio.to_thread(wait_for, lambda: store.calls >= 3, "a few renewals")
    await keeper.stop()
    await keeper.stop()  # idempotent
    assert not leader.lost.is_set() and not ended.is_set()


async def test_a_keeper_that_crashes_ends_leadership() -> None:
    store = Store()
    leader = fast("a", store)
    await leader.acquire()

    async def broken() -> None:
        raise RuntimeError("a bug in the renewal loop")

    leader._renew_until_lost = broken  # type: ignore[method-assign]
    ended = asyncio.Event()
    keeper = LeaseKeeper(leader, on_end=ended.set)
    keeper.start()
    try:
        await asyncio.wait_for(ended.wait(), 3)
        assert leader.lost.is_set(), "the operator must exit as a lost leader, not release and carry on"
    finally:
        await keeper.stop()
