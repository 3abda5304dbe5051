"""A lean HTTP/1.1 client for upstream calls: keep-alive pools, one write per request, streamed bodies.

Why not aiohttp's client: per request it builds a request object, a payload, header multidicts, timers
and a response object, which measured at ~150-200 us of CPU on the benchmark box, more than the whole
routing decision, and the sidecar makes one such call per request. This client does only what the
proxy needs: POST a JSON body, read the status and headers, then either read the whole body or hand it
over piece by piece as it arrives, for SSE relaying (`Response.relay` hands each piece to the relay
from the protocol callback itself: no future, task switch or copy per piece).

Responses are framed by llhttp (httptools' response parser) in its strict mode, never by hand: a bad
chunk size, a duplicate or conflicting Content-Length, Content-Length with Transfer-Encoding, a bare-LF
line, an invalid header byte, an oversized head or (for answers read whole) an oversized body is an
`UpstreamProtocolError`, which the proxy counts as a failed attempt. The connection is closed then.

A request is written at most once. A pooled connection is checked when taken (closed, at EOF, readable,
holding stray bytes or idle too long: dropped unused) and a new one is opened only then, before any byte
of the request left; once written, any failure is the attempt's and the proxy's retry policy decides.
A POST an upstream may have read is never sent again behind the caller's back.

Timeouts are the caller's (a deadline scope or `asyncio.timeout`): a response that is abandoned, timed
out or cancelled before its end closes its connection instead of returning it to the pool, so the
upstream sees the client leave. TLS goes through `ssl` with a context per endpoint (`tls.TlsContexts`);
outbound proxies come from the environment (`proxies.ProxyConfig`).
"""

from __future__ import annotations

import asyncio
import select
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from .proxies import ProxyConfig, ProxyServer
from .tls import ClientTls

