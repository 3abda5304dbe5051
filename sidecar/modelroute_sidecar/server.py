"""The data port's HTTP/1.1 server: an asyncio protocol on llhttp (the `httptools` binding).

Why not aiohttp's web server here (the admin port still uses it): every request the application sends
goes through this port, and aiohttp's per-request machinery (request and response objects, multidicts,
middleware and router dispatch, payload writers) costs more than the whole routing decision. Measured
on the benchmark box, a minimal aiohttp forwarder reached ~6,400 req/s where this protocol with the
same upstream client reached ~16,000-19,000 (bench/proxy_bench.py holds the side-by-side run).

What it does, and no more: keep-alive and pipelining (answered in order, one at a time per connection),
`Expect: 100-continue`, Content-Length and chunked request bodies up to a size limit (413 past it),
bounded request heads (431), 400 on malformed input, whole responses in one write, streamed responses
with chunked encoding and write backpressure, an idle keep-alive timeout, and a graceful close that
lets in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; more is refused with 431."""
MAX_PIPELINED = 16
"""Queued requests per connection above which the socket stops being read until they are answered."""

_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    """A complete request: names of `headers` are lower-case, repeated headers joined with ', '."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    query: str = ""


@dataclass(slots=True)
class HttpResponse:
    """A whole response, written in one go with its Content-Length."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class ClientGoneError(ConnectionResetError):
    """The client closed the connection while its response was being written."""


Handler = Callable[[HttpRequest, "ResponseStream"], Awaitable[HttpResponse | None]]
"""Serves a request: returns the response, or None after writing it through the stream."""
RefusalHandler = Callable[[int, str], HttpResponse]
"""Builds the response for a request refused before the handler (status, reason): 400, 413, 431."""


def _head(status: int, headers: dict[str, str], content_type: str | None, keep_alive: bool) -> list[bytes]:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))]
    if content_type is not None:
        lines.append(b"content-type: " + content_type.encode("latin-1") + b"\r\n")
    for name, value in headers.items():
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    return lines


class ResponseStream:
    """Writes one response piece by piece with chunked encoding (for relaying server-sent events)."""

    __slots__ = ("_conn", "_keep_alive", "finished", "started")

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self.started = False
        self.finished = False

    async def start(self, status: int, headers: dict[str, str]) -> None:
        """Send the status line and headers."""
        head = _head(status, headers, None, self._keep_alive)
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        self.started = True
        self._conn.write(b"".join(head))
        await self._conn.drain()

    async def write(self, data: bytes) -> None:
        """Send one chunk as soon as the socket takes it; ClientGoneError when the client left."""
        if data:
            self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))
            await self._conn.drain()

    async def end(self) -> None:
        """Finish the response."""
        self._conn.write(b"0\r\n\r\n")
        self.finished = True


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them in order."""

    def __init__(self, server: DataServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[HttpRequest | tuple[int, str], bool]] = deque()
        """Parsed requests, or refusals (status, reason), with their keep-alive flag, oldest first."""
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.idle_since: float | None = None
        """Loop time since when the connection waits for a request; None while one is read or served."""
        self._closed = False
        self._broken = False
        """The parser failed: nothing more is read from this connection."""
        self._close_after_current = False
        self._begin_message()

    def _begin_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_size = 0
        self._body_size = 0
        self._refusal = 0

    # --- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        self._server.connections.add(self)
        self.idle_since = self._loop.time()
        self._server.watch_idle()

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        if self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse_and_close(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if self._refusal:  # raised by our own callback (head too large)
                self._refuse_and_close(self._refusal, "request head too large")
            else:
                self._refuse_and_close(400, f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.forget(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientGoneError("client closed the connection"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks ---------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            self._refusal = 431
            raise ValueError("request head too large")  # stops the parser; handled in data_received
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._server.max_body_bytes:
            self._refusal = 413
        elif self._headers.get("expect", "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refusal:
            return  # read and dropped, so the refusal reaches a client that is still sending
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._refusal = 413
            self._body.clear()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = bool(self._parser.should_keep_alive())
        if self._refusal:
            self._queue.append(((self._refusal, "request body is larger than the limit"), False))
        else:
            path, _, query = self._url.decode("latin-1").partition("?")
            request = HttpRequest(
                self._parser.get_method().decode("latin-1"), path, self._headers, b"".join(self._body), query
            )
            self._queue.append((request, keep_alive))
        self._begin_message()
        if len(self._queue) > MAX_PIPELINED and self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        if self._task is None:
            self._serve_next()

    # --- serving ---------------------------------------------------------------------------------------

    def _serve_next(self) -> None:
        if not self._queue or self._closed:
            self._task = None
            if not self._closed:
                self.idle_since = self._loop.time()
            return
        if self._reading_paused and len(self._queue) <= MAX_PIPELINED // 2 and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        item, keep_alive = self._queue.popleft()
        self._task = self._loop.create_task(self._serve(item, keep_alive))
        self._task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("serving a request failed", exc_info=task.exception())
            self._abort()
        if self._close_after_current:
            self._close_when_written()
            return
        self._serve_next()

    async def _serve(self, item: HttpRequest | tuple[int, str], keep_alive: bool) -> None:
        keep_alive = keep_alive and not self._server.closing
        if isinstance(item, tuple):
            self._respond(self._server.refusal(*item), keep_alive=False)
            return
        stream = ResponseStream(self, keep_alive)
        try:
            response = await self._server.handler(item, stream)
        except ClientGoneError:
            return
        if response is not None:
            self._respond(response, keep_alive)
        elif not stream.finished:
            self._abort()  # a stream that did not end cleanly: the client must not wait for more
        elif not keep_alive:
            self._close_when_written()

    def _respond(self, response: HttpResponse, keep_alive: bool) -> None:
        if self._closed:
            return  # the client left before its answer was ready: nobody to tell
        keep_alive = keep_alive and not self._close_after_current
        head = _head(response.status, response.headers, response.content_type, keep_alive)
        head.append(b"content-length: %d\r\n\r\n" % len(response.body))
        head.append(response.body)
        self.write(b"".join(head))
        if not keep_alive:
            self._close_when_written()

    def _refuse_and_close(self, status: int, reason: str) -> None:
        """Answer a request that cannot be parsed on, then close (after any request still being served)."""
        self._broken = True
        if self._transport is None or self._closed:
            return
        self._queue.append(((status, reason), False))
        if self._task is None:
            self._serve_next()

    # --- transport helpers -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket; ClientGoneError when it is closed."""
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ClientGoneError("client closed the connection")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is over its high-water mark."""
        if self._closed:
            raise ClientGoneError("client closed the connection")
        if not self._writing_paused:
            return
        self._drain_waiter = self._loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def _close_when_written(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()  # flushes what is buffered, then closes

    def _abort(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.abort()

    def close_if_idle(self) -> bool:
        """Close the connection unless a request is being served or waits; True when closed."""
        if self._task is None and not self._queue and self._transport is not None:
            self._transport.close()
            return True
        return False

    def close_after_current(self) -> None:
        """Finish the request being served, answer no more."""
        if not self.close_if_idle():
            self._close_after_current = True


class DataServer:
    """Listens on a port and serves each connection with `handler`."""

    def __init__(
        self,
        handler: Handler,
        refusal: RefusalHandler,
        *,
        max_body_bytes: int,
        keepalive_seconds: float = 75.0,
    ) -> None:
        self.handler = handler
        self.refusal = refusal
        self.max_body_bytes = max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._none_left = asyncio.Event()
        self._idle_sweep: asyncio.TimerHandle | None = None

    def watch_idle(self) -> None:
        """Make sure idle connections are looked at: one sweep for all of them, armed while any is open,
        instead of a timer handle made, armed and cancelled around every request. A connection is
        closed between `keepalive_seconds` and a quarter more (at most 1 s) after its last answer."""
        if self._idle_sweep is None and self.keepalive_seconds > 0:
            interval = min(1.0, self.keepalive_seconds / 4)
            self._idle_sweep = asyncio.get_running_loop().call_later(interval, self._sweep_idle, interval)

    def _sweep_idle(self, interval: float) -> None:
        self._idle_sweep = None
        if not self.connections:
            return
        now = asyncio.get_running_loop().time()
        for conn in list(self.connections):
            if conn.idle_since is not None and now - conn.idle_since >= self.keepalive_seconds:
                conn.close_if_idle()
        self._idle_sweep = asyncio.get_running_loop().call_later(interval, self._sweep_idle, interval)

    def forget(self, conn: _Connection) -> None:
        """A connection ended."""
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self._none_left.set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> None:
        """Listen on host:port (0 picks a free port; `reuse_port` lets workers share it)."""
        loop = asyncio.get_running_loop()
        if reuse_port:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
            )

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace_seconds`), then close everything."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_after_current()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await self._none_left.wait()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn._abort()
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
            self._idle_sweep = None
        if self._server is not None:
            await self._server.wait_closed()
