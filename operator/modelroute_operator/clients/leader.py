"""Leader election on a coordination.k8s.io Lease, so several operator replicas can run and one acts.

Kopf's own peering freezes every operator of equal priority, which is no use for two identical replicas,
so we follow client-go's `leaderelection` semantics:

- A candidate never compares the holder's `renewTime` with its own wall clock (the two clocks may be
  hours apart). It remembers when, by its own monotonic clock, it last saw the lease record change
  (`observed_at`), and judges the lease expired when `leaseDurationSeconds` of the holder's record have
  passed since then without a change.
- The leader renews every `retry_seconds`. A renewal that cannot complete within `renew_deadline_seconds`
  of the last successful one ends leadership (`lost` is set and the operator stops acting), before any
  candidate can judge the lease expired, because `renew_deadline_seconds < lease_seconds`.
- Every API call has a timeout, and an attempt stuck in its thread is abandoned at the deadline.
- The identity is the pod name (`POD_NAME` from the downward API), else `hostname-pid`.
- A clean shutdown releases the lease (empty holder, 1 s duration) so a standby takes over at once.

The decision is synchronous and takes its clocks as arguments (tests use fake ones); the Lease I/O sits
behind `LeaseLock` (`KubeLeaseLock` here, an in-memory store in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelroute_operator.clients.kube import API_TIMEOUT, ApiTimeout, new_api_client

log = logging.getLogger(__name__)

JITTER = 1.2
"""client-go's jitter factor: retries wait between `retry_seconds` and `retry_seconds * JITTER`."""


def default_identity() -> str:
    """The pod name from the downward API (`POD_NAME`), else `hostname-pid` (a local run)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "modelroute-operator"
    identity: str = field(default_factory=default_identity)
    lease_seconds: int = 15
    """How long candidates wait, after the record last changed, before taking the lease."""
    renew_deadline_seconds: float = 10.0
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_seconds: float = 2.0
    """Time between attempts (to acquire, or to renew)."""

    def __post_init__(self) -> None:
        # client-go's own checks: without them a leader could still act after a candidate took over.
        if self.lease_seconds <= self.renew_deadline_seconds:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must exceed renew_deadline_seconds"
                f" ({self.renew_deadline_seconds})"
            )
        if self.renew_deadline_seconds <= JITTER * self.retry_seconds:
            raise ValueError(
                f"renew_deadline_seconds ({self.renew_deadline_seconds}) must exceed {JITTER} x"
                f" retry_seconds ({self.retry_seconds})"
            )
        if not self.identity:
            raise ValueError("identity must not be empty")

    @classmethod
    def for_lease(cls, namespace: str, name: str, lease_seconds: int, identity: str = "") -> LeaseSettings:
        """client-go's default proportions (15 s / 10 s / 2 s) scaled to `lease_seconds`."""
        return cls(
            namespace=namespace,
            name=name,
            identity=identity or default_identity(),
            lease_seconds=lease_seconds,
            renew_deadline_seconds=lease_seconds * 2 / 3,
            retry_seconds=lease_seconds * 2 / 15,
        )


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str = ""
    lease_seconds: int = 0
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0


class LeaseConflictError(Exception):
    """The Lease exists already (create) or changed since it was read (update)."""


class LeaseLock(Protocol):
    """Reads and writes one Lease with optimistic concurrency; calls block and must be bounded."""

    def get(self) -> LeaseRecord | None:
        """The current record (None when the Lease does not exist); remembers its version."""
        ...

    def create(self, record: LeaseRecord) -> None:
        """Create the Lease; LeaseConflictError when it exists."""
        ...

    def update(self, record: LeaseRecord) -> None:
        """Replace the record read (or written) last; LeaseConflictError when it changed meanwhile."""
        ...


