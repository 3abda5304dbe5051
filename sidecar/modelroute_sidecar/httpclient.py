"""A lean HTTP/1.1 client for upstream calls: keep-alive pools, one write per request, streamed bodies.

Why not aiohttp's client: per request it builds a request object, a payload, header multidicts, timers
and a response object, which measured at ~150-200 us of CPU on the benchmark box, more than the whole
routing decision, and the sidecar makes one such call per request. This client does only what the
proxy needs: POST a JSON body, read the status and headers, then either read the whole body or hand it
over piece by piece (Content-Length, chunked or until close) as it arrives, for SSE relaying.

Timeouts are the caller's (a deadline scope or `asyncio.timeout`); a response that is abandoned
half-read closes its connection instead of returning it to the pool. TLS works through `ssl` on the
connection (https URLs).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024
PAUSE_READING_BYTES = 1 << 20
"""Buffered body bytes above which the socket stops being read until the relay catches up."""


class UpstreamError(Exception):
    """The upstream could not be reached or broke the protocol."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port of an upstream, plus the base path its URL carries (e.g. `/v1`)."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def key(self) -> tuple[str, str, int]:
        """What connections are pooled by."""
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        """The `Host` header value."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def parse_origin(url: str) -> Origin:
    """Split a replica base URL (`http://host:port/v1`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; bytes arrive in `buffer`, a reader waits on `_waiter`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.key: tuple[str, str, int] = ("", "", 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    @property
    def closed(self) -> bool:
        """True once the peer or we closed it."""
        return self.transport is None or self.eof or self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self._loop = asyncio.get_running_loop()  # once per connection, not per read (getpid() on 3.11)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > PAUSE_READING_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self) -> None:
        """Wait until more bytes (or EOF) arrive; raise when the connection ended without them."""
        if self.eof:
            raise UpstreamError(
                f"connection closed by upstream{': ' + str(self.error) if self.error else ''}"
            )
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        assert self._loop is not None
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self, count: int) -> bytes:
        """Remove and return up to `count` buffered bytes."""
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()
        self.eof = True


class Response:
    """Status and headers of an upstream answer; the body is read with `read()` or `iter_chunks()`."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_done",
        "_pool",
        "_remaining",
        "_reusable",
        "_slot",
        "headers",
        "status",
    )

    def __init__(
        self, pool: Pool, conn: _Connection, slot: asyncio.Semaphore, status: int, headers: dict[str, str]
    ) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._slot = slot
        self.status = status
        self.headers = headers
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._remaining: int | None = int(length) if length is not None and not self._chunked else None
        self._reusable = headers.get("connection", "").lower() != "close" and (
            self._chunked or self._remaining is not None
        )
        self._done = self._remaining == 0 or status in (204, 304)

    @property
    def content_type(self) -> str:
        """The media type without parameters."""
        return self.headers.get("content-type", "application/octet-stream").split(";", 1)[0].strip()

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn is None:
            return b""
        if not self._chunked and self._remaining is not None:
            # the common case, a Content-Length body: wait for all of it, copy once
            while len(conn.buffer) < self._remaining:
                await conn.wait_data()
            body = conn.take(self._remaining)
            self._remaining = 0
            self._finish()
            return body
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (de-chunked), for relaying streams."""
        conn = self._conn
        while not self._done and conn is not None:
            if self._chunked:
                chunk = await self._next_chunk()
                if chunk:
                    yield chunk
                continue
            if not conn.buffer:
                if conn.eof and self._remaining is None:  # body delimited by close
                    self._finish()
                    return
                await self._wait_or_close_delimited()
                continue
            if self._remaining is None:
                yield conn.take(len(conn.buffer))
                continue
            data = conn.take(self._remaining)
            self._remaining -= len(data)
            if self._remaining == 0:
                self._finish()
            yield data

    async def _wait_or_close_delimited(self) -> None:
        assert self._conn is not None
        try:
            await self._conn.wait_data()
        except UpstreamError:
            if self._remaining is None:
                self._finish()
                return
            raise

    async def _next_chunk(self) -> bytes:
        conn = self._conn
        assert conn is not None
        while (end := conn.buffer.find(b"\r\n")) < 0:
            await conn.wait_data()
        size = int(bytes(conn.buffer[:end]).split(b";", 1)[0], 16)
        if size == 0:
            del conn.buffer[: end + 2]
            while True:  # optional trailers, then the empty line that ends the body
                while (line_end := conn.buffer.find(b"\r\n")) < 0:
                    await conn.wait_data()
                del conn.buffer[: line_end + 2]
                if line_end == 0:
                    break
            self._finish()
            return b""
        while len(conn.buffer) < end + 2 + size + 2:
            await conn.wait_data()
        data = bytes(conn.buffer[end + 2 : end + 2 + size])
        del conn.buffer[: end + 2 + size + 2]
        return data

    def _finish(self) -> None:
        self._done = True
        self.release()

    def release(self) -> None:
        """Give the connection back (when the body was read completely) or close it; frees the slot."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        self._slot.release()
        if self._done and self._reusable and not conn.buffer:
            self._pool.put_back(conn)
        else:
            conn.close()


class Pool:
    """Keep-alive connections per origin, at most `limit_per_host` in use at once per origin."""

    def __init__(self, *, limit_per_host: int = 256, keepalive_seconds: float = 30.0) -> None:
        self.limit_per_host = limit_per_host
        self.keepalive_seconds = keepalive_seconds
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._ssl: ssl.SSLContext | None = None
        self._origins: dict[str, Origin] = {}

    def origin(self, url: str) -> Origin:
        """Parse a base URL once."""
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) > 4096:  # configs come and go: keep the cache bounded
                self._origins.clear()
            origin = self._origins[url] = parse_origin(url)
        return origin

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
    ) -> Response:
        """POST `body` to `base_url + path`; returns once status and headers arrived."""
        origin = self.origin(base_url)
        head = [f"POST {origin.base_path}{path} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        request = "".join(head).encode("latin-1") + body
        slots = self._slots.get(origin.key)
        if slots is None:
            slots = self._slots[origin.key] = asyncio.Semaphore(self.limit_per_host)
        await slots.acquire()
        try:
            return await self._send(origin, request, slots, connect_timeout)
        except BaseException:
            slots.release()
            raise

    async def _send(
        self, origin: Origin, request: bytes, slots: asyncio.Semaphore, connect_timeout: float
    ) -> Response:
        conn = self._take_idle(origin)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin, connect_timeout)
        try:
            return await self._exchange(conn, request, slots)
        except UpstreamError:
            if not reused or conn.buffer:
                raise
            # a pooled connection the upstream closed while idle: nothing was processed, use a new one
            conn = await self._connect(origin, connect_timeout)
            return await self._exchange(conn, request, slots)

    async def _exchange(self, conn: _Connection, request: bytes, slots: asyncio.Semaphore) -> Response:
        assert conn.transport is not None
        conn.transport.write(request)
        try:
            status, headers = await _read_head(conn)
        except BaseException:
            conn.close()
            raise
        return Response(self, conn, slots, status, headers)

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_seconds:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context else None,
                )
        except TimeoutError:
            raise UpstreamError(f"connect to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:
            raise UpstreamError(
                f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}"
            ) from None
        conn.key = origin.key
        return conn

    def put_back(self, conn: _Connection) -> None:
        """A fully read response returns its connection for the next request to the same origin."""
        if conn.closed:
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.limit_per_host:
            conn.close()
            return
        idle.append(conn)

    async def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _read_head(conn: _Connection) -> tuple[int, dict[str, str]]:
    """Status and headers (names lower-cased) of a response; skips 1xx interim responses."""
    while True:
        while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            if len(conn.buffer) > MAX_HEAD_BYTES:
                raise UpstreamError("upstream response head too large")
            await conn.wait_data()
        head = conn.take(end + 4)[:-4].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise UpstreamError(f"malformed upstream status line {lines[0][:100]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers
