"""The operator's health and metrics server: /healthz, /readyz and /metrics on a thread of its own.

Liveness means the operator still works, not that a socket answers: the main event loop (Kopf's watches,
the reconciler, probes, canary steps, leader renewals) stamps a heartbeat every second, and /healthz
fails once the last stamp is older than `wedged_seconds`, so the kubelet restarts a pod whose loop hangs
on a blocking call or a runaway step. The server runs on its own thread with the standard library's
HTTP server, so it can answer (with that failure) while the loop cannot. /readyz is ready once startup is
done (the webhooks listen, when on) and the loop is alive; a standby is ready too, since it serves the
webhooks.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from modelroute_operator.clients import metrics

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
WEDGED_SECONDS = 15.0
"""No heartbeat for this long: /healthz fails (the chart's liveness probe then restarts the pod)."""
REQUEST_SECONDS = 5.0
"""A connection that has not sent its request (or read the answer) within this is closed."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at accept (the kubelet and a scraper need a few)."""


class _BoundedServer(http.server.ThreadingHTTPServer):
    """One thread per connection, but at most `MAX_CONNECTIONS` of them: a client holding connections
    open cannot make the operator start threads without bound."""

    daemon_threads = True
    request_queue_size = 2 * MAX_CONNECTIONS  # the listen backlog: a burst waits to be refused, not dropped

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Heartbeat:
    """The main loop's pulse, read from the health thread."""

    def __init__(self, wedged_seconds: float = WEDGED_SECONDS) -> None:
        # Below one beat and a half, a loop that is merely between beats would look wedged.
        self.wedged_seconds = max(wedged_seconds, 1.5 * HEARTBEAT_SECONDS)
        self.last = time.monotonic()
        self.ready = False
        """Set once startup is done."""

    async def beat(self) -> None:
        """Stamp every HEARTBEAT_SECONDS until cancelled; the lateness of each stamp is a metric."""
        while True:
            expected = time.monotonic() + HEARTBEAT_SECONDS
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.last = now = time.monotonic()
            metrics.LOOP_LAG.set(max(0.0, now - expected))

    def silence(self) -> float:
        """Seconds since the last stamp."""
        return time.monotonic() - self.last

    def alive(self) -> bool:
        return self.silence() < self.wedged_seconds


class HealthServer:
    """The HTTP server on its own thread; `start()` binds (port 0 picks one), `stop()` shuts it down."""

    def __init__(
        self, heartbeat: Heartbeat, port: int, host: str = "0.0.0.0", request_seconds: float = REQUEST_SECONDS
    ) -> None:
        beat = heartbeat

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = request_seconds  # the socket's timeout: a slow or silent client is dropped

            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path in ("/healthz", "/readyz"):
                    silence = beat.silence()
                    if not beat.alive():
                        self._json(503, {"status": f"event loop wedged: no heartbeat for {silence:.1f}s"})
                    elif self.path == "/readyz" and not beat.ready:
                        self._json(503, {"status": "starting"})
                    else:
                        self._json(200, {"status": "ok"})
                else:
                    self._json(404, {"status": "not found"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._answer(status, json.dumps(body).encode(), "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the kubelet probes every few seconds: no line per probe

        self._server = _BoundedServer((host, port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)
        self._thread.start()
        log.info("health and metrics on :%d", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
