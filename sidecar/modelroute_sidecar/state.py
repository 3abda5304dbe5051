"""The per-process state of the data plane, handed to every view.

Kept apart from `app` (which wires routes to views) so that views can reach the state without importing
the module that imports them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .affinity import SessionTable
from .audit import AuditLog
from .bandit import BanditTable
from .configstore import ConfigStore
from .credentials import ClientKeys, UpstreamCredentials
from .ejection import Ejections
from .feedback import Served, ServedRequests
from .lazyfleet import LazyFleet
from .metrics import Metrics
from .proxy import Upstreams
from .ratelimit import TenantLimiter
from .settings import Settings
from .shadow import Shadows
from .stats import EndpointStats

MetricsSource = Callable[[], Awaitable[bytes]]
SiblingClaim = Callable[[str, str | None], Awaitable[Served | None]]
"""Claims a request id (for a tenant, or any) that another worker of the pod served."""

log = logging.getLogger(__name__)


def report_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback of a long-lived background task: an exception that ends it is logged at once, not
    lost with the task (a config watcher that died would otherwise stop silently)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


@dataclass(slots=True)
class Sidecar:
    """The components one data-plane process shares across requests."""

    settings: Settings
    config: ConfigStore
    metrics: Metrics
    stats: EndpointStats
    ejections: Ejections
    tenants: TenantLimiter
    client_keys: ClientKeys
    credentials: UpstreamCredentials
    audit: AuditLog
    fleet: LazyFleet
    """Fleet-wide limits and budgets (the store is contacted only once a policy uses them)."""
    upstreams: Upstreams | None = None
    """Created when the data plane starts serving: it owns the event-loop-bound connection pool."""
    metrics_source: MetricsSource | None = None
    """Overrides `/metrics` (a worker of a multi-process sidecar serves the sum over its siblings)."""
    sessions: SessionTable = field(default_factory=SessionTable)
    """Session affinity: the replica that answered each conversation's last turn (this worker's)."""
    bandits: BanditTable = field(default_factory=BanditTable)
    """The bandit rules' posteriors (this worker's), reset when a config changes a rule's targets."""
    background: list[asyncio.Task[None]] = field(default_factory=list)
    served: ServedRequests = field(default_factory=ServedRequests)
    """Which rule and endpoint served each recent request id, for `POST /v1/feedback`."""
    sibling_claim: SiblingClaim | None = None
    """A worker of a multi-process sidecar asks its siblings for the ids it does not remember."""
    shadows: Shadows | None = None
    """Shadow copies in flight (created with `upstreams`)."""

    async def render_metrics(self) -> bytes:
        """The `/metrics` exposition."""
        if self.metrics_source is not None:
            return await self.metrics_source()
        return self.metrics.render()
