"""Leader election on a coordination.k8s.io Lease, so several operator replicas can run and one acts.

Kopf's own peering freezes every operator of equal priority, which is no use for two identical replicas,
so we do what client-go does: the leader renews the Lease; a standby waits until it expires (or is
released on a clean shutdown), then takes it with an optimistic-concurrency update. A leader that cannot
renew before the lease would expire stops acting at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "modelroute-operator"
    identity: str = f"{socket.gethostname()}-{os.getpid()}"
    lease_seconds: int = 15
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


def _expired(lease: Any, now: datetime) -> bool:
    spec = lease.spec
    if not spec or not spec.holder_identity:
        return True
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None:
        return True
    return bool(renewed + timedelta(seconds=spec.lease_duration_seconds or 0) < now)


class LeaderElector:
    """Acquires and keeps the Lease; `lost` is set when leadership ends."""

    def __init__(self, settings: LeaseSettings) -> None:
        self.settings = settings
        self._api = client.CoordinationV1Api()
        self.lost = asyncio.Event()

    def _spec(self, acquire: datetime | None, now: datetime, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.settings.identity,
            lease_duration_seconds=self.settings.lease_seconds,
            acquire_time=acquire or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def _try_acquire(self) -> bool:
        s, now = self.settings, _now()
        try:
            lease = self._api.read_namespaced_lease(s.name, s.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=s.name, namespace=s.namespace),
                spec=self._spec(None, now, 0),
            )
            try:
                self._api.create_namespaced_lease(s.namespace, body)
                return True
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
        mine = lease.spec and lease.spec.holder_identity == s.identity
        if not mine and not _expired(lease, now):
            return False
        transitions = (lease.spec.lease_transitions or 0) + (0 if mine else 1) if lease.spec else 0
        lease.spec = self._spec(lease.spec.acquire_time if mine and lease.spec else None, now, transitions)
        try:
            self._api.replace_namespaced_lease(s.name, s.namespace, lease)  # carries resourceVersion
            return True
        except ApiException as exc:
            if exc.status == 409:  # someone else renewed or took it in between
                return False
            raise

    async def acquire(self) -> None:
        """Block until this process holds the Lease."""
        announced = False
        while True:
            try:
                if await asyncio.to_thread(self._try_acquire):
                    log.info(
                        "leader election: %s leads (lease %s/%s)",
                        self.settings.identity,
                        self.settings.namespace,
                        self.settings.name,
                    )
                    return
            except (ApiException, OSError) as exc:
                log.warning("leader election: %s", exc)
            if not announced:
                log.info("leader election: %s is standby; another replica leads", self.settings.identity)
                announced = True
            await asyncio.sleep(self.settings.retry_seconds)

    async def keep(self) -> None:
        """Renew until renewal fails for longer than the lease; then set `lost` and return."""
        last_renewal = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            try:
                if await asyncio.to_thread(self._try_acquire):
                    last_renewal = asyncio.get_running_loop().time()
                    continue
                log.error("leader election: the lease was taken over; stopping")
                break
            except (ApiException, OSError) as exc:
                log.warning("leader election: renewal failed: %s", exc)
            # Stop a little before the lease expires, so two leaders never overlap.
            if (
                asyncio.get_running_loop().time() - last_renewal
                > self.settings.lease_seconds - self.settings.renew_seconds
            ):
                log.error("leader election: could not renew in time; stopping")
                break
        self.lost.set()

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over without waiting."""
        s = self.settings
        try:
            lease = self._api.read_namespaced_lease(s.name, s.namespace)
            if lease.spec and lease.spec.holder_identity == s.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self._api.replace_namespaced_lease(s.name, s.namespace, lease)
                log.info("leader election: released the lease")
        except (ApiException, OSError) as exc:
            log.warning("leader election: release failed: %s", exc)
