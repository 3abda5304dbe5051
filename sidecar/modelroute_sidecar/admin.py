"""The admin port (for the operator) and the control sockets between a parent and its workers.

The operator pushes RouterConfigs to `PUT /config`, reads `GET /config/version` and `GET /stats`, all
with a bearer token. Behind the admin app stands a `Fleet`: in a single-process sidecar that is the
process itself (`LocalFleet`); in a multi-process one the parent runs the admin app and fans every
config out to its workers over unix sockets, answering only once each worker applied it, and sums the
workers' stats and metrics (`WorkerFleet`). Workers serve a small control app on those sockets.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from modelroute_contract import admin
from modelroute_contract.files import FileStamp, file_stamp
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS
from modelroute_contract.stats import StatsSnapshot

from .configstore import ConfigRejectedError, ConfigStore
from .errors import ApiError, error_middleware
from .metrics import CONTENT_TYPE, merge_expositions
from .state import Sidecar
from .stats import merge_snapshots

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 32 * 1024 * 1024


class Fleet(Protocol):
    """The data-plane processes the admin app speaks for."""

    async def apply(self, text: bytes) -> dict[str, Any]:
        """Validate and apply a config everywhere; raise ConfigRejectedError when it is refused."""
        ...

    async def version(self) -> dict[str, Any]:
        """Applied version and where it came from."""
        ...

    async def stats(self) -> StatsSnapshot:
        """Cumulative per-endpoint figures."""
        ...

    async def metrics(self) -> bytes:
        """Prometheus exposition summed over the processes."""
        ...


def version_document(store: ConfigStore) -> dict[str, Any]:
    """What `GET /config/version` says about one process."""
    current = store.current
    return {
        "version": store.version,
        "source": current.source if current else "",
        "appliedAt": current.applied_at if current else None,
        "sequence": current.config.sequence if current else None,
        "schemaVersion": current.config.schema_version if current else None,
        # what the operator renders pushes by (`schemas.accepted_schemas`; absent: schema 1 only)
        "acceptedSchemaVersions": list(ACCEPTED_SCHEMA_VERSIONS),
        "namespace": current.config.namespace if current else "",
        "lastError": store.last_error,
    }


class LocalFleet:
    """A single-process sidecar: the admin app acts on this process's own state."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    async def apply(self, text: bytes) -> dict[str, Any]:
        """Apply the config to this process."""
        previous = self.sidecar.config.version
        try:
            snapshot = self.sidecar.config.apply(text, "push")
        except ConfigRejectedError:
            self.sidecar.metrics.config_errors.labels("push").inc()
            raise
        return {
            "version": snapshot.version,
            "sequence": snapshot.config.sequence,
            "changed": snapshot.version != previous,
            "workers": 1,
        }

    async def version(self) -> dict[str, Any]:
        """This process's applied version."""
        return {**version_document(self.sidecar.config), "pod": self.sidecar.settings.pod_name, "workers": 1}

    async def stats(self) -> StatsSnapshot:
        """This process's figures."""
        return self.sidecar.stats.snapshot(
            pod=self.sidecar.settings.pod_name, config_version=self.sidecar.config.version
        )

    async def metrics(self) -> bytes:
        """This process's metrics."""
        return self.sidecar.metrics.render()


def worker_socket(control_dir: Path, index: int) -> Path:
    """Where worker `index` listens for its parent."""
    return control_dir / f"worker-{index}.sock"