@dataclass(frozen=True)
class Clock:
    """Where time comes from: `monotonic` judges durations, `wall` only stamps the record."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)


class LeaderElector:
    """Acquires and keeps the Lease; `lost` is set when leadership ends."""

    def __init__(self, settings: LeaseSettings, lock: LeaseLock | None = None, clock: Clock | None = None):
        self.settings = settings
        self._lock = lock if lock is not None else KubeLeaseLock(settings.namespace, settings.name)
        self._clock = clock or Clock()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        """Monotonic time when `_observed` was last seen to change (or was written by us)."""
        self._inflight: asyncio.Future[bool] | None = None
        self.lost = asyncio.Event()

    # ------------------------------------------------------------------------------ the decision

    def is_leader(self) -> bool:
        """Whether the last record seen or written names this candidate."""
        return self._observed is not None and self._observed.holder == self.settings.identity

    def _valid(self, now: float) -> bool:
        """Whether the observed lease is still running by this candidate's own clock."""
        observed = self._observed
        return observed is not None and self._observed_at + observed.lease_seconds > now

    def _observe(self, record: LeaseRecord) -> None:
        self._observed = record
        self._observed_at = self._clock.monotonic()

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the lease (blocking; False on any failure, which is logged)."""
        try:
            return self._try_acquire_or_renew()
        except LeaseConflictError:
            return False
        except Exception as exc:
            log.warning("leader election: lease %s/%s: %s", self.settings.namespace, self.settings.name, exc)
            return False

    def _try_acquire_or_renew(self) -> bool:
        s, stamp = self.settings, self._clock.wall()
        desired = LeaseRecord(s.identity, s.lease_seconds, stamp, stamp, 0)
        # Fast path: the leader updates on top of the version it wrote last.
        if self.is_leader() and self._valid(self._clock.monotonic()) and self._observed is not None:
            mine = replace(
                desired, acquire_time=self._observed.acquire_time, transitions=self._observed.transitions
            )
            try:
                self._lock.update(mine)
            except Exception as exc:
                log.info("leader election: optimistic renewal failed (%s); reading the lease", exc)
            else:
                self._observe(mine)
                return True
        current = self._lock.get()
        if current is None:
            self._lock.create(desired)
            self._observe(desired)
            return True
        if current != self._observed:
            self._observe(current)  # a change restarts the holder's term, by our clock
        if current.holder and not self.is_leader() and self._valid(self._clock.monotonic()):
            return False
        if self.is_leader():
            desired = replace(desired, acquire_time=current.acquire_time, transitions=current.transitions)
        else:
            desired = replace(desired, transitions=current.transitions + 1)
        self._lock.update(desired)
        self._observe(desired)
        return True

    def release(self) -> bool:
        """Give the lease up (clean shutdown) so a standby takes over without waiting; True on success."""
        if not self.is_leader() or self._observed is None:
            return True
        stamp = self._clock.wall()
        record = LeaseRecord("", 1, stamp, stamp, self._observed.transitions)
        try:
            self._lock.update(record)
        except Exception as exc:
            log.warning("leader election: release failed: %s", exc)
            return False
        self._observe(record)
        log.info("leader election: released the lease")
        return True

    # ------------------------------------------------------------------------------ the loops

    async def _attempt(self, within: float) -> bool:
        """Run one attempt in a thread, waiting at most `within` seconds. An attempt still running (its
        API call not timed out yet) is waited for rather than doubled."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.try_acquire_or_renew))
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), max(within, 0.0))
        except TimeoutError:
            return False

    def _pause(self) -> float:
        return self.settings.retry_seconds * random.uniform(1.0, JITTER)

    async def acquire(self) -> None:
        """Block until this process holds the lease."""
        announced = False
        while True:
            if await self._attempt(self.settings.renew_deadline_seconds):
                log.info(
                    "leader election: %s leads (lease %s/%s)",
                    self.settings.identity,
                    self.settings.namespace,
                    self.settings.name,
                )
                return
            if not announced:
                holder = self._observed.holder if self._observed else "?"
                log.info(
                    "leader election: %s is standby; %s leads", self.settings.identity, holder or "nobody"
                )
                announced = True
            await asyncio.sleep(self._pause())

    async def keep(self) -> None:
        """Renew every `retry_seconds`; when no renewal succeeds within `renew_deadline_seconds` of the last
        one, or another candidate holds the lease, set `lost` and return (cancelling leaves it unset)."""
        await self._renew_until_lost()
        self.lost.set()

    async def _renew_until_lost(self) -> None:
        clock, deadline = self._clock, self.settings.renew_deadline_seconds
        last_renewal = clock.monotonic()
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            while True:
                remaining = last_renewal + deadline - clock.monotonic()
                if remaining <= 0:
                    log.error("leader election: could not renew within %.1fs; stopping", deadline)
                    return
                if await self._attempt(remaining):
                    last_renewal = clock.monotonic()
                    break
                holder = self._observed.holder if self._observed is not None else ""
                if holder not in ("", self.settings.identity):
                    log.error("leader election: %s took the lease over; stopping", holder)
                    return
                await asyncio.sleep(min(self._pause(), max(remaining, 0.0)))


