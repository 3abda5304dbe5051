"""The data port's HTTP/1.1 server: an asyncio protocol on llhttp (the `httptools` binding).

Why not aiohttp's web server here (the admin port still uses it): every request the application sends
goes through this port, and aiohttp's per-request machinery (request and response objects, multidicts,
middleware and router dispatch, payload writers) costs more than the whole routing decision. Measured
on the benchmark box, a minimal aiohttp forwarder reached ~6,400 req/s where this protocol with the
same upstream client reached ~16,000-19,000 (bench/proxy_bench.py holds the side-by-side run).

What it does, and no more: keep-alive and pipelining (answered in order, one at a time per connection),
`Expect: 100-continue` (sent only when the request's turn comes and its declared length fits),
Content-Length and chunked request bodies up to a size limit (413 naming the limit, before the body
is read when the length is declared), whole responses in one write, streamed responses with chunked
encoding and write backpressure, and a graceful close that lets in-flight requests finish.

What it holds against hostile or broken clients (the ideas of nginx's `large_client_header_buffers`,
`client_header_timeout`, `client_body_timeout` and lingering close, and of uvicorn's outgoing header
checks and `limit_concurrency`; our own code):
- the raw head is capped in bytes as it arrives: the request line by `max_line_bytes` (414, counted
  as llhttp hands the URL over, piece by piece), the whole head by `max_head_bytes` (431, counted on
  the bytes fed to the parser while a head is open, so a 16 MiB header is cut after one read, not
  buffered first);
- a head must arrive within `head_timeout_seconds` of its first byte and a body within
  `body_timeout_seconds` of its head (408, then close); idle keep-alive connections are closed after
  `keepalive_seconds`; one sweep per interval looks at every connection instead of a timer each;
- at most `max_connections` connections per worker: the next one gets a 503 and is closed;
- smuggling shapes are refused with 400 and a close: llhttp (strict, no leniencies) refuses
  Transfer-Encoding with Content-Length, duplicate Content-Length, obs-fold and bare LF; this module
  adds any Transfer-Encoding other than exactly `chunked` on HTTP/1.1; a body with a
  `Content-Encoding` is refused with 415 (we do not decompress: no bomb to defuse);
- response header names and values are checked before they are written: a name that is not a token,
  a value with CR, LF, NUL or other controls, and the framing headers only this module may set
  (Content-Length, Transfer-Encoding, Connection and the other hop-by-hop ones) are dropped and logged,
  never written raw;
- a refusal is followed by a lingering close (our side shut for writing, what the client still sends
  read and dropped for up to `LINGER_SECONDS`) so that a client still sending sees the answer
  instead of a reset;
- a client that goes away cancels its request's task: the upstream call is abandoned (its connection
  closed, not pooled) and no retry or escalation follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; more is refused with 431."""
MAX_LINE_BYTES = 8 * 1024
"""The request target (URL) of the request line; longer is refused with 414 (nginx's default buffer)."""
HEAD_TIMEOUT_SECONDS = 10.0
"""From a request's first byte to the end of its head; a slower head gets 408 and a close."""
BODY_TIMEOUT_SECONDS = 30.0
"""From the end of a head (or the `100 Continue`) to the end of its body; slower gets 408."""
MAX_CONNECTIONS = 4096
"""Open client connections per worker; the next one gets 503 and is closed."""
LINGER_SECONDS = 2.0
"""After a refusal, how long what the client still sends is read and dropped before the close."""
MAX_PIPELINED = 16
"""Queued requests per connection above which the socket stops being read until they are answered."""

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_NAME = re.compile(_TOKEN)
"""A header name: a token (RFC 9110 5.1)."""
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
"""What a field value must not hold: CR, LF, NUL and the other controls but HTAB, and what is not a byte."""
_FRAMING = frozenset(
    {"connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade"}
)  # fmt: skip
"""Framing and hop-by-hop headers: only this module writes them (a relayed one would break framing)."""

