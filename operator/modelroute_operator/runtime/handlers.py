"""Kopf handlers: thin wiring from watch events to the reconciler, syncer, health monitor and canaries.

A start-up listing, then the watches, feed the inventory (our three kinds, the live-config ConfigMaps,
the sidecar pods): after a restart each namespace is reconciled once, whole. (Kopf's own indexes would
gate handlers the same way, but their readiness wake-ups cost O(objects²): minutes of CPU at 10,000.)
Every event on one of our kinds that changes what the reconciler reads (create, update, delete, the
initial listing) only schedules its namespace; the reconciler does the work, so create, update and
resume share one path. Events that change only our own status fields are ignored. Endpoint and canary
events also set the health monitor's and canary runner's timers; sidecar pod events schedule a push.
Low-level event handlers keep Kopf from writing its own annotations or finalizers on users' objects:
deletes are instant, and a restart that finds nothing to change writes nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf

from modelroute_contract import RouterConfig
from modelroute_contract.constants import CONFIGMAP_NAME, SIDECAR_LABEL, SIDECAR_LABEL_VALUE
from modelroute_operator.clients.inventory import CONFIRM_SECONDS, Inventory
from modelroute_operator.clients.kube import (
    CONNECTIONS,
    MANAGED_BY,
    KubeApi,
    load_client_config,
)
from modelroute_operator.clients.sync import RESYNC_SECONDS, Syncer
from modelroute_operator.logic import changes
from modelroute_operator.logic.cache import NOT_SEEN
from modelroute_operator.logic.resources import (
    GROUP,
    KINDS,
    VERSION,
    Canary,
    ModelEndpoint,
    Resource,
    RoutingPolicy,
)
from modelroute_operator.runtime.fleet_watch import FleetWatch, fleet_watch_seconds
from modelroute_operator.runtime.monitor import CanaryRunner, HealthMonitor, report_failure
from modelroute_operator.runtime.reconciler import Reconciler

log = logging.getLogger(__name__)


@dataclass
class OperatorContext:
    """Shared clients, created on startup and closed on cleanup (kept in Kopf's memo)."""

    kube: KubeApi
    inventory: Inventory
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


API_THREADS = CONNECTIONS
"""Worker threads for API calls (see `start`), one kept-alive connection each."""

API_RETRY_BACKOFFS = (0.2, 0.5, *([1.0] * 58))
"""Kopf's waits between attempts of one API request (its default climbs to 21 s): never more than 1 s
apart, so the operator is back within about a second of the API server answering, and about a minute of
them in all. Kopf gives up on a watch whose attempts are spent with a server error, and that ends the
whole operator: an API server that is starting again answers 503 ("the request has been made before all
known HTTP paths have been installed") for seconds, so three attempts (1.7 s) were too few to survive
its restart on a loaded node. A connection refused or closed is not counted here: Kopf re-authenticates
and watches again after `reconnect_backoff`."""


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base that keeps nothing. Kopf builds one on every watch event (a deep copy of the whole
    body) for on.create/update handlers and daemons; this operator registers only on.event handlers,
    which never see it, and compares what it needs itself (`logic.changes`). The copy was a quarter of
    Kopf's CPU per event on a cold start (py-spy, 1,000 namespaces)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Bound every wait of Kopf's own API client: no request without a timeout, no backoff over 1 s."""
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = API_RETRY_BACKOFFS
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1
    # A per-object worker lingers this long after its last event (Kopf's default 5 s): at 11,000
    # objects the lingering workers of a start-up were most of the operator's memory.
    settings.queueing.idle_timeout = 0.5
    # Server-side selectors: only sidecar pods and our ConfigMaps come down the watches (a client-side
    # filter would have the operator receive, parse and drop every pod of the cluster).
    settings.watching.label_selectors["v1", "pods"] = f"{SIDECAR_LABEL}={SIDECAR_LABEL_VALUE}"
    managed = ",".join(f"{k}={v}" for k, v in sorted(MANAGED_BY.items()))
    settings.watching.label_selectors["v1", "configmaps"] = managed
    settings.watching.field_selectors["v1", "configmaps"] = f"metadata.name={CONFIGMAP_NAME}"


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_kopf(settings)
    load_client_config()
    loop = asyncio.get_running_loop()
    # API calls run on worker threads (the official client is synchronous); a cold start of thousands of
    # objects keeps them all busy, and asyncio's default of cores + 4 made them the bottleneck.
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(API_THREADS, thread_name_prefix="kube-api")
    )
    kube = KubeApi()
    inventory = Inventory()
    # One connection per sidecar at most, kept alive between pushes; no cap across sidecars.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=4))
    syncer = Syncer(kube, inventory, session)

    async def announce(namespace: str, _config: RouterConfig) -> None:
        syncer.schedule(namespace)

    health = HealthMonitor(kube, session, inventory.endpoints)
    canaries = CanaryRunner(kube, syncer, inventory)
    background = [
        loop.create_task(_resync_forever(syncer), name="sidecar-resync"),
        loop.create_task(FleetWatch(kube, syncer, fleet_watch_seconds()).run(), name="fleet-watch"),
    ]

    def forget(namespace: str) -> None:
        # The namespace has none of our objects left: drop every piece of state kept about it (the
        # inventory drops a namespace with its last object).
        syncer.forget(namespace)
        health.forget(namespace)
        canaries.forget(namespace)
        inventory.forget(namespace)
        log.info("namespace %s has no modelroute objects left; its state is dropped", namespace)

    # main.py puts the injection settings' ports in the memo; a bare `kopf run` has only the defaults.
    ports = tuple(memo.get("sidecar_ports") or ())
    reconciler = Reconciler(kube, inventory, announce, forget, ports)
    ctx = OperatorContext(kube, inventory, session, reconciler, syncer, health, canaries, background)
    await seed(ctx, tuple(memo.get("namespaces") or ()))
    background.append(loop.create_task(_confirm_later(ctx), name="start-up-listing-sweep"))
    for task in background:
        task.add_done_callback(report_failure)
    memo["modelroute"] = ctx


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
        await ctx.health.close()
        await ctx.canaries.close()
        await ctx.reconciler.close()
        await ctx.syncer.close()
        await ctx.session.close()
        await ctx.kube.aclose()


def _on_event(kind: type[Resource]) -> Callable[..., Awaitable[None]]:
    async def changed(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        ctx = context_of(memo)
        cache = ctx.inventory.of(kind)
        key = cache.observe(body, deleted=event.get("type") == "DELETED")
        ctx.inventory.confirm(cache, key)
        if event.get("type") == "DELETED":
            ctx.reconciler.schedule(key[0])
        else:
            before, after = cache.take_previous(key), cache.get(key)
            if before is NOT_SEEN or after is None:
                return  # an event older than what is held (behind our own write)
            if changes.needs_pass(kind.kind_name, before, after, ctx.inventory.has_canaries(key[0])):
                ctx.reconciler.schedule(key[0])
            if kind is RoutingPolicy and changes.sync_changed(before, after):
                ctx.canaries.poke_namespace(key[0])
        if kind is ModelEndpoint:
            ctx.health.poke(key)
        elif kind is Canary:
            ctx.canaries.poke(key)

    return changed


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural, id=f"{_kind.plural}-changed")(_on_event(_kind))


@kopf.on.event("", "v1", "configmaps")
async def live_config_seen(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A live-config ConfigMap deleted or edited by someone else: the reconciler writes it again."""
    ctx = context_of(memo)
    configs = ctx.inventory.configs
    deleted = event.get("type") == "DELETED"
    key = configs.observe(body, deleted=deleted)
    ctx.inventory.confirm(configs, key)
    if deleted:
        changed = True
    else:
        # A created one is ours (its watch event can come before the apply's answer); an edit of a
        # held one is someone else's unless it is ours arriving first (then one quiet pass).
        before, after = configs.take_previous(key), configs.get(key)
        held = before is not NOT_SEEN and before is not None and after is not None
        changed = held and (before or {}).get("data") != (after or {}).get("data")
    if changed and ctx.inventory.has_objects(key[0]):
        ctx.reconciler.schedule(key[0])


@kopf.on.event("", "v1", "pods", labels={SIDECAR_LABEL: SIDECAR_LABEL_VALUE})
async def sidecar_changed(body: kopf.Body, event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A sidecar pod appeared, became ready, or went: bring the namespace's sidecars up to date."""
    ctx = context_of(memo)
    pods = ctx.inventory.pods
    deleted = event.get("type") == "DELETED"
    key = pods.observe(body, deleted=deleted)
    ctx.inventory.confirm(pods, key)
    if deleted:
        changed = True
    else:
        before, after = pods.take_previous(key), pods.get(key)
        # Only what a push reads: a pod's other status updates (containers, probes) are ignored.
        changed = before is not NOT_SEEN and after is not None and _pod_essence(before) != _pod_essence(after)
    if changed:
        ctx.syncer.schedule(key[0])


def _pod_essence(view: dict[str, Any] | None) -> Any:
    if view is None:
        return None
    meta = dict(view.get("metadata") or {})
    meta.pop("resourceVersion", None)
    status = dict(view.get("status") or {})
    status["conditions"] = [(c.get("type"), c.get("status")) for c in status.get("conditions") or []]
    return meta, status


async def seed(ctx: OperatorContext, namespaces: Sequence[str]) -> None:
    """List each watched resource once and reconcile every namespace that has our objects: the first
    pass over a namespace sees all of it (Kopf's watches deliver objects one by one, and a pass over
    half a namespace would push a config without the objects not yet delivered). A resource that
    cannot be listed is left to the watch."""
    inventory = ctx.inventory
    exact = [n for n in namespaces if not set(n) & set("*?[]!")]
    scope: list[str] | None = exact if namespaces and len(exact) == len(namespaces) else None
    wanted: Callable[[str], bool] = (
        (lambda ns: True) if not namespaces else (lambda ns: any(fnmatch.fnmatch(ns, p) for p in namespaces))
    )
    await inventory.load(ctx.kube, scope, wanted)
    for namespace in sorted(set().union(*(inventory.of(kind).namespaces() for kind in KINDS))):
        ctx.reconciler.schedule(namespace)
    for key in [*inventory.endpoints.bodies]:
        ctx.health.poke(key)
    for key in [*inventory.canaries.bodies]:
        ctx.canaries.poke(key)
    log.info(
        "start-up listing: %d endpoints, %d policies, %d canaries, %d live configs, %d sidecar pods",
        *(len(c.bodies) for c in (inventory.endpoints, inventory.policies, inventory.canaries)),
        len(inventory.configs.bodies),
        len(inventory.pods.bodies),
    )


async def _confirm_later(ctx: OperatorContext, every: float = CONFIRM_SECONDS) -> None:
    """Every `every` seconds, until the watches have delivered all of the start-up listing: the API is
    asked about the rest (`Inventory.sweep`); what it says is gone is dropped, the rest kept."""
    while True:
        await asyncio.sleep(every)
        touched, unconfirmed = await ctx.inventory.sweep(ctx.kube)
        for cache, key in touched:
            gone = cache.get(key) is None
            log.info("%s/%s %s", *key, "was deleted before the watch started; dropped" if gone else "changed")
            ctx.reconciler.schedule(key[0])
            ctx.syncer.schedule(key[0])
        if not unconfirmed:
            return
        log.info("%d objects of the start-up listing not delivered by the watches yet; kept", unconfirmed)
