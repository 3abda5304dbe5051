"""The data port's HTTP/1.1 server on raw sockets: keep-alive and pipelining in order, 100-continue,
chunked request bodies, refusals (413 before the body is stored, 400 on garbage, 431 on huge heads),
streamed responses, the idle timeout, a graceful close that lets a request in flight finish, and the
check of response headers (hostile clients: test_server_attacks.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from modelroute_sidecar.server import DataServer, HttpRequest, HttpResponse, ResponseStream, safe_headers

Serve = Callable[..., Awaitable[DataServer]]
slow_started = asyncio.Event()


async def echo(request: HttpRequest, stream: ResponseStream) -> HttpResponse | None:
    if request.path == "/stream":
        await stream.start(200, {"content-type": "text/event-stream"})
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            await stream.write(part)
        await stream.end()
        return None
    if request.path == "/slow":
        slow_started.set()
        await asyncio.sleep(0.2)
    summary = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "body": request.body.decode(),
    }
    return HttpResponse(200, json.dumps(summary).encode(), {"x-seen": request.headers.get("x-seen", "")})


def refuse(status: int, reason: str) -> HttpResponse:
    return HttpResponse(status, json.dumps({"error": reason}).encode())


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[DataServer] = []

    async def start(**kwargs: object) -> DataServer:
        options: dict[str, object] = {"max_body_bytes": 1024, **kwargs}
        server = DataServer(echo, refuse, **options)  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close(grace_seconds=1)


async def exchange(port: int, raw: bytes, answers: int = 1) -> bytes:
    """Send raw bytes, read until `answers` complete responses (or the server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(5):
            while data.count(b"HTTP/1.1 ") - data.count(b"HTTP/1.1 100") < answers or not _complete(data):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        writer.close()
    return data


def _complete(data: bytes) -> bool:
    last = data.rfind(b"HTTP/1.1 ")
    head_end = data.find(b"\r\n\r\n", last)
    if head_end < 0:
        return False
    head = data[last:head_end].lower()
    if b"transfer-encoding: chunked" in head:
        return data.endswith(b"0\r\n\r\n")
    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length" in head else 0
    return len(data) - head_end - 4 >= length


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(serve: Serve) -> None:
    server = await serve()
    raw = post("/slow", b"first") + post("/a?x=1", b"second", "x-seen: yes\r\n")
    data = await exchange(server.port, raw, answers=2)
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b'"body": "first"' in first  # the slow one still answers first
    assert b'"body": "second"' in second and b'"query": "x=1"' in second and b"x-seen: yes" in second
    assert b"connection: close" not in data


async def test_expect_continue_and_chunked_request_bodies(serve: Serve) -> None:
    server = await serve()
    raw = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    data = await exchange(server.port, raw)
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert b'"body": "hello world"' in data


async def test_bodies_over_the_limit_are_refused_with_413_and_the_connection_closed(serve: Serve) -> None:
    server = await serve(max_body_bytes=10)
    declared = await exchange(server.port, post("/a", b"x" * 100))
    assert declared.startswith(b"HTTP/1.1 413 Request Entity Too Large") and b"connection: close" in declared
    chunked = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"8\r\n12345678\r\n" * 3
    refused = await exchange(server.port, chunked + b"0\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 413")


async def test_garbage_is_400_and_huge_heads_431(serve: Serve) -> None:
    server = await serve()
    garbage = await exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 Bad Request") and b"malformed HTTP request" in garbage
    huge = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n"
    assert (await exchange(server.port, huge)).startswith(b"HTTP/1.1 431")


async def test_streamed_responses_are_chunked(serve: Serve) -> None:
    server = await serve()
    data = await exchange(server.port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"transfer-encoding: chunked" in data
    assert data.endswith(b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n")


async def test_idle_connections_are_closed(serve: Serve) -> None:
    server = await serve(keepalive_seconds=0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the server without a request
    writer.close()


async def test_the_keep_alive_clock_restarts_with_each_answer_and_busy_connections_stay(
    serve: Serve,
) -> None:
    server = await serve(keepalive_seconds=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):
        # a slow request (0.2 s) every ~0.2 s for 1.2 s: never idle for 0.3 s, so never closed
        while loop.time() - started < 1.2:
            writer.write(post("/slow", b"x"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        answered = loop.time()
        assert await reader.read() == b""  # then idle: closed after the keep-alive (+ one sweep)
    assert 0.3 - 0.05 <= loop.time() - answered < 3
    writer.close()


async def test_close_lets_the_request_in_flight_finish(serve: Serve) -> None:
    server = await serve()
    slow_started.clear()
    answer = asyncio.ensure_future(exchange(server.port, post("/slow", b"late")))
    async with asyncio.timeout(5):
        await slow_started.wait()
    await server.close(grace_seconds=5)
    data = await answer
    assert data.startswith(b"HTTP/1.1 200 OK") and b'"body": "late"' in data
    assert b"connection: close" in data


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ({"x-a": "1", "x-request-id": "abc"}, {"x-a": "1", "x-request-id": "abc"}),
        ({"X-Upper": "ok", "x-tab": "a\tb", "x-obs": "caf\xe9", "x_u": "1"}, None),  # valid, slow path
        ({"x-a": "1\r\nset-cookie: x"}, {}),
        ({"x-a": "1\nb"}, {}),
        ({"x-a": "1\x00"}, {}),
        ({"x-a": "\u20ac"}, {}),
        ({"a b": "1"}, {}),
        ({"a:b": "1"}, {}),
        ({"": "1"}, {}),
        (
            {"Transfer-Encoding": "chunked", "content-length": "1", "keep-alive": "x", "x-ok": "1"},
            {"x-ok": "1"},
        ),
    ],
)
def test_response_headers_are_checked_before_writing(
    headers: dict[str, str], kept: dict[str, str] | None
) -> None:
    assert safe_headers(headers) == (headers if kept is None else kept)



async def test_a_client_that_leaves_before_its_answer_is_no_server_error(caplog: pytest.LogCaptureFixture) -> None:
    """The connection starts closing in the same turn of the loop as the answer becomes ready (what a
    load generator that stops with requests in flight does): the answer is dropped quietly. It used to
    raise ClientGoneError out of the serving task, logged as `serving a request failed` with a
    traceback. The close is made here by the handler itself, so the order is certain."""

    async def answer_after_the_close(request: HttpRequest, stream: ResponseStream) -> HttpResponse:
        transport = stream._conn._transport  # the close, in the handler's own turn
        assert transport is not None
        transport.close()
        return HttpResponse(200, b"{}")

    server = DataServer(answer_after_the_close, refuse, max_body_bytes=1024)
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed, no answer
        writer.close()
    finally:
        await server.close(grace_seconds=1)
    assert "serving a request failed" not in caplog.text
