"""Kopf handlers: thin wiring from watch events to the namespace reconciler.

Every event on one of our kinds (create, update, delete, and the initial listing after a restart) only
schedules its namespace; the reconciler does the work, so create, update and resume share one path.
Low-level event handlers keep Kopf from writing its own annotations or finalizers on users' objects:
deletes are instant, and a restart that finds nothing to change writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import kopf

from .kube import KubeApi, load_client_config
from .reconciler import Reconciler
from .resources import GROUP, KINDS, VERSION

log = logging.getLogger(__name__)


@dataclass
class OperatorContext:
    """Shared clients, created on startup and closed on cleanup (kept in Kopf's memo)."""

    kube: KubeApi
    reconciler: Reconciler


def context_of(memo: kopf.Memo) -> OperatorContext:
    ctx = memo.get("modelroute")
    if not isinstance(ctx, OperatorContext):
        raise kopf.TemporaryError("operator context not ready", delay=1)
    return ctx


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.persistence.finalizer = f"{GROUP}/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    load_client_config()
    kube = KubeApi()
    memo["modelroute"] = OperatorContext(kube=kube, reconciler=Reconciler(kube))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    ctx = memo.get("modelroute")
    if isinstance(ctx, OperatorContext):
        await ctx.reconciler.close()
        ctx.kube.close()


async def _on_change(namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if namespace:
        context_of(memo).reconciler.schedule(namespace)


for _kind in KINDS:
    kopf.on.event(GROUP, VERSION, _kind.plural)(_on_change)