MAX_HEAD_BYTES = 64 * 1024
"""Largest response head (status line and headers) accepted."""
MAX_HEADERS = 256
"""Most header lines accepted in one response head."""
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest body of an answer read whole (a streamed answer is relayed as it comes, unbounded). Chat
answers are kilobytes; a large embeddings batch can reach tens of megabytes."""
DEFAULT_KEEPALIVE_SECONDS = 4.0
"""How long an idle upstream connection is kept: under uvicorn's 5 s keep-alive (vLLM, SGLang and most
Python model servers run on uvicorn) and Node's 5 s, so the upstream is not about to close it when a
request takes it. Servers with shorter limits (gunicorn's 2 s) are caught by the readability check."""
PAUSE_READING_BYTES = 1 << 20
"""Buffered body bytes above which the socket stops being read until the relay catches up."""
MAX_CONNECT_REPLY_BYTES = 16 * 1024
"""Largest head a proxy may answer a CONNECT with."""


Sink = Callable[[bytes], bool]
"""Takes body bytes as they are parsed (`Response.relay`); False asks for a pause until its drain."""


class UpstreamError(Exception):
    """The upstream could not be reached, or the connection broke."""

    reason = "connect"
    """The attempt outcome the proxy reports for it."""


class UpstreamProtocolError(UpstreamError):
    """The upstream broke HTTP/1.1 framing or a bound (head or body size)."""

    reason = "upstream-protocol"


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port of an upstream, plus the base path its URL carries (e.g. `/v1`)."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def key(self) -> tuple[str, str, int]:
        """Scheme, host and port."""
        return (self.scheme, self.host, self.port)

    @property
    def host_header(self) -> str:
        """The `Host` header value."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_origin(url: str) -> Origin:
    """Split a replica base URL (`http://host:port/v1`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


@dataclass(frozen=True, slots=True)
class Route:
    """How requests to one origin travel: directly or through a proxy, with which TLS; what they pool by."""

    origin: Origin
    key: tuple[object, ...]
    """Connections are pooled (and bounded) per key: origin, TLS identity and proxy."""
    connect_host: str
    connect_port: int
    target_prefix: str
    """Before the path in the request line: empty, or `http://host:port` (absolute form, via a proxy)."""
    fixed_headers: str
    """`Host` (and `Proxy-Authorization` for plain HTTP through a proxy) lines, CRLF-terminated."""
    ssl: ssl.SSLContext | None
    server_hostname: str | None
    tunnel: ProxyServer | None
    """The proxy to open a CONNECT tunnel through (https upstreams behind a proxy)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; llhttp parses what arrives, a reader waits on `_waiter`.

    State of the exchange in progress (`begin()` resets it): the head (`status`, `headers`, `head_done`),
    the body bytes not taken yet (`body`), `complete` once the message ended, and `failure` when the
    upstream broke the protocol. `dirty` marks bytes nobody asked for: such a connection is never reused.
    While `sink` is set (a relay), body bytes go to it instead of into `body`, once per read (the chunks
    that read brought, joined), and the reader is woken only for what it must act on (the end, a
    failure, a pause, a sink's error).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self.key: tuple[object, ...] = ()
        self.fd = -1
        self.busy = False
        self.dirty = False
        self.raw: bytearray | None = None
        """Set while a CONNECT tunnel is opened: bytes are collected unparsed."""
        self._parser = httptools.HttpResponseParser(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._poller: select.poll | None = None
        self._piece: bytes | None = None
        """A relay's first body chunk parsed from the read in progress, and `_more` the others: the sink
        takes them joined once the read is parsed, so that chunks that arrive together leave together
        (one scan, one write to the client, as nginx writes what one read brought with one writev)
        without waiting for anything that has not arrived. Two attributes, not one list: the common
        read holds one chunk, and a list's append, len and clear cost ~1,000 instructions a read."""
        self._more: list[bytes] = []
        self.begin()
        self.busy = False

    def begin(self) -> None:
        """Start a new exchange on this connection."""
        self.busy = True
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.head_bytes = 0
        self.header_count = 0
        self.header_bytes = 0
        self.interim = False
        self.complete = False
        self.keep_alive = False
        self.close_delimited = False
        self.body = bytearray()
        self.body_total = 0
        self.body_limit: int | None = None
        self.failure: UpstreamError | None = None
        self.sink: Sink | None = None
        self.sink_error: BaseException | None = None
        self.sink_paused = False

    @property
    def closed(self) -> bool:
        """True once the peer or we closed it."""
        return self.transport is None or self.eof or self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self._loop = asyncio.get_running_loop()  # once per connection, not per read (getpid() on 3.11)
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        if self.fd >= 0:  # one poller per connection, registered once: `usable` polls it per request
            self._poller = select.poll()
            self._poller.register(self.fd, select.POLLIN)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None and not self.complete:
            # a relay (checked first: this runs once per relayed read): the head is done, on_body
            # collects the body's chunks and the sink takes them here, joined, once per read
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # not after a 200's head; handled as below all the same
                self._fail("upstream switched protocols (status 101) on a POST")
            except httptools.HttpParserError as exc:
                self._parse_failed(exc)
            piece = self._piece
            # to_sink, inlined: what the read brought, also when it then broke the framing
            if piece is not None:
                self._piece = None
                more = self._more
                if more:
                    piece = b"".join((piece, *more))
                    more.clear()
                self.body_total += len(piece)
                try:
                    if not self.sink(piece) and not self.sink_paused:  # set by relay()
                        self._sink_full()
                except Exception as exc:  # the sink's, not the upstream's: raised to the reader by relay()
                    self._sink_failed(exc)
            if self.complete or self.failure is not None or self.sink_paused:
                self._wake()  # the reader sleeps through the pieces its sink took
            return
        if self.raw is not None:
            self.raw += data
            self._wake()
            return
        if not self.busy or self.complete:
            # bytes after the end of the answer, or while idle: the framing cannot be trusted any more
            self.dirty = True
            if not self.busy:
                self.close()
            self._wake()
            return
        if not self.head_done:
            self.head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("upstream switched protocols (status 101) on a POST")
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)
        if not self.head_done and self.head_bytes > MAX_HEAD_BYTES and self.failure is None:
            self._fail(f"upstream response head exceeds {MAX_HEAD_BYTES} bytes")
        if len(self.body) > PAUSE_READING_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if self.sink is None or self.complete or self.failure is not None or self.sink_paused:
            self._wake()

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        if self.complete:
            self.dirty = True  # e.g. bytes after `Connection: close`: the answer itself is whole
        elif self.failure is None:  # a callback below may have named the problem already
            self._fail(f"upstream broke HTTP/1.1 framing: {exc}")

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self._ended()

    def _ended(self) -> None:
        self.eof = True
        if self.busy and self.head_done and not self.complete and self.close_delimited:
            self.complete = True  # a body without length or chunking ends with the connection
            self.keep_alive = False
        self._wake()

    def _fail(self, message: str) -> None:
        self.failure = UpstreamProtocolError(message)
        if self.transport is not None:
            self.transport.close()

    # --- llhttp callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: stop parsing, never reuse the connection
            self.dirty = True
            raise ValueError("bytes after the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            self._fail(f"upstream response has more than {MAX_HEADERS} header lines")
            raise ValueError("too many headers")
        # a head that arrived in one read is measured here (the per-read count sees the reads only)
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEAD_BYTES:
            self._fail(f"upstream response head exceeds {MAX_HEAD_BYTES} bytes")
            raise ValueError("head too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.interim = True  # 100 Continue, 103 Early Hints: skipped, the real answer follows
            return
        encoding = self.headers.get("transfer-encoding")
        if encoding is not None and encoding.strip().lower() != "chunked":
            self._fail(f"upstream sent Transfer-Encoding {encoding[:60]!r}; only chunked is accepted")
            raise ValueError("transfer-encoding")
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.close_delimited = encoding is None and "content-length" not in self.headers
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:  # a relay: handed to the sink by data_received once the read is parsed
            if self._piece is None:
                self._piece = body
            else:  # a read that brought more than one chunk
                self._more.append(body)
            return
        self.body += body
        self.body_total += len(body)
        if self.body_limit is not None and self.body_total > self.body_limit:
            self._fail(f"upstream answer body exceeds {self.body_limit} bytes")
            raise ValueError("body too large")

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            self.headers = {}
            self.header_count = 0
            self.header_bytes = 0
            self.head_bytes = 0
            return
        self.complete = True

    # --- reading ---------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def check(self, what: str) -> None:
        """Raise when the exchange cannot progress: the upstream broke the protocol or went away."""
        if self.failure is not None:
            raise self.failure
        if self.eof:
            detail = f": {self.error}" if self.error else ""
            raise UpstreamError(f"connection closed by upstream {what}{detail}")

    async def wait(self) -> None:
        """Wait until something arrives (bytes, EOF, an error)."""
        if self._paused and self.transport is not None and len(self.body) <= PAUSE_READING_BYTES:
            self._paused = False
            self.transport.resume_reading()
        assert self._loop is not None
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_head(self) -> None:
        """Wait for the status line and headers of the answer."""
        while not self.head_done:
            self.check("before the response head")
            await self.wait()

    def to_sink(self, piece: bytes) -> None:
        """Hand body bytes to the relay's sink; a full sink pauses the reading, an error in it ends
        the relay (never the parser's business: it is raised to the reader)."""
        sink = self.sink
        assert sink is not None
        try:
            if not sink(piece) and not self.sink_paused:
                self._sink_full()
        except Exception as exc:  # the sink's, not the upstream's: raised to the reader by relay()
            self._sink_failed(exc)

    def _sink_full(self) -> None:
        self.sink_paused = True  # the reader drains the sink, then reading resumes
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _sink_failed(self, exc: Exception) -> None:
        self.sink = None
        self.sink_error = exc
        self.sink_paused = True

    def resume(self) -> None:
        """Read again after a relay's pause."""
        self.sink_paused = False
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def take_body(self) -> bytes:
        """Remove and return the buffered body bytes."""
        data = bytes(self.body)
        self.body.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def usable(self, now: float, keepalive_seconds: float) -> bool:
        """Whether an idle connection may carry a new request: open, clean, fresh, nothing to read."""
        if self.closed or self.dirty or now - self.idle_since >= keepalive_seconds:
            return False
        # Readable while idle means a FIN or stray bytes the loop has not processed yet: either way the
        # upstream is not waiting for a request on it. One poll(2), no blocking.
        return self._poller is None or not self._poller.poll(0)

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()
        self.eof = True


class Response:
    """Status and headers of an upstream answer; the body is read with `read()` or `iter_chunks()`."""

    __slots__ = ("_conn", "_done", "_pool", "_slot", "headers", "status")

    def __init__(self, pool: Pool, conn: _Connection, slot: asyncio.Semaphore) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._slot = slot
        self.status = conn.status
        self.headers = conn.headers
        self._done = False

    @property
    def content_type(self) -> str:
        """The media type without parameters."""
        return self.headers.get("content-type", "application/octet-stream").split(";", 1)[0].strip()

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body, at most `max_bytes` (the pool's bound by default)."""
        conn = self._conn
        if conn is None:
            return b""
        limit = self._pool.max_body_bytes if max_bytes is None else max_bytes
        try:
            conn.body_limit = limit
            if conn.body_total > limit:
                raise UpstreamProtocolError(f"upstream answer body exceeds {limit} bytes")
            while not conn.complete:
                conn.check(f"after {conn.body_total} body bytes")
                await conn.wait()
            body = conn.take_body()
        except BaseException:
            self.release()  # not read to its end (error, timeout, cancellation): the connection closes
            raise
        self._finish()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (de-chunked), for relaying streams."""
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                if conn.body:
                    yield conn.take_body()
                    continue
                if conn.complete:
                    break
                conn.check(f"after {conn.body_total} body bytes")
                await conn.wait()
        except BaseException:
            self.release()
            raise
        self._finish()

    async def next_chunk(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; b'' at the body's end
        (the body is not finished then: `read`, `relay` or `release` follow)."""
        conn = self._conn
        if conn is None:
            return b""
        try:
            while not conn.body:
                if conn.complete:
                    return b""
                conn.check(f"after {conn.body_total} body bytes")
                await conn.wait()
        except BaseException:
            self.release()
            raise
        return conn.take_body()

    async def relay(self, sink: Sink, drain: Callable[[], Awaitable[None]]) -> None:
        """Hand the body to `sink` piece by piece as it arrives (de-chunked; one piece per read of the
        socket, whatever number of chunks it held), called from the protocol's callback: no future,
        task switch or copy per piece. When `sink` returns False (its reader's
        buffer is full), reading stops until `drain()` returns. Returns at the body's end; raises as
        `iter_chunks` does, and what `sink` raised."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.sink = sink
            if conn.body:  # what arrived before the relay began
                conn.to_sink(conn.take_body())
            while not conn.complete:
                if conn.sink_error is not None:
                    raise conn.sink_error
                if conn.sink_paused:
                    await drain()
                    conn.resume()
                    continue
                conn.check(f"after {conn.body_total} body bytes")
                await conn.wait()
            if conn.sink_error is not None:  # the last piece's
                raise conn.sink_error
            if conn.sink_paused:  # the last piece filled the sink: the pooled connection reads again
                conn.resume()
        except BaseException:
            conn.sink = None
            self.release()
            raise
        conn.sink = None
        self._finish()

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
        if self._done and conn.complete and conn.keep_alive and not conn.dirty and not conn.body:
            self._pool.put_back(conn)
        else:
            conn.close()


class Pool:
    """Keep-alive connections per route, at most `limit_per_host` in use at once per route."""

    def __init__(
        self,
        *,
        limit_per_host: int = 256,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        proxies: ProxyConfig | None = None,
    ) -> None:
        self.limit_per_host = limit_per_host
        self.keepalive_seconds = keepalive_seconds
        self.max_body_bytes = max_body_bytes
        self.proxies = proxies or ProxyConfig()
        self._idle: dict[tuple[object, ...], list[_Connection]] = {}
        self._slots: dict[tuple[object, ...], asyncio.Semaphore] = {}
        self._ssl: ssl.SSLContext | None = None
        self._origins: dict[str, Origin] = {}
        self._routes: dict[tuple[str, int], Route] = {}

    def origin(self, url: str) -> Origin:
        """Parse a base URL once."""
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) > 4096:  # configs come and go: keep the cache bounded
                self._origins.clear()
            origin = self._origins[url] = parse_origin(url)
        return origin

    def route(self, url: str, tls: ClientTls | None = None) -> Route:
        """How requests to `url` travel (cached per URL and TLS context)."""
        cache_key = (url, tls.token if tls is not None else 0)
        route = self._routes.get(cache_key)
        if route is None:
            if len(self._routes) > 4096:
                self._routes.clear()
            route = self._routes[cache_key] = self._make_route(self.origin(url), tls)
        return route

    def _make_route(self, origin: Origin, tls: ClientTls | None) -> Route:
        proxy = self.proxies.for_origin(origin.scheme, origin.host, origin.port)
        context: ssl.SSLContext | None = None
        server_hostname: str | None = None
        tls_token = 0
        if origin.scheme == "https":
            if tls is not None:
                context, tls_token = tls.context, tls.token
                server_hostname = tls.server_name or origin.host
            else:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                context, server_hostname = self._ssl, origin.host
        fixed = f"Host: {origin.host_header}\r\n"
        proxy_key = proxy.address if proxy is not None else ""
        key = (*origin.key, tls_token, proxy_key)
        if proxy is None:
            return Route(origin, key, origin.host, origin.port, "", fixed, context, server_hostname, None)
        if origin.scheme == "http":  # absolute form through the proxy, which keeps the connection to it
            if proxy.authorization:
                fixed += f"Proxy-Authorization: {proxy.authorization}\r\n"
            prefix = f"http://{origin.host_header}"
            return Route(origin, key, proxy.host, proxy.port, prefix, fixed, None, None, None)
        return Route(origin, key, proxy.host, proxy.port, "", fixed, context, server_hostname, proxy)

    async def post(
        self,
        base_url: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout: float,
        tls: ClientTls | None = None,
    ) -> Response:
        """POST `body` to `base_url + path`; returns once status and headers arrived."""
        route = self.route(base_url, tls)
        head = [f"POST {route.target_prefix}{route.origin.base_path}{path} HTTP/1.1\r\n{route.fixed_headers}"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        request = "".join(head).encode("latin-1") + body
        slots = self._slots.get(route.key)
        if slots is None:
            slots = self._slots[route.key] = asyncio.Semaphore(self.limit_per_host)
        await slots.acquire()
        try:
            conn = self._take_idle(route)
            if conn is None:
                conn = await self._connect(route, connect_timeout)
        except BaseException:
            slots.release()
            raise
        # From here on the request may reach the upstream: it is written once, never again.
        conn.begin()
        try:
            assert conn.transport is not None
            conn.transport.write(request)
            await conn.read_head()
        except BaseException:
            conn.close()
            slots.release()
            raise
        return Response(self, conn, slots)

    def _take_idle(self, route: Route) -> _Connection | None:
        """The most recently used idle connection that can carry a request; unusable ones are closed."""
        idle = self._idle.get(route.key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.keepalive_seconds):
                return conn
            conn.close()
        return None

    async def _connect(self, route: Route, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = route.origin.host, route.origin.port
        via = f" via proxy {route.connect_host}:{route.connect_port}" if route.connect_host != host else ""
        try:
            async with asyncio.timeout(connect_timeout):
                direct_tls = route.ssl if route.tunnel is None else None
                _, conn = await loop.create_connection(
                    _Connection,
                    route.connect_host,
                    route.connect_port,
                    ssl=direct_tls,
                    server_hostname=route.server_hostname if direct_tls else None,
                )
                if route.tunnel is not None:
                    try:
                        await _open_tunnel(conn, route.origin, route.tunnel)
                        assert conn.transport is not None and route.ssl is not None
                        transport = await loop.start_tls(
                            conn.transport, conn, route.ssl, server_hostname=route.server_hostname
                        )
                    except BaseException:
                        conn.close()
                        raise
                    if transport is None:
                        raise UpstreamError(f"TLS through the tunnel to {host}:{port} failed")
                    conn.transport = transport
        except TimeoutError:
            raise UpstreamError(f"connect to {host}:{port}{via} timed out") from None
        except OSError as exc:  # ssl.SSLError included: the message says why the handshake failed
            reason = exc.strerror if exc.strerror and not isinstance(exc, ssl.SSLError) else str(exc)
            raise UpstreamError(f"cannot connect to {host}:{port}{via}: {reason}") from None
        conn.key = route.key
        return conn

    def put_back(self, conn: _Connection) -> None:
        """A fully read response returns its connection for the next request on the same route."""
        if conn.closed or conn.dirty:
            conn.close()
            return
        conn.busy = False
        conn.idle_since = now = time.monotonic()
        idle = self._idle.setdefault(conn.key, [])
        # the oldest sit at the front: drop the ones past the idle limit so they do not pile up
        while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive_seconds):
            idle.pop(0).close()
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


async def _open_tunnel(conn: _Connection, origin: Origin, proxy: ProxyServer) -> None:
    """CONNECT to `origin` through the proxy `conn` is connected to; raise unless it answers 2xx."""
    assert conn.transport is not None
    authority = origin.host_header if origin.port != 443 else f"{origin.host_header}:443"
    lines = [f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
    lines.append("\r\n")
    conn.raw = bytearray()
    conn.transport.write("".join(lines).encode("latin-1"))
    while (end := conn.raw.find(b"\r\n\r\n")) < 0:
        if len(conn.raw) > MAX_CONNECT_REPLY_BYTES:
            raise UpstreamProtocolError(f"proxy {proxy.address} answered CONNECT with an oversized head")
        if conn.eof:
            raise UpstreamError(f"proxy {proxy.address} closed the connection during CONNECT")
        await conn.wait()
    head, rest = bytes(conn.raw[: end + 4]), conn.raw[end + 4 :]
    conn.raw = None
    if rest:
        raise UpstreamProtocolError(f"proxy {proxy.address} sent bytes before the TLS handshake")
    reply = _ConnectReply()
    parser = httptools.HttpResponseParser(reply)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError as exc:
        raise UpstreamProtocolError(f"proxy {proxy.address} answered CONNECT badly: {exc}") from None
    status = parser.get_status_code()
    if not reply.head_done or not 200 <= status < 300:
        raise UpstreamError(f"proxy {proxy.address} refused CONNECT to {authority}: status {status}")


class _ConnectReply:
    """llhttp callbacks for a proxy's answer to CONNECT: only whether its head was whole matters."""

    head_done = False

    def on_headers_complete(self) -> None:
        self.head_done = True
