"""The admin port (for the operator) and the control sockets between a parent and its workers.

The operator pushes RouterConfigs to `PUT /config`, reads `GET /config/version` and `GET /stats`, all
with a bearer token. Behind the admin port stands a `Fleet`: in a single-process sidecar that is the
process itself (`LocalFleet`); in a multi-process one the parent serves the admin port and fans every
config out to its workers over unix sockets, answering only once each worker applied it, and sums the
workers' stats and metrics (`WorkerFleet`). Workers serve a small control API on those sockets, which
their siblings call too: for the pod's metrics, and to claim a request id another worker served
(`sibling_claims`: feedback that arrived on a new connection and so maybe on another worker).

Both are served by the data port's HTTP/1.1 server (`server.DataServer`, with its bounds, timeouts
and header checks) with a handler of their own, and the parent calls its workers with a one-request
client over the unix socket: no web framework in the sidecar (aiohttp cost each process ~10 MiB and a
third of its import time for these few rare calls).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from modelroute_contract import admin
from modelroute_contract.files import FileCache, file_stamp
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS

from .configstore import ConfigRejectedError, ConfigStore, Snapshot
from .errors import ApiError, error_response, refusal_error, request_id_of, unexpected
from .feedback import Served
from .metrics import CONTENT_TYPE, merge_expositions
from .server import DataServer, Handler, HttpRequest, HttpResponse, ResponseStream
from .state import SiblingClaim, Sidecar
from .stats import merge_snapshots

if TYPE_CHECKING:
    from modelroute_contract.stats import StatsSnapshot

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
        snapshot = self.sidecar.stats.snapshot(
            pod=self.sidecar.settings.pod_name, config_version=self.sidecar.config.version
        )
        return snapshot.model_copy(
            update={"fleet": self.sidecar.fleet.figures(), "bandit": self.sidecar.bandits.figures()}
        )

    async def metrics(self) -> bytes:
        """This process's metrics."""
        return self.sidecar.metrics.render()


def worker_socket(control_dir: Path, index: int) -> Path:
    """Where worker `index` listens for its parent."""
    return control_dir / f"worker-{index}.sock"


CONTROL_TIMEOUT_SECONDS = 10.0
"""A call to a worker's control socket (a config push, a read) gets this long, connect included."""


class ControlProtocolError(Exception):
    """A worker's control socket answered something that is not one whole HTTP/1.1 response."""


