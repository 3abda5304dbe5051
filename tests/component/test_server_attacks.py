"""Hostile clients against a running data port, on raw sockets: request smuggling shapes, huge request
lines and heads, slow-loris and trickled bodies, thousands of idle connections past the connection
cap, pipelined `Expect: 100-continue`, declared oversize bodies, deep JSON, compressed bodies, response
headers that would break framing, and clients that leave mid-answer (the upstream call must stop at
once and never be tried again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

from modelroute_sidecar.server import DataServer, HttpRequest, HttpResponse, ResponseStream
from tests.component.conftest import Running, SidecarFactory, eventually
from tests.fakes.upstream import FakeUpstream

CHAT = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'


def post(body: bytes, extra: str = "", path: str = "/v1/chat/completions") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body (interim 1xx responses are returned as they are)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True when the server closes the connection (EOF or reset) within `within` seconds."""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        async with asyncio.timeout(within):  # a TimeoutError fails the test: the server kept it open
            while await reader.read(65536):
                continue
    return True


async def attack(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read the answer, check the server then closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(5):
            answer = await read_response(reader)
        assert await closed_by_server(reader)
        return answer
    finally:
        writer.close()


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)["error"]
    return error


def port_of(running: Running) -> int:
    return running.server.port


@pytest.mark.parametrize(
    ("shape", "raw", "says"),
    [
        (
            "TE+CL",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            "Content-Length",
        ),
        (
            "duplicate CL",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 40\r\n"
            b"\r\n{}",
            "Content-Length",
        ),
        (
            "obs-fold",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\nContent-Length: 2\r\n"
            b"\r\n{}",
            "malformed",
        ),
        ("bare LF", b"POST /v1/chat/completions HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}", "malformed"),
        (
            "bare LF after a header",
            b"GET /healthz HTTP/1.1\r\nHost: x\nX-B: y\r\n\r\n",
            "malformed",
        ),
        (
            "unsupported transfer coding",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        (
            "chunked on HTTP/1.0",
            b"POST /v1/chat/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
    ],
)
async def test_smuggling_shapes_are_refused_with_400_and_a_close(
    sidecar: Running, upstreams: dict[str, FakeUpstream], shape: str, raw: bytes, says: str
) -> None:
    status, headers, body = await attack(port_of(sidecar), raw)
    assert status == 400, shape
    assert headers["connection"] == "close"
    error = error_of(body)
    assert error["code"] == "bad_request" and says in error["message"], error
    assert not any(f.requests for f in upstreams.values())  # nothing reached an upstream


@pytest.mark.parametrize("size", [1 << 20, 16 << 20])
async def test_a_huge_request_line_is_414_naming_the_limit(start_sidecar: SidecarFactory, size: int) -> None:
    running = await start_sidecar(max_line_bytes=8192)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
    line = b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(line), 65536):
                writer.write(line[start : start + 65536])
                await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        async with asyncio.timeout(10):
            status, headers, body = await read_response(reader)
        assert status == 414 and headers["connection"] == "close"
        assert "8192 bytes" in error_of(body)["message"]
        assert await closed_by_server(reader)
    finally:
        sender.cancel()
        writer.close()


async def test_a_huge_header_is_431_without_being_buffered(start_sidecar: SidecarFactory) -> None:
    running = await start_sidecar(max_head_bytes=32768)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(256):  # 16 MiB of one header value, never ended
                writer.write(b"b" * 65536)
                await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        async with asyncio.timeout(10):
            status, _, body = await read_response(reader)
        assert status == 431 and "32768 bytes" in error_of(body)["message"]
        assert await closed_by_server(reader)
    finally:
        sender.cancel()
        writer.close()


async def test_slow_loris_at_one_byte_per_second_is_cut_within_the_head_timeout(
    start_sidecar: SidecarFactory,
) -> None:
    running = await start_sidecar(head_timeout_seconds=1.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Loris: " + b"z" * 100
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1.0)  # the attacker's pace, not a wait for the server

    sender = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(5):
            status, headers, body = await read_response(reader)
        cut = time.monotonic() - started
        assert status == 408 and headers["connection"] == "close"
        assert error_of(body)["code"] == "request_timeout"
        assert await closed_by_server(reader, within=3)
        assert 1.4 <= cut < 1.5 + 0.375 + 0.5, cut  # the timeout, at most one sweep (a quarter), slack
    finally:
        sender.cancel()
        writer.close()


async def test_a_trickled_body_is_cut_by_the_body_timeout(start_sidecar: SidecarFactory) -> None:
    running = await start_sidecar(body_timeout_seconds=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
    writer.write(
        post(b"", path="/v1/chat/completions").replace(b"Content-Length: 0", b"Content-Length: 1000")
    )
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.1)  # the attacker's pace: a byte every 100 ms, never a gap of 1 s

    sender = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(5):
            status, _, body = await read_response(reader)
        assert status == 408 and "body" in error_of(body)["message"]
        assert 0.9 <= time.monotonic() - started < 1.0 + 0.25 + 0.5  # timeout, one sweep, slack
        assert await closed_by_server(reader, within=3)
    finally:
        sender.cancel()
        writer.close()


async def test_thousands_of_idle_connections_meet_the_cap_and_are_reaped(
    start_sidecar: SidecarFactory,
) -> None:
    cap, opened = 1500, 2000
    running = await start_sidecar(max_connections=cap)
    server = running.server
    server.keepalive_seconds = 4.0  # the sidecar's is 75 s; idle reaping is what is tested here
    gate = asyncio.Semaphore(200)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await asyncio.open_connection("127.0.0.1", server.port)

    async with asyncio.timeout(60):
        connections = await asyncio.gather(*(connect() for _ in range(opened)))
    try:
        assert len(server.connections) <= cap

        async def first_bytes(reader: asyncio.StreamReader) -> bytes:
            try:
                return await asyncio.wait_for(reader.read(64), 1.0)
            except TimeoutError:
                return b""  # still open and idle
            except ConnectionError:
                return b"reset"

        answers = await asyncio.gather(*(first_bytes(reader) for reader, _ in connections))
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        idle = [a for a in answers if not a]
        assert len(refused) >= opened - cap and len(idle) <= cap
        assert len(refused) + len(idle) == opened, {a[:20] for a in answers}
        # the worker still serves once the idle ones are reaped by the keep-alive timeout
        await eventually(lambda: not server.connections, within=15, what="idle connections reaped")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            status, _, _ = await read_response(reader)
        assert status == 200
        writer.close()
    finally:
        for _, writer in connections:
            writer.close()


async def test_pipelined_expect_continue_waits_for_its_turn(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    for fake in upstreams.values():
        fake.set(delay=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar))
    try:
        writer.write(
            post(CHAT)
            + post(b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: %d" % len(CHAT))
        )
        async with asyncio.timeout(10):
            # the first answer comes first: no 100 Continue was written while it was pending
            status, _, _ = await read_response(reader)
            assert status == 200
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(CHAT)
            status, _, body = await read_response(reader)
        assert status == 200 and json.loads(body)["object"] == "chat.completion"
    finally:
        writer.close()


async def test_expect_continue_with_an_oversize_length_gets_413_at_once(
    start_sidecar: SidecarFactory,
) -> None:
    running = await start_sidecar(max_body_bytes=1000)
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    status, headers, body = await attack(port_of(running), raw)  # no body is ever sent
    assert status == 413 and headers["connection"] == "close"
    assert "limit of 1000 bytes" in error_of(body)["message"]


async def test_a_declared_oversize_length_is_413_before_the_body_is_read(
    start_sidecar: SidecarFactory,
) -> None:
    running = await start_sidecar(max_body_bytes=1000)
    raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{"
    status, _, body = await attack(port_of(running), raw)  # 100 MiB declared, one byte sent
    assert status == 413
    message = error_of(body)["message"]
    assert "104857600 bytes" in message and "limit of 1000 bytes" in message


async def test_a_deeply_nested_body_is_a_400_naming_the_depth(sidecar: Running) -> None:
    deep = b'{"model": "auto", "messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar))
    try:
        writer.write(post(deep))
        async with asyncio.timeout(5):
            status, _, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 400
    error = error_of(body)
    assert error["code"] == "invalid_json" and "nested deeper than 1024" in error["message"]


async def test_a_compressed_body_is_415_naming_content_encoding(sidecar: Running) -> None:
    import gzip

    status, _, body = await attack(port_of(sidecar), post(gzip.compress(CHAT), "Content-Encoding: gzip\r\n"))
    assert status == 415
    error = error_of(body)
    assert error["param"] == "Content-Encoding" and "Content-Encoding" in error["message"]


async def test_response_headers_that_would_break_framing_are_never_written() -> None:
    async def evil(request: HttpRequest, stream: ResponseStream) -> HttpResponse | None:
        headers = {
            "x-injected": "a\r\nset-cookie: stolen=1",
            "bad name": "v",
            "x-nul": "a\x00b",
            "x-unicode": "\u20ac",
            "Content-Length": "5",
            "transfer-encoding": "chunked",
            "connection": "upgrade",
            "x-fine": "kept",
        }
        if request.path == "/stream":
            await stream.start(200, headers)
            await stream.write(b"data: 1\n\n")
            await stream.end()
            return None
        return HttpResponse(200, b"{}", headers, content_type="application/json\r\nx-evil: 1")

    server = DataServer(evil, lambda status, reason: HttpResponse(status), max_body_bytes=1000)
    await server.start("127.0.0.1", 0)
    try:
        for path in ("/", "/stream"):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            async with asyncio.timeout(5):
                data = await reader.read()
            writer.close()
            head = data.split(b"\r\n\r\n", 1)[0].lower()
            assert b"x-fine: kept" in head
            for bad in (
                b"set-cookie",
                b"x-injected",
                b"bad name",
                b"x-nul",
                b"x-unicode",
                b"x-evil",
                b"upgrade",
            ):
                assert bad not in head, (path, bad, head)
            assert head.count(b"content-length") + head.count(b"transfer-encoding") == 1
    finally:
        await server.close(grace_seconds=1)


# --- clients that leave ---------------------------------------------------------------------------------


async def gone_outcomes(running: Running) -> bool:
    """The sidecar counted a request whose client left (`outcome="client_closed"`)."""
    text = (await running.sidecar.render_metrics()).decode()
    return any(
        line.startswith("modelroute_requests_total")
        and 'outcome="client_closed"' in line
        and not line.endswith(" 0.0")
        for line in text.splitlines()
    )


@pytest.mark.parametrize("model", ["auto", "cascade"])
async def test_a_client_that_leaves_a_non_streamed_request_stops_the_upstream_call(
    sidecar: Running, upstreams: dict[str, FakeUpstream], model: str
) -> None:
    for fake in upstreams.values():
        fake.set(delay=5.0)  # a slow generation, long enough to be cut
    _, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar))
    writer.write(post(CHAT.replace(b'"auto"', f'"{model}"'.encode())))
    await eventually(lambda: any(f.requests for f in upstreams.values()), within=5, what="the upstream call")
    writer.close()
    left = time.monotonic()
    await eventually(lambda: any(f.disconnects for f in upstreams.values()), within=2, what="upstream cut")
    cut = min(d for f in upstreams.values() for d in f.disconnects)
    assert cut - left < 0.2, cut - left
    await eventually(lambda: gone_outcomes(sidecar), within=2, what="the exchange counted as client_closed")
    assert sum(len(f.requests) for f in upstreams.values()) == 1  # no retry, no fallback, no escalation


async def test_a_client_that_leaves_a_stream_stops_the_upstream_stream(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    for fake in upstreams.values():
        fake.set(stream_chunks=100, chunk_delay=0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sidecar))
    writer.write(post(CHAT.replace(b'"hi"}]', b'"hi"}], "stream": true')))
    async with asyncio.timeout(5):
        await reader.readuntil(b"data: ")  # the answer is under way
    writer.close()
    left = time.monotonic()
    await eventually(lambda: any(f.disconnects for f in upstreams.values()), within=2, what="upstream cut")
    cut = min(d for f in upstreams.values() for d in f.disconnects)
    assert cut - left < 0.2, cut - left
    await eventually(lambda: gone_outcomes(sidecar), within=2, what="the exchange counted as client_closed")
    assert sum(len(f.requests) for f in upstreams.values()) == 1
