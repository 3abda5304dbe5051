"""The data-plane aiohttp application: its components, typed app state, routes and lifecycle.

`build_sidecar(settings)` makes the long-lived components (config store, metrics, stats, ejection,
limits, audit log); `create_app(sidecar)` wires them into an `web.Application` whose cleanup context
opens the upstream connection pool, the audit log and the config-file watcher, and closes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import views
from .audit import AuditLog
from .configstore import ConfigStore
from .credentials import ClientKeys, UpstreamCredentials
from .ejection import Ejections
from .errors import DECISION_HEADERS, error_middleware
from .httpclient import Pool
from .metrics import Metrics
from .proxy import Upstreams
from .ratelimit import TenantLimiter
from .settings import Settings
from .state import SIDECAR, Sidecar
from .stats import EndpointStats

log = logging.getLogger(__name__)


def build_sidecar(settings: Settings) -> Sidecar:
    """Create the components and load the bootstrap config file when there is one."""
    metrics = Metrics()
    stats = EndpointStats()
    config = ConfigStore(region=settings.region, namespace=settings.namespace)
    config.on_applied(lambda snapshot: metrics.set_config_version(snapshot.version))
    sidecar = Sidecar(
        settings=settings,
        config=config,
        metrics=metrics,
        stats=stats,
        ejections=Ejections(stats),
        tenants=TenantLimiter(),
        client_keys=ClientKeys(settings.client_keys_file),
        credentials=UpstreamCredentials(settings.secrets_dir),
        audit=AuditLog(settings.audit_log, include_prompts=settings.audit_prompts),
    )
    if settings.config_file is not None:
        config.load_file(settings.config_file)
    return sidecar


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Open what needs the running loop: the upstream connection pool, the audit log, the file watcher."""
    sidecar = app[SIDECAR]
    settings = sidecar.settings
    # bounded per upstream host: one slow upstream must not starve the others
    pool = Pool(
        limit_per_host=settings.upstream_connections_per_host,
        keepalive_seconds=settings.upstream_keepalive_seconds,
    )
    sidecar.upstreams = Upstreams(
        pool,
        sidecar.credentials,
        sidecar.ejections,
        sidecar.stats,
        sidecar.metrics,
        retry_floor_per_second=settings.retry_floor_per_second,
    )
    sidecar.audit.open()
    if settings.config_file is not None and settings.worker_index < 0:
        # workers of a multi-process sidecar get file changes from their parent, which watches for them
        watcher = sidecar.config.watch_file(settings.config_file, settings.config_poll_seconds)
        sidecar.background.append(asyncio.get_running_loop().create_task(watcher))
    try:
        yield
    finally:
        for task in sidecar.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sidecar.background.clear()
        await pool.close()
        await sidecar.audit.close()


def create_app(sidecar: Sidecar) -> web.Application:
    """The data-plane application (OpenAI-compatible API, health and metrics)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=sidecar.settings.max_body_bytes)
    app[SIDECAR] = sidecar
    app[DECISION_HEADERS] = views.headers_for
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/v1/chat/completions", views.chat_completions)
    app.router.add_post("/v1/completions", views.completions)
    app.router.add_post("/v1/embeddings", views.embeddings)
    app.router.add_get("/v1/models", views.list_models)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", views.metrics)
    return app