class LeaseKeeper:
    """Runs `elector.keep()` on a thread with an event loop of its own, as client-go's renew goroutine.

    Renewals are judged by the monotonic clock against `renew_deadline_seconds`; on the operator's loop a
    few seconds of blocking work (Kopf's start-up on a loaded node) made the leader give up a lease it
    could renew. `on_end` is called on the caller's loop when keeping ends by itself (leadership lost)."""

    def __init__(self, elector: LeaderElector, on_end: Callable[[], None]) -> None:
        self._elector = elector
        self._on_end = on_end
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        caller = asyncio.get_running_loop()
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._elector.keep(), name="lease-keeper")
            started.set()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                # a renewal loop that crashed keeps nothing: the caller must stop acting as leader
                log.exception("leader election: the lease keeper failed; stopping")
                self._elector.lost.set()
            finally:
                if not self._task.cancelled():
                    with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nothing to tell
                        caller.call_soon_threadsafe(self._on_end)

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="lease", daemon=True)
        self._thread.start()
        started.wait()

    async def stop(self) -> None:
        """Stop renewing (without releasing) and wait for the thread (idempotent)."""
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)


# ---------------------------------------------------------------------------------- the Lease object


def _micro_time(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC) if moment is not None else None


class KubeLeaseLock:
    """`LeaseLock` on a coordination.k8s.io/v1 Lease, every call bounded by `timeout`."""

    def __init__(
        self,
        namespace: str,
        name: str,
        api_client: client.ApiClient | None = None,
        timeout: ApiTimeout = API_TIMEOUT,
    ) -> None:
        self._namespace, self._name = namespace, name
        self._api = client.CoordinationV1Api(api_client or new_api_client(timeout))
        self._timeout = timeout.request_timeout
        self._lease: Any = None
        """The Lease as last read or written (its resourceVersion makes updates conditional)."""

    def get(self) -> LeaseRecord | None:
        try:
            lease = self._api.read_namespaced_lease(
                self._name, self._namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                self._lease = None
                return None
            raise
        self._lease = lease
        spec = lease.spec or client.V1LeaseSpec()
        return LeaseRecord(
            holder=spec.holder_identity or "",
            lease_seconds=int(spec.lease_duration_seconds or 0),
            acquire_time=_micro_time(spec.acquire_time),
            renew_time=_micro_time(spec.renew_time),
            transitions=int(spec.lease_transitions or 0),
        )

    @staticmethod
    def _spec(record: LeaseRecord) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=record.holder or None,
            lease_duration_seconds=record.lease_seconds,
            acquire_time=record.acquire_time,
            renew_time=record.renew_time,
            lease_transitions=record.transitions,
        )

    def create(self, record: LeaseRecord) -> None:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self._name, namespace=self._namespace), spec=self._spec(record)
        )
        try:
            self._lease = self._api.create_namespaced_lease(
                self._namespace, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflictError("the lease exists already") from exc
            raise

    def update(self, record: LeaseRecord) -> None:
        if self._lease is None:
            raise LeaseConflictError("the lease was not read yet")
        self._lease.spec = self._spec(record)
        try:
            self._lease = self._api.replace_namespaced_lease(
                self._name, self._namespace, self._lease, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflictError("the lease changed since it was read") from exc
            raise