_IDLE, _ABORT = 0, -1
"""Deadline kinds besides an HTTP status (408): close when idle, abort (the end of a lingering close)."""


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


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers that may be written as they are: token names, values without CR, LF, NUL or other
    controls, no framing or hop-by-hop header. The common case (lower-case names of letters, digits and
    dashes, printable ASCII values) is checked for all of them at once with a few string methods;
    anything else goes one by one, and what fails is dropped and logged."""
    names = "".join(headers)
    values = "".join(headers.values())
    if (
        values.isascii()
        and values.isprintable()
        and names.isascii()
        and (names.islower() or not names)
        and (names.replace("-", "").isalnum() or not names)
        and "" not in headers
        and _FRAMING.isdisjoint(headers)
    ):
        return headers
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if _NAME.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
            log.warning("dropped a response header that would break framing: %.100r", name)
        elif name.lower() in _FRAMING:
            log.warning("dropped a framing response header set by a handler: %.100r", name)
        else:
            kept[name] = value
    return kept


def _head(status: int, headers: dict[str, str], content_type: str | None, keep_alive: bool) -> list[bytes]:
    """The status line and header lines, as one piece: the lines are joined as text and encoded once
    (an encode per line cost more than the checks)."""
    lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
    if content_type is not None:
        if (content_type.isascii() and content_type.isprintable()) or _BAD_VALUE.search(content_type) is None:
            lines.append(f"content-type: {content_type}\r\n")
        else:
            log.warning("dropped a content type that would break framing: %.100r", content_type)
    lines += [f"{name}: {value}\r\n" for name, value in safe_headers(headers).items()]
    if not keep_alive:
        lines.append("connection: close\r\n")
    return ["".join(lines).encode("latin-1")]


_SMALL_CHUNK = 1024
_CHUNK_HEADS = tuple(b"%x\r\n" % size for size in range(_SMALL_CHUNK))
"""The chunk-size lines of chunks shorter than `_SMALL_CHUNK` (a relayed event is ~100-500 bytes). 1,024
of them are ~47 KiB in every process; 4,096 were ~190 KiB, against a one-worker RSS target missed by
less than half a MiB, for pieces that mostly fit in 1 KiB."""


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

    def send(self, data: bytes) -> bool:
        """Queue one chunk without waiting (a relay's sink, called from the upstream's protocol);
        False when the client's buffer is over its high-water mark: `drain()` before sending more.
        ClientGoneError when the client left."""
        conn = self._conn
        if data:
            transport = conn._transport  # conn.write, inlined: this runs once per relayed piece
            if conn._closed or transport is None or transport.is_closing():
                raise ClientGoneError("client closed the connection")
            size = len(data)
            if size < _SMALL_CHUNK:  # a table lookup and a join: the %-format cost twice as much
                transport.write(b"".join((_CHUNK_HEADS[size], data, b"\r\n")))
            else:
                transport.write(b"%x\r\n%b\r\n" % (size, data))
        return not conn._writing_paused

    def sink(self, scan: Callable[[bytes], bytes]) -> Callable[[bytes], bool]:
        """A relay's sink (`httpclient.Response.relay`): `send`, with the scanning folded in. Each piece
        of the upstream's body goes through `scan` (the whole events to pass on now, maybe none), and what
        it returns is written as one chunk, in one transport write, from the upstream's protocol
        callback. One Python call a relayed piece fewer than a sink that calls `scan` and then `send`
        (callgrind: the call and its argument handling were ~1,000 instructions of a ~15,000-instruction
        piece). The sink returns False when the client's buffer is over its high-water mark (`drain()`
        before sending more) and raises ClientGoneError when the client left."""
        conn = self._conn
        heads = _CHUNK_HEADS
        join = b"".join

        def relay(piece: bytes) -> bool:
            data = scan(piece)
            if not data:
                return True
            transport = conn._transport  # conn.write, inlined: this runs once per relayed piece
            if conn._closed or transport is None or transport.is_closing():
                raise ClientGoneError("client closed the connection")
            size = len(data)
            if size < _SMALL_CHUNK:  # a table lookup and a join: the %-format cost twice as much
                transport.write(join((heads[size], data, b"\r\n")))
            else:
                transport.write(b"%x\r\n%b\r\n" % (size, data))
            return not conn._writing_paused

        return relay

    async def drain(self) -> None:
        """Wait until the client's buffer is under its high-water mark; ClientGoneError when it left."""
        await self._conn.drain()

    async def end(self) -> None:
        """Finish the response."""
        self._conn.write(b"0\r\n\r\n")
        self.finished = True


