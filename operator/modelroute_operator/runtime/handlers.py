"""Kopf handlers: thin wiring from watch events to the reconciler, syncer, health monitor and canaries.

Every event on one of our kinds (create, update, delete, and the initial listing after a restart) only
schedules its namespace; the reconciler does the work, so create, update and resume share one path.
Endpoint and canary events also refresh what the health monitor and canary runner see; sidecar pod
events schedule a push. Low-level event handlers keep Kopf from writing its own annotations or
finalizers on users' objects: deletes are instant, and a restart that finds nothing to change writes
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from modelroute_contract import RouterConfig
from modelroute_contract.constants import SIDECAR_LABEL, SIDECAR_LABEL_VALUE
from modelroute_operator.clients.kube import KubeApi, load_client_config
from modelroute_operator.clients.sync import RESYNC_SECONDS, Syncer
from modelroute_operator.logic.resources import GROUP, KINDS, VERSION, Canary, ModelEndpoint
from modelroute_operator.runtime.fleet_watch import FleetWatch, fleet_watch_seconds
from modelroute_operator.runtime.monitor import CanaryRunner, HealthMonitor
from modelroute_operator.runtime.reconciler import Reconciler

log = logging.getLogger(__name__)


@dataclass
class OperatorContext:
    """Shared clients, created on startup and closed on cleanup (kept in Kopf's memo)."""

    kube: KubeApi
    session: aiohttp.ClientSession
    reconciler: Reconciler
    syncer: Syncer
    health: HealthMonitor
    canaries: CanaryRunner
    background: list[asyncio.Task[None]]


def context_of(memo: kopf.Memo) -> OperatorContext:
    ctx = memo.get("modelroute")
    if not isinstance(ctx, OperatorContext):
        raise kopf.TemporaryError("operator context not ready", delay=1)
    return ctx


API_RETRY_BACKOFFS = (0.2, 0.5, 1.0)
"""Kopf's waits between attempts of one API request (its default climbs to 21 s). When they are spent the
watch starts over after `reconnect_backoff`, so while the API server is away it is retried at least
every second, and the operator is back within about a second of it answering."""


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Bound every wait of Kopf's own API client: no request without a timeout, no backoff over 1 s."""
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = API_RETRY_BACKOFFS
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    load_client_config()
    kube = KubeApi()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=4))
    syncer = Syncer(kube, session)

    async def announce(namespace: str, _config: RouterConfig) -> None:
        syncer.schedule(namespace)

    health = HealthMonitor(kube, session)
    canaries = CanaryRunner(kube, syncer)
    loop = asyncio.get_running_loop()
    background = [
        loop.create_task(_resync_forever(syncer), name="sidecar-resync"),
        loop.create_task(health.run(), name="health-monitor"),
        loop.create_task(canaries.run(), name="canary-runner"),
        loop.create_task(FleetWatch(kube, syncer, fleet_watch_seconds()).run(), name="fleet-watch"),
    ]

    def forget(namespace: str) -> None:
        # The namespace has none of our objects left: drop every piece of state kept about it.
        syncer.forget(namespace)
        health.forget(namespace)
        canaries.forget(namespace)
        log.info("namespace %s has no modelroute objects left; its state is dropped", namespace)

    # main.py puts the injection settings' ports in the memo; a bare `kopf run` has only the defaults.
    ports = tuple(memo.get("sidecar_ports") or ())
    memo["modelroute"] = OperatorContext(
        kube, session, Reconciler(kube, announce, forget, ports), syncer, health, canaries, background
    )


async def _resync_forever(syncer: Syncer) -> None:
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        syncer.forget_acks()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.get("modelroute")
    if isinstance(ctx, OperatorContext):
        for task in ctx.background:
            task.cancel()
        await ctx.reconciler.close()
        await ctx.syncer.close()
        await ctx.session.close()
        ctx.kube.close()


async def _on_change(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        context_of(memo).reconciler.schedule(namespace)


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural)(_on_change)


@kopf.on.event(GROUP, VERSION, ModelEndpoint.plural)
async def endpoint_seen(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the health monitor's view of endpoints current."""
    context_of(memo).health.endpoints.observe(body, event.get("type") == "DELETED")


@kopf.on.event(GROUP, VERSION, Canary.plural)
async def canary_seen(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the canary runner's view current; a change is looked at on the next tick."""
    ctx = context_of(memo)
    ctx.canaries.poke(ctx.canaries.canaries.observe(body, event.get("type") == "DELETED"))


@kopf.on.event("", "v1", "pods", labels={SIDECAR_LABEL: SIDECAR_LABEL_VALUE})
async def sidecar_changed(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A sidecar pod appeared, became ready, or went: bring the namespace's sidecars up to date."""
    if namespace:
        context_of(memo).syncer.schedule(namespace)