class _Answer:
    """llhttp callbacks collecting one response."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


async def unix_request(path: Path, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request over a unix socket (`Connection: close`); the status and the body. The
    caller bounds it in time."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_CONFIG_BYTES)
    try:
        data = body or b""
        head = f"{method} {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        received = 0
        while not answer.complete and (chunk := await reader.read(1 << 16)):
            received += len(chunk)
            if received > MAX_CONFIG_BYTES:
                raise ControlProtocolError(f"answer larger than {MAX_CONFIG_BYTES} bytes")
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise ControlProtocolError(f"malformed answer: {exc}") from None
        if not answer.complete:
            raise ControlProtocolError("connection closed before the answer was complete")
        return parser.get_status_code(), b"".join(answer.body)
    finally:
        writer.close()


class WorkerSockets:
    """Calls to every worker's control socket (one connection per call: they are rare)."""

    def __init__(self, control_dir: Path, workers: int) -> None:
        self.paths = [worker_socket(control_dir, i) for i in range(workers)]

    async def call(self, index: int, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        """One request to one worker (TimeoutError after `CONTROL_TIMEOUT_SECONDS`)."""
        async with asyncio.timeout(CONTROL_TIMEOUT_SECONDS):
            return await unix_request(self.paths[index], method, path, data)

    async def try_call(
        self, index: int, method: str, path: str, data: bytes | None = None
    ) -> tuple[int, bytes] | None:
        """`call`, or None when the worker cannot be reached (it died, or is starting again)."""
        try:
            return await self.call(index, method, path, data)
        except (ControlProtocolError, OSError, TimeoutError) as exc:
            log.warning("worker %d unreachable on %s %s: %s", index, method, path, exc or type(exc).__name__)
            return None

    async def try_call_all(
        self, method: str, path: str, data: bytes | None = None
    ) -> list[tuple[int, bytes] | None]:
        """`try_call` on every worker, concurrently: a worker being restarted fails no caller."""
        calls = (self.try_call(i, method, path, data) for i in range(len(self.paths)))
        return list(await asyncio.gather(*calls))

    async def close(self) -> None:
        """Nothing is held open between calls."""


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
        self.wake = asyncio.Event()
        """Set when the supervisor has something to do: a worker missed a config (here) or a child
        process ended (SIGCHLD, set by the parent); between them it sleeps instead of polling."""

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
                self.wake.set()
                continue
            status, body = result
            if status != 200:
                raise ConfigRejectedError(500, f"worker {index} did not apply the config: {body[:300]!r}")
            self.stale.discard(index)
        return down

    async def bring_up(self, index: int, running: Snapshot | None = None) -> None:
        """Give worker `index` the parent's current config (after a restart, or when it missed one);
        nothing to send when it is known to run it already (`running`: what it was forked with)."""
        async with self._lock:  # reads `current` under the lock: a push in between is not undone
            current = self.store.current
            if current is None or current is running:
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
        self._files: FileCache[None, str] = FileCache(0.0)  # stat on every call, parse on change

    def current(self) -> str:
        if not self._file:
            return self._value
        path = Path(self._file)
        try:
            return self._files.get(None, lambda: (file_stamp(path),), lambda: path.read_text().strip())
        except OSError:
            return ""  # no token yet (or unreadable): every admin call is refused


Route = Callable[[HttpRequest], Awaitable[HttpResponse]]


def json_response(data: Any, status: int = 200) -> HttpResponse:
    """A JSON body."""
    return HttpResponse(status, json.dumps(data).encode())


def serve_routes(routes: dict[str, dict[str, Route]], token: AdminToken | None = None) -> Handler:
    """A server handler for `routes` (path -> method -> route): the bearer token checked (when
    `token` is given) on every path but the contract's open ones (Prometheus scrapes metrics; their
    labels are bounded and carry no secrets), failures answered as OpenAI-style JSON errors
    carrying the request id, like the data port's."""

    async def handle(request: HttpRequest, stream: ResponseStream) -> HttpResponse:
        request_id = request_id_of(request.headers)
        try:
            if token is not None and request.path not in admin.OPEN_PATHS:
                expected = token.current()
                given = admin.presented_token(request.headers.get(admin.AUTHORIZATION_HEADER.lower(), ""))
                if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                    raise ApiError(
                        401, "unauthorized", "the admin port needs `Authorization: Bearer <admin token>`"
                    )
            methods = routes.get(request.path)
            if methods is None:
                raise ApiError(404, "not_found", "no such route")
            route = methods.get(request.method)
            if route is None:
                raise ApiError(405, "method_not_allowed", f"method {request.method} is not allowed here")
            response = await route(request)
        except Exception as exc:
            response = error_response(
                unexpected(exc, f"{request.method} {request.path}", request_id), request_id
            )
        response.headers.setdefault("x-request-id", request_id)
        return response

    return handle


def refuse(status: int, reason: str) -> HttpResponse:
    """The answer to an admin or control request the server refuses before any route."""
    request_id = request_id_of({})
    return error_response(refusal_error(status, reason), request_id)


def admin_server(fleet: Fleet, token: AdminToken | str) -> DataServer:
    """The admin port's server (not listening yet: `await server.start(host, port)`)."""
    checked = token if isinstance(token, AdminToken) else AdminToken(fixed=token)

    async def put_config(request: HttpRequest) -> HttpResponse:
        """PUT/POST /config: validate and apply a RouterConfig; 4xx with the reason when refused."""
        try:
            result = await fleet.apply(request.body)
        except ConfigRejectedError as exc:
            log.warning("config push refused (%d): %s", exc.status, exc.message)
            raise ApiError(exc.status, "config_rejected", exc.message) from None
        return json_response(result)

    async def get_version(request: HttpRequest) -> HttpResponse:
        """GET /config/version."""
        return json_response(await fleet.version())

    async def get_stats(request: HttpRequest) -> HttpResponse:
        """GET /stats: cumulative per-endpoint and per-replica figures (diff two reads for a window)."""
        return json_response((await fleet.stats()).to_json())

    async def get_metrics(request: HttpRequest) -> HttpResponse:
        """GET /metrics on the admin port: the pod's metrics summed over its processes."""
        return HttpResponse(200, await fleet.metrics(), content_type=CONTENT_TYPE)

    async def healthz(request: HttpRequest) -> HttpResponse:
        """GET /healthz."""
        return json_response({"status": "ok"})

    routes: dict[str, dict[str, Route]] = {
        admin.CONFIG_PATH: {"PUT": put_config, "POST": put_config},
        admin.VERSION_PATH: {"GET": get_version},
        admin.STATS_PATH: {"GET": get_stats},
        admin.METRICS_PATH: {"GET": get_metrics},
        admin.HEALTHZ_PATH: {"GET": healthz},
    }
    return DataServer(serve_routes(routes, checked), refuse, max_body_bytes=MAX_CONFIG_BYTES)


CLAIM_PATH = "/control/claim"
"""Where a worker claims a request id a sibling may have served (feedback on another connection)."""


# --- the worker side of the control sockets ---------------------------------------------------------


def control_server(sidecar: Sidecar) -> DataServer:
    """What a worker serves on its unix socket (in the private control directory: no token)."""

    async def put_config(request: HttpRequest) -> HttpResponse:
        """PUT /control/config: the parent validated it already; apply (validation runs again, cheaply)."""
        try:
            snapshot = sidecar.config.apply(request.body, "parent")
        except ConfigRejectedError as exc:
            return json_response({"error": exc.message}, status=exc.status)
        return json_response({"version": snapshot.version})

    async def get_version(request: HttpRequest) -> HttpResponse:
        """GET /control/version."""
        return json_response(version_document(sidecar.config))

    async def get_stats(request: HttpRequest) -> HttpResponse:
        """GET /control/stats."""
        pod, version = sidecar.settings.pod_name, sidecar.config.version
        snapshot = sidecar.stats.snapshot(pod=pod, config_version=version)
        update = {"fleet": sidecar.fleet.figures(), "bandit": sidecar.bandits.figures()}
        return json_response(snapshot.model_copy(update=update).to_json())

    async def get_metrics(request: HttpRequest) -> HttpResponse:
        """GET /control/metrics: this worker's own metrics (the caller sums)."""
        return HttpResponse(200, sidecar.metrics.render(), content_type="text/plain")

    async def claim_request(request: HttpRequest) -> HttpResponse:
        """POST /control/claim: a sibling got feedback for a request id it does not remember; if this
        worker served it (for that tenant, when one is given), it forgets the id and says where it went.
        The sibling tallies the score: the id is claimed once in the pod, wherever the post arrived."""
        try:
            asked = json.loads(request.body)
            request_id, tenant = asked["request_id"], asked["tenant"]
        except (ValueError, KeyError, TypeError):
            return json_response({"error": "a claim is {request_id, tenant}"}, status=400)
        if not isinstance(request_id, str) or not (tenant is None or isinstance(tenant, str)):
            return json_response({"error": "a claim is {request_id, tenant}"}, status=400)
        served = sidecar.served.claim(request_id, tenant)
        if served is None:
            return json_response({"claimed": False}, status=404)
        return json_response({"claimed": True, "served": list(served)})

    routes: dict[str, dict[str, Route]] = {
        "/control/config": {"PUT": put_config},
        "/control/version": {"GET": get_version},
        "/control/stats": {"GET": get_stats},
        "/control/metrics": {"GET": get_metrics},
        CLAIM_PATH: {"POST": claim_request},
    }
    return DataServer(serve_routes(routes), refuse, max_body_bytes=MAX_CONFIG_BYTES)


def sibling_metrics(sockets: WorkerSockets) -> Callable[[], Awaitable[bytes]]:
    """A `/metrics` source for a worker: the sum over all workers of the pod, itself included."""

    async def render() -> bytes:
        answers = await sockets.try_call_all("GET", "/control/metrics")
        return merge_expositions(a[1].decode() for a in answers if a is not None and a[0] == 200)

    return render


SIBLING_CLAIMS_IN_FLIGHT = 16
"""Feedback posts one worker may have asking its siblings at once: each unknown id costs a control-socket
round trip per sibling, so posts of made-up ids must not multiply into unbounded control traffic."""


def sibling_claims(sockets: WorkerSockets, own: int) -> SiblingClaim:
    """A worker's way to claim a request id one of its siblings served: the siblings are asked one at
    a time (an id reused by a client may be remembered by two of them, and a claim forgets it, so
    asking all at once could spend both), all of them within `CONTROL_TIMEOUT_SECONDS`. A sibling that
    cannot be reached counts as not remembering it: its requests read as unknown until it is back (and
    a restarted worker has forgotten its requests anyway)."""
    others = [index for index in range(len(sockets.paths)) if index != own]
    in_flight = [0]

    async def claim(request_id: str, tenant: str | None) -> Served | None:
        if in_flight[0] >= SIBLING_CLAIMS_IN_FLIGHT:
            raise ApiError(
                503,
                "feedback_busy",
                f"{SIBLING_CLAIMS_IN_FLIGHT} feedback posts are already asking this sidecar's other workers "
                "for their request ids; retry",
                headers={"retry-after": "1"},
            )
        in_flight[0] += 1
        try:
            return await _ask(request_id, tenant)
        finally:
            in_flight[0] -= 1

    async def _ask(request_id: str, tenant: str | None) -> Served | None:
        asked = json.dumps({"request_id": request_id, "tenant": tenant}).encode()
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT_SECONDS):
                for index in others:
                    answer = await sockets.try_call(index, "POST", CLAIM_PATH, asked)
                    if answer is not None and answer[0] == 200:
                        return Served(*json.loads(answer[1])["served"])
        except TimeoutError:
            log.warning("feedback for %r: the siblings did not answer in time", request_id)
        return None

    return claim
