"""The sidecar's own upstream HTTP/1.1 client against raw servers: body framings, keep-alive reuse, a
pooled connection the server closed while idle, and a refused connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from modelroute_sidecar.httpclient import Pool, UpstreamError, parse_origin
from tests.component.conftest import free_port

Reply = Callable[[bytes], list[bytes]]


async def serve(reply: Reply, *, close_after: bool = False) -> tuple[asyncio.Server, list[int]]:
    """A raw server answering each request (head + Content-Length body) with `reply(body)` pieces."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length)
                for piece in reply(body):
                    writer.write(piece)
                    await writer.drain()
                if close_after:
                    break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = Pool(limit_per_host=4, keepalive_seconds=30)
    yield pool
    await pool.close()


def url_of(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


async def test_content_length_bodies_reuse_one_connection(pool: Pool) -> None:
    server, connections = await serve(
        lambda body: [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body]
    )
    async with server:
        for i in range(3):
            response = await pool.post(url_of(server), "/echo", b"hello %d" % i, {}, connect_timeout=1)
            assert response.status == 200
            assert await response.read() == b"hello %d" % i
    assert len(connections) == 1


async def test_chunked_body_is_streamed_and_dechunked(pool: Pool) -> None:
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
              b"5\r\ndata:\r\n", b"3;ext=1\r\n 1\n\r\n", b"0\r\nX-Trailer: t\r\n\r\n"]  # fmt: skip
    server, connections = await serve(lambda body: pieces)
    async with server:
        response = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        assert response.content_type == "text/event-stream"
        assert [c async for c in response.iter_chunks()] == [b"data:", b" 1\n"]
        again = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        assert await again.read() == b"data: 1\n"
    assert len(connections) == 1


async def test_close_delimited_body(pool: Pool) -> None:
    server, connections = await serve(
        lambda body: [b"HTTP/1.1 200 OK\r\n\r\n", b"abc", b"def"], close_after=True
    )
    async with server:
        response = await pool.post(url_of(server), "/", b"", {}, connect_timeout=1)
        assert await response.read() == b"abcdef"
        response = await pool.post(url_of(server), "/", b"", {}, connect_timeout=1)
        assert await response.read() == b"abcdef"
    assert len(connections) == 2  # not reusable: a new connection each time


async def test_idle_connection_closed_by_the_server_is_replaced(pool: Pool) -> None:
    ok = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    server, connections = await serve(lambda body: ok, close_after=True)  # closes after each answer
    async with server:
        for _ in range(3):
            response = await pool.post(url_of(server), "/", b"", {}, connect_timeout=1)
            assert await response.read() == b"ok"
    assert len(connections) == 3


async def test_refused_connection_is_an_upstream_error(pool: Pool) -> None:
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.post(f"http://127.0.0.1:{free_port()}/v1", "/", b"", {}, connect_timeout=1)


def test_origin_parsing() -> None:
    origin = parse_origin("https://api.example.com/v1/")
    assert (origin.scheme, origin.host, origin.port, origin.base_path, origin.host_header) == (
        "https", "api.example.com", 443, "/v1", "api.example.com",
    )  # fmt: skip
    assert parse_origin("http://127.0.0.1:9001/v1").host_header == "127.0.0.1:9001"
    with pytest.raises(ValueError, match="not an http"):
        parse_origin("ftp://x/v1")
