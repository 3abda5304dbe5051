"""The data plane put together: its components, the route dispatch and the serving lifecycle.

`build_sidecar(settings)` makes the long-lived components (config store, metrics, stats, ejection,
limits, audit log); `data_plane(sidecar, host, port)` opens what needs the running loop (the upstream
connection pool, the audit log, the config-file watcher), serves the views of `views.ROUTES` on the
data port with `server.DataServer`, and closes it all again when its block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from . import messages, views
from .audit import AuditLog
from .configstore import ConfigStore
from .credentials import ClientKeys, UpstreamCredentials
from .ejection import Ejections
from .errors import ApiError, error_response, refusal_error, request_id_of, unexpected
from .httpclient import Pool
from .lazyfleet import LazyFleet
from .metrics import Metrics
from .proxies import ProxyConfig
from .proxy import Exchange, Upstreams, decision_headers
from .ratelimit import TENANT_TABLE_FILE, TenantLimiter, TenantTable
from .server import (
    DataServer,
    Handler,
    HttpRequest,
    HttpResponse,
    RefusalHandler,
    ResponseStream,
)
from .settings import Settings
from .shadow import Shadows
from .state import Sidecar, report_failure
from .stats import EndpointStats

if TYPE_CHECKING:
    from .fleetstore import FleetAccounts

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 75.0
"""Idle client connections are closed after this long (the figure aiohttp and nginx use)."""
SHUTDOWN_GRACE_SECONDS = 10.0
"""On stop, requests in flight get this long to finish (well inside a pod's default 30 s grace)."""


def build_sidecar(settings: Settings) -> Sidecar:
    """Create the components and load the bootstrap config file when there is one."""
    metrics = Metrics()
    stats = EndpointStats()
    config = ConfigStore(
        region=settings.region,
        namespace=settings.namespace,
        sidecar_ports=tuple(p for p in (settings.port, settings.admin_port) if p),  # 0: not listening
    )
    config.on_applied(
        lambda snapshot: metrics.set_config_version(snapshot.version, snapshot.config.schema_version)
    )
    sidecar = Sidecar(
        settings=settings,
        config=config,
        metrics=metrics,
        stats=stats,
        ejections=Ejections(stats),
        tenants=TenantLimiter(tenant_table(settings)),
        client_keys=ClientKeys(settings.client_keys_file),
        credentials=UpstreamCredentials(settings.secrets_dir),
        audit=AuditLog(settings.audit_log, include_prompts=settings.audit_prompts),
        fleet=fleet_accounts(settings, metrics),
    )
    config.on_applied(lambda snapshot: sidecar.fleet.prepare(snapshot.config))
    bandits = sidecar.bandits
    config.on_applied(lambda snapshot: bandits.apply(snapshot.config))
    metrics.bandit_pulls.read = lambda: bandits.series()[0]
    metrics.bandit_reward.read = lambda: bandits.series()[1]
    metrics.bandit_shortfall.read = lambda: bandits.series()[2]
    audit = sidecar.audit
    metrics.audit_lines_dropped.read = lambda: {
        ("queue-full",): audit.dropped,
        ("write-failed",): audit.failed,
    }
    if settings.config_file is not None:
        config.load_file(settings.config_file)
    return sidecar


def fleet_accounts(settings: Settings, metrics: Metrics) -> LazyFleet:
    """The fleet limits of this process: made, and `fleetstore` imported, on the first config with
    fleet limits (nothing connects until a policy uses them)."""

    def make() -> FleetAccounts:
        from .fleetstore import FleetAccounts, StoreSettings

        store = StoreSettings(
            url=settings.fleet_store_url,
            username=settings.fleet_store_username,
            password_file=settings.fleet_store_password_file,
            ca_file=settings.fleet_store_ca_file,
            sync_seconds=settings.fleet_sync_seconds,
        )
        worker = f"{settings.pod_name}/{max(0, settings.worker_index)}"
        return FleetAccounts(store, metrics, namespace=settings.namespace, worker=worker)

    return LazyFleet(make)


def tenant_table(settings: Settings) -> TenantTable:
    """The tenant buckets: shared with the sibling workers (the parent created the table), or private."""
    if settings.worker_index >= 0 and settings.control_dir is not None:
        return TenantTable.open(settings.control_dir / TENANT_TABLE_FILE)
    return TenantTable.private()


@contextlib.asynccontextmanager
async def _components(sidecar: Sidecar) -> AsyncIterator[None]:
    """Open what needs the running loop: the upstream connection pool, the audit log, the file watcher."""
    settings = sidecar.settings
    # bounded per upstream host: one slow upstream must not starve the others
    proxies = ProxyConfig.from_environ(os.environ)
    if proxies.enabled:
        log.info("upstream proxies: %s", proxies.describe())
    pool = Pool(
        limit_per_host=settings.upstream_connections_per_host,
        keepalive_seconds=settings.upstream_keepalive_seconds,
        max_body_bytes=settings.upstream_max_body_bytes,
        proxies=proxies,
    )
    sidecar.upstreams = Upstreams(
        pool,
        sidecar.credentials,
        sidecar.ejections,
        sidecar.stats,
        sidecar.metrics,
        retry_floor_per_second=settings.retry_floor_per_second,
    )
    sidecar.shadows = Shadows(sidecar.upstreams)
    sidecar.audit.open()
    if settings.config_file is not None and settings.worker_index < 0:
        # workers of a multi-process sidecar get file changes from their parent, which watches for them
        watcher = sidecar.config.watch_file(settings.config_file, settings.config_poll_seconds)
        task = asyncio.get_running_loop().create_task(watcher, name="config-file-watch")
        task.add_done_callback(report_failure)
        sidecar.background.append(task)
    try:
        yield
    finally:
        for task in sidecar.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sidecar.background.clear()
        await sidecar.shadows.close()
        await sidecar.fleet.close()  # writes the spend not yet written
        sidecar.upstreams.deadlines.close()
        await pool.close()
        await sidecar.audit.close()


ROUTES = {**views.ROUTES, **messages.ROUTES}
"""Every exact path of the data port: the OpenAI API's and the Anthropic Messages API's."""


def dispatcher(sidecar: Sidecar) -> Handler:
    """The data port's handler: route by path and method, answer unknown ones OpenAI-style."""

    async def dispatch(request: HttpRequest, stream: ResponseStream) -> HttpResponse | None:
        request_id = request_id_of(request.headers)
        methods = ROUTES.get(request.path) or prefixed(request.path)
        view = methods.get(request.method) if methods is not None else None
        if view is None:
            if methods is None:
                error = ApiError(404, "not_found", "no such route")
            else:
                error = ApiError(405, "method_not_allowed", f"method {request.method} is not allowed here")
            return error_response(error, request_id)
        try:
            return await view(sidecar, request, stream, request_id)
        except Exception as exc:
            if stream.started:
                raise  # mid-answer (the client left, or a bug): the server cuts the connection
            return error_response(unexpected(exc, request.path, request_id), request_id)

    return dispatch


def prefixed(path: str) -> dict[str, views.View] | None:
    """The views of the prefix route `path` falls under (with something after the prefix), if any."""
    for prefix, methods in views.PREFIX_ROUTES.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            return methods
    return None


def refusal(sidecar: Sidecar) -> RefusalHandler:
    """The answer to a request the server refuses before any view (too large, malformed)."""

    def refuse(status: int, reason: str) -> HttpResponse:
        request_id = request_id_of({})
        response = error_response(refusal_error(status, reason), request_id)
        exchange = Exchange(request_id, "", config_version=sidecar.config.version)
        response.headers.update(decision_headers(exchange))
        return response

    return refuse


@contextlib.asynccontextmanager
async def data_plane(
    sidecar: Sidecar, host: str, port: int, *, reuse_port: bool = False
) -> AsyncIterator[DataServer]:
    """Serve the data port on host:port until the block ends, components open meanwhile."""
    settings = sidecar.settings
    async with _components(sidecar):
        server = DataServer(
            dispatcher(sidecar),
            refusal(sidecar),
            max_body_bytes=settings.max_body_bytes,
            keepalive_seconds=KEEPALIVE_SECONDS,
            max_line_bytes=settings.max_line_bytes,
            max_head_bytes=settings.max_head_bytes,
            head_timeout_seconds=settings.head_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )
        await server.start(host, port, reuse_port=reuse_port)
        try:
            yield server
        finally:
            await server.close(SHUTDOWN_GRACE_SECONDS)