class WorkerSockets:
    """HTTP clients to every worker's control socket (one connector per unix socket)."""

    def __init__(self, control_dir: Path, workers: int) -> None:
        self.paths = [worker_socket(control_dir, i) for i in range(workers)]
        self._sessions: list[aiohttp.ClientSession] = []

    def _session(self, index: int) -> aiohttp.ClientSession:
        if not self._sessions:
            self._sessions = [
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(p)), timeout=aiohttp.ClientTimeout(total=10)
                )
                for p in self.paths
            ]
        return self._sessions[index]

    async def call(self, index: int, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """One request to one worker."""
        async with self._session(index).request(method, "http://worker" + path, data=data) as response:
            return response.status, await response.read()

    async def try_call(
        self, index: int, method: str, path: str, data: bytes | None = None
    ) -> tuple[int, bytes] | None:
        """`call`, or None when the worker cannot be reached (it died, or is starting again)."""
        try:
            return await self.call(index, method, path, data)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("worker %d unreachable on %s %s: %s", index, method, path, exc or type(exc).__name__)
            return None

    async def try_call_all(
        self, method: str, path: str, data: bytes | None = None
    ) -> list[tuple[int, bytes] | None]:
        """`try_call` on every worker, concurrently: a worker being restarted fails no caller."""
        calls = (self.try_call(i, method, path, data) for i in range(len(self.paths)))
        return list(await asyncio.gather(*calls))

    async def close(self) -> None:
        """Close the connections."""
        for session in self._sessions:
            await session.close()
        self._sessions = []


class WorkerFleet:
    """The parent of a multi-process sidecar: validates, then fans out to and sums over its workers.

    A worker that cannot be reached (it died and is being restarted) fails no admin call: reads answer
    from the workers that are up and name the ones that are down, and a config goes to the workers that
    are up; the others get the parent's current config when `bring_up` runs for them (the supervisor
    calls it after every restart, and for every worker that missed a config)."""

    def __init__(self, store: ConfigStore, sockets: WorkerSockets, pod: str) -> None:
        self.store = store
        self.sockets = sockets
        self.pod = pod
        self._lock = asyncio.Lock()
        self.stale: set[int] = set()
        """Workers that were unreachable when a config went out, so may run an older one."""

    async def apply(self, text: bytes) -> dict[str, Any]:
        """Validate here, then have every worker apply it; the parent's store follows the workers."""
        snapshot = self.store.validate(text, "push")
        async with self._lock:  # two pushes must not interleave across workers
            previous = self.store.version
            down: list[int] = []
            if self.store.admit(snapshot) is None:  # refuses an older config before any worker sees it
                down = await self.distribute(snapshot.text.encode())
                self.store.install(snapshot)
        return {
            "version": snapshot.version,
            "sequence": snapshot.config.sequence,
            "changed": snapshot.version != previous,
            "workers": len(self.sockets.paths),
            "workersDown": down,
        }

    async def distribute(self, text: bytes, only: Sequence[int] | None = None) -> list[int]:
        """Push a validated config to the workers (all, or `only` these); raise when one refuses.
        Returns the workers that could not be reached (remembered in `stale`)."""
        indexes = list(range(len(self.sockets.paths)) if only is None else only)
        results = await asyncio.gather(
            *(self.sockets.try_call(i, "PUT", "/control/config", text) for i in indexes)
        )
        down = []
        for index, result in zip(indexes, results, strict=True):
            if result is None:
                down.append(index)
                self.stale.add(index)
                continue
            status, body = result
            if status != 200:
                raise ConfigRejectedError(500, f"worker {index} did not apply the config: {body[:300]!r}")
            self.stale.discard(index)
        return down

    async def bring_up(self, index: int) -> None:
        """Give worker `index` the parent's current config (after a restart, or when it missed one)."""
        async with self._lock:  # reads `current` under the lock: a push in between is not undone
            current = self.store.current
            if current is None:
                self.stale.discard(index)
                return
            try:
                await self.distribute(current.text.encode(), only=[index])
            except ConfigRejectedError as exc:
                log.error("worker %d refused the current config %s: %s", index, current.version, exc)

    async def sync_file(self, path: Path) -> None:
        """Apply the config file when it changed, on every worker."""
        async with self._lock:
            previous = self.store.current
            snapshot = self.store.load_file(path)
            if snapshot is not None and snapshot is not previous:
                try:
                    await self.distribute(snapshot.text.encode())
                except ConfigRejectedError as exc:
                    log.error("could not distribute config %s to workers: %s", snapshot.version, exc)

    async def version(self) -> dict[str, Any]:
        """The version the workers that answer run, each worker's, and the workers that are down."""
        answers = await self.sockets.try_call_all("GET", "/control/version")
        workers: list[str] = []
        down: list[int] = []
        for index, answer in enumerate(answers):
            if answer is None or answer[0] != 200:
                workers.append("")
                down.append(index)
            else:
                workers.append(str(json.loads(answer[1]).get("version", "")))
        document = version_document(self.store)
        running = {v for i, v in enumerate(workers) if i not in down}
        # workers disagree (a push is in flight) or none is up: no single applied version
        document["version"] = running.pop() if len(running) == 1 else ""
        return {
            **document,
            "pod": self.pod,
            "workers": len(workers),
            "workerVersions": workers,
            "workersDown": down,
        }

    async def stats(self) -> StatsSnapshot:
        """Figures summed over the workers that answer."""
        answers = await self.sockets.try_call_all("GET", "/control/stats")
        return merge_snapshots(json.loads(a[1]) for a in answers if a is not None and a[0] == 200)

    async def metrics(self) -> bytes:
        """Metrics summed over the workers that answer."""
        answers = await self.sockets.try_call_all("GET", "/control/metrics")
        return merge_expositions(a[1].decode() for a in answers if a is not None and a[0] == 200)


class AdminToken:
    """The admin bearer token, from a mounted Secret file that may appear (or rotate) after start.

    The operator creates the Secret only once the namespace has a live config, so a pod can start
    before it exists: until then every admin call is refused, and the file is picked up when it lands.
    The file is looked at on every admin call (they are rare): the kubelet rotates a Secret by swapping
    the `..data` symlink to a new directory, which `os.stat` follows, so the inode changes even when
    the new token has the old one's length and mtime.
    """

    def __init__(self, file: str = "", fixed: str = "") -> None:
        self._file, self._value = file, fixed
        self._stamp: FileStamp = (0, 0, 0)

    def current(self) -> str:
        if not self._file:
            return self._value
        try:
            stamp = file_stamp(self._file)
        except OSError:
            return ""
        if stamp != self._stamp:
            try:
                self._value, self._stamp = Path(self._file).read_text().strip(), stamp
            except OSError:
                return ""
        return self._value


FLEET = web.AppKey("fleet", Fleet)
ADMIN_TOKEN = web.AppKey("admin_token", AdminToken)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every admin call but /healthz and /metrics needs `Authorization: Bearer <admin token>`.
    Metrics stay open so Prometheus can scrape them; their labels are bounded and carry no secrets."""
    if request.path not in admin.OPEN_PATHS:
        token = request.app[ADMIN_TOKEN].current()
        given = admin.presented_token(request.headers.get(admin.AUTHORIZATION_HEADER, ""))
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "the admin port needs `Authorization: Bearer <admin token>`")
    return await handler(request)


async def put_config(request: web.Request) -> web.Response:
    """PUT/POST /config: validate and apply a RouterConfig; 4xx with the reason when refused."""
    text = await request.read()
    try:
        result = await request.app[FLEET].apply(text)
    except ConfigRejectedError as exc:
        log.warning("config push refused (%d): %s", exc.status, exc.message)
        raise ApiError(exc.status, "config_rejected", exc.message) from None
    return web.json_response(result)


async def get_version(request: web.Request) -> web.Response:
    """GET /config/version."""
    return web.json_response(await request.app[FLEET].version())


async def get_stats(request: web.Request) -> web.Response:
    """GET /stats: cumulative per-endpoint and per-replica figures (diff two reads for a window)."""
    return web.json_response((await request.app[FLEET].stats()).to_json())


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics on the admin port: the pod's metrics summed over its processes."""
    return web.Response(body=await request.app[FLEET].metrics(), headers={"content-type": CONTENT_TYPE})


async def admin_healthz(request: web.Request) -> web.Response:
    """GET /healthz."""
    return web.json_response({"status": "ok"})


def create_admin_app(fleet: Fleet, token: AdminToken | str) -> web.Application:
    """The admin application; the error middleware runs outside the token check, so 401s are JSON too."""
    app = web.Application(middlewares=[error_middleware, require_token], client_max_size=MAX_CONFIG_BYTES)
    app[FLEET] = fleet
    app[ADMIN_TOKEN] = token if isinstance(token, AdminToken) else AdminToken(fixed=token)
    app.router.add_put(admin.CONFIG_PATH, put_config)
    app.router.add_post(admin.CONFIG_PATH, put_config)
    app.router.add_get(admin.VERSION_PATH, get_version)
    app.router.add_get(admin.STATS_PATH, get_stats)
    app.router.add_get(admin.METRICS_PATH, get_metrics)
    app.router.add_get(admin.HEALTHZ_PATH, admin_healthz)
    return app


# --- the worker side of the control sockets ---------------------------------------------------------

CONTROL_SIDECAR = web.AppKey("control_sidecar", Sidecar)


async def control_config(request: web.Request) -> web.Response:
    """PUT /control/config: the parent validated it already; apply (validation runs again, cheaply)."""
    sidecar = request.app[CONTROL_SIDECAR]
    try:
        snapshot = sidecar.config.apply(await request.read(), "parent")
    except ConfigRejectedError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    return web.json_response({"version": snapshot.version})


async def control_version(request: web.Request) -> web.Response:
    """GET /control/version."""
    return web.json_response(version_document(request.app[CONTROL_SIDECAR].config))


async def control_stats(request: web.Request) -> web.Response:
    """GET /control/stats."""
    sidecar = request.app[CONTROL_SIDECAR]
    return web.json_response(
        sidecar.stats.snapshot(pod=sidecar.settings.pod_name, config_version=sidecar.config.version).to_json()
    )


async def control_metrics(request: web.Request) -> web.Response:
    """GET /control/metrics: this worker's own metrics (the caller sums)."""
    return web.Response(body=request.app[CONTROL_SIDECAR].metrics.render(), content_type="text/plain")


def create_control_app(sidecar: Sidecar) -> web.Application:
    """The app a worker serves on its unix socket (private directory; no token)."""
    app = web.Application(client_max_size=MAX_CONFIG_BYTES)
    app[CONTROL_SIDECAR] = sidecar
    app.router.add_put("/control/config", control_config)
    app.router.add_get("/control/version", control_version)
    app.router.add_get("/control/stats", control_stats)
    app.router.add_get("/control/metrics", control_metrics)
    return app


def sibling_metrics(sockets: WorkerSockets) -> Callable[[], Awaitable[bytes]]:
    """A `/metrics` source for a worker: the sum over all workers of the pod, itself included."""

    async def render() -> bytes:
        answers = await sockets.try_call_all("GET", "/control/metrics")
        return merge_expositions(a[1].decode() for a in answers if a is not None and a[0] == 200)

    return render


async def close_sockets_ctx(sockets: WorkerSockets) -> AsyncIterator[None]:
    """Cleanup-context body closing the worker sockets' sessions."""
    yield
    await sockets.close()