class _RefusedError(Exception):
    """Raised from a parser callback to stop parsing; the refusal is in `_Connection._refusal`."""


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
        self.deadline: float | None = None
        """Loop time at which `deadline_kind` applies; None while a request is served (or we wait)."""
        self.deadline_kind = _IDLE
        """_IDLE: close if still idle; 408: the head or body is too slow; _ABORT: end a lingering close."""
        self._closed = False
        self._broken = False
        """The parser failed or a request was refused: nothing more is parsed on this connection."""
        self._rejected = False
        """Refused at connect (over the connection cap): not counted, nothing read."""
        self._close_after_current = False
        self._in_message = False
        self._head_open = False
        self._head_fed = 0
        """Bytes fed to the parser while the current head was open (reads that began inside it)."""
        self._completed = 0
        """Messages completed so far (tells whether a head began in the middle of a read)."""
        self._continue_pending = False
        """`100 Continue` is owed once the responses ahead of this request are written."""
        self._refusal = 0
        self._refusal_reason = ""
        self._begin_message()

    def _begin_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._head_size = 0
        self._body_size = 0

    # --- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        server = self._server
        if len(server.connections) >= server.max_connections:
            self._rejected = self._broken = True
            response = server.refusal(
                503, f"too many connections (limit {server.max_connections} per worker)"
            )
            head = _head(response.status, response.headers, response.content_type, keep_alive=False)
            head.append(b"content-length: %d\r\n\r\n" % len(response.body))
            head.append(response.body)
            transport.write(b"".join(head))  # type: ignore[attr-defined]  # a stream transport
            transport.close()
            return
        server.connections.add(self)
        self._set_deadline(_IDLE, server.keepalive_seconds)
        server.watch_idle()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return  # refused (or lingering): what the client still sends is dropped
        # does this read begin inside a head, or at the start of one? (else a head begins mid-read)
        head_from_start = self._head_open or not self._in_message
        completed = self._completed
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse_and_close(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            if self._refusal:  # raised by our own callback
                self._refuse_and_close(self._refusal, self._refusal_reason)
            else:
                self._refuse_and_close(400, f"malformed HTTP request: {exc}")
            return
        if self._head_open and head_from_start and completed == self._completed:
            # the whole read went to a head still open (httptools buffers header pieces until a
            # header ends: this bounds that buffer to the limit plus one read)
            self._head_fed += len(data)
            if self._head_fed > self._server.max_head_bytes:
                self._refuse_and_close(
                    431, f"request head is larger than the limit of {self._server.max_head_bytes} bytes"
                )

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close (also ends a lingering close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._rejected:
            return
        self._server.forget(self)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientGoneError("client closed the connection"))
        task = self._task
        if task is not None and not task.done():
            # the client went away mid-request: stop its exchange (the upstream call is abandoned,
            # its connection closed; no retry or escalation follows a cancellation)
            task.cancel()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks ---------------------------------------------------------------------------

    def _stop(self, status: int, reason: str) -> None:
        self._refusal, self._refusal_reason = status, reason
        raise _RefusedError(reason)  # stops the parser; handled in data_received

    def on_message_begin(self) -> None:
        self._in_message = self._head_open = True
        self._head_fed = 0
        self._set_deadline(408, self._server.head_timeout_seconds)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if len(self._url) > self._server.max_line_bytes:
            self._stop(414, f"request line is longer than the limit of {self._server.max_line_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._server.max_head_bytes:
            self._stop(431, f"request head is larger than the limit of {self._server.max_head_bytes} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self._head_open = False
        server = self._server
        headers = self._headers
        coding = headers.get("transfer-encoding")
        if coding is not None and (
            coding.strip().lower() != "chunked" or self._parser.get_http_version() != "1.1"
        ):
            self._stop(400, f"unsupported Transfer-Encoding {coding[:100]!r}: only `chunked` on HTTP/1.1")
        encoding = headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            self._stop(
                415,
                f"Content-Encoding {encoding[:100]!r} is not supported: send the request body uncompressed",
            )
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > server.max_body_bytes:
            limit = server.max_body_bytes
            self._stop(413, f"request body of {int(length)} bytes is larger than the limit of {limit} bytes")
        if coding is None and (length is None or length.strip() == "0"):
            self.deadline = None  # no body: the request is complete
        elif headers.get("expect", "").lower() == "100-continue":
            if self._task is None and not self._queue:
                self._send_continue()
            else:  # earlier requests are still answered: 100 when this one's turn comes
                self._continue_pending = True
                self.deadline = None
        else:
            self._set_deadline(408, server.body_timeout_seconds)

    def on_body(self, body: bytes) -> None:
        if self._continue_pending:  # the client did not wait for our 100: it is not owed any more
            self._continue_pending = False
            self._set_deadline(408, self._server.body_timeout_seconds)
        self._body_size += len(body)
        if self._body_size > self._server.max_body_bytes:
            self._body.clear()
            self._stop(413, f"request body is larger than the limit of {self._server.max_body_bytes} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._completed += 1
        self.deadline = None
        keep_alive = bool(self._parser.should_keep_alive())
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

    # --- timing ----------------------------------------------------------------------------------------

    def _set_deadline(self, kind: int, seconds: float) -> None:
        if seconds > 0:
            self.deadline, self.deadline_kind = self._loop.time() + seconds, kind
        else:
            self.deadline = None

    def _send_continue(self) -> None:
        self._continue_pending = False
        with contextlib.suppress(ClientGoneError):  # called from callbacks: a closing socket is no error
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._set_deadline(408, self._server.body_timeout_seconds)

    def expire(self) -> None:
        """Its deadline passed (the server's sweep calls this)."""
        self.deadline = None
        if self.deadline_kind == _IDLE:
            self.close_if_idle()
        elif self.deadline_kind == _ABORT:
            self._abort()
        elif self._reading_paused:  # our doing, not the client's: the clock starts again
            self._set_deadline(408, self._server.head_timeout_seconds or self._server.body_timeout_seconds)
        else:
            what = "head" if self._head_open else "body"
            self._refuse_and_close(408, f"the request {what} did not arrive in time")

    # --- serving ---------------------------------------------------------------------------------------

    def _serve_next(self) -> None:
        if not self._queue or self._closed:
            self._task = None
            if self._closed or self._broken:
                return
            if self._continue_pending:
                self._send_continue()
            elif not self._in_message:
                self._set_deadline(_IDLE, self._server.keepalive_seconds)
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
            if not self._closed:
                self._respond(self._server.refusal(*item), keep_alive=False, linger=True)
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

    def _respond(self, response: HttpResponse, keep_alive: bool, *, linger: bool = False) -> None:
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            return  # the client left (or is leaving) before its answer was ready: nobody to tell
        keep_alive = keep_alive and not self._close_after_current
        head = _head(response.status, response.headers, response.content_type, keep_alive)
        head.append(b"content-length: %d\r\n\r\n" % len(response.body))
        head.append(response.body)
        self.write(b"".join(head))
        if linger:
            self._linger()
        elif not keep_alive:
            self._close_when_written()

    def _refuse_and_close(self, status: int, reason: str) -> None:
        """Answer a request that cannot be parsed on, then close (after any request still being served)."""
        self._broken = True
        self._continue_pending = False
        self.deadline = None
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

    def _linger(self) -> None:
        """Close after a refusal without resetting a client that is still sending: shut our side, drop
        what arrives until the client closes or `LINGER_SECONDS` pass (a reset would discard the answer
        the client has not read yet)."""
        self._queue.clear()
        self._broken = True
        transport = self._transport
        if transport is None or self._closed:
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self._set_deadline(_ABORT, LINGER_SECONDS)
        else:
            transport.close()

    def _close_when_written(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()  # flushes what is buffered, then closes

    def _abort(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.abort()

    def close_if_idle(self) -> bool:
        """Close the connection unless a request is being served, waits or is being read; True when closed."""
        if self._task is None and not self._queue and not self._in_message and self._transport is not None:
            self._transport.close()
            return True
        return False

    def close_after_current(self) -> None:
        """Finish the request being served, answer no more."""
        if not self.close_if_idle():
            self._close_after_current = True


def _is_ip(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address (not a name to resolve)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


class DataServer:
    """Listens on a port and serves each connection with `handler`."""

    def __init__(
        self,
        handler: Handler,
        refusal: RefusalHandler,
        *,
        max_body_bytes: int,
        keepalive_seconds: float = 75.0,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_head_bytes: int = MAX_HEAD_BYTES,
        head_timeout_seconds: float = HEAD_TIMEOUT_SECONDS,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.handler = handler
        self.refusal = refusal
        self.max_body_bytes = max_body_bytes
        self.keepalive_seconds = keepalive_seconds
        self.max_line_bytes = max_line_bytes
        self.max_head_bytes = max_head_bytes
        self.head_timeout_seconds = head_timeout_seconds
        self.body_timeout_seconds = body_timeout_seconds
        self.max_connections = max_connections
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._none_left = asyncio.Event()
        self._idle_sweep: asyncio.TimerHandle | None = None

    def watch_idle(self) -> None:
        """Make sure connection deadlines are looked at: one sweep for all of them, armed while any is
        open, instead of a timer handle made, armed and cancelled around every request. A deadline
        (keep-alive, head, body, linger) acts between its time and a quarter of the shortest timeout
        more (at most 1 s)."""
        timeouts = [
            t
            for t in (
                self.keepalive_seconds,
                self.head_timeout_seconds,
                self.body_timeout_seconds,
                LINGER_SECONDS,
            )
            if t > 0
        ]
        if self._idle_sweep is None and timeouts:
            interval = min(1.0, min(timeouts) / 4)
            self._idle_sweep = asyncio.get_running_loop().call_later(interval, self._sweep_idle, interval)

    def _sweep_idle(self, interval: float) -> None:
        self._idle_sweep = None
        if not self.connections:
            return
        now = asyncio.get_running_loop().time()
        for conn in list(self.connections):
            if conn.deadline is not None and now >= conn.deadline:
                conn.expire()
        self._idle_sweep = asyncio.get_running_loop().call_later(interval, self._sweep_idle, interval)

    def forget(self, conn: _Connection) -> None:
        """A connection ended."""
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self._none_left.set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> None:
        """Listen on host:port (0 picks a free port; `reuse_port` lets workers share it)."""
        loop = asyncio.get_running_loop()
        if reuse_port or _is_ip(host):
            # an address needs no resolving: binding it here also spares uvloop's resolver, which
            # imports the idna codec (~0.4 MiB) to encode even an IP literal
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                elif sock.family == socket.AF_INET6:  # as create_server does for an IPv6 address
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
            except BaseException:
                sock.close()
                raise
            self._server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=backlog)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
            )

    async def start_unix(self, path: str) -> None:
        """Listen on a unix socket at `path` (a worker's control socket)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path)

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
