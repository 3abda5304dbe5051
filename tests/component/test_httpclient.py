"""The sidecar's own upstream HTTP/1.1 client against raw loopback servers: body framings, keep-alive
reuse, strict framing against a misbehaving upstream, write-once POSTs, pool hygiene (stray bytes, idle
limit, cancellation) and a refused connection. TLS and proxies are in test_upstream_tls.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from modelroute_sidecar.httpclient import (
    MAX_HEAD_BYTES,
    Pool,
    UpstreamError,
    UpstreamProtocolError,
    parse_origin,
)
from tests.component.conftest import eventually, free_port
from tests.rawserver import RawServer, start_raw_server

Reply = Callable[[bytes], list[bytes] | list[bytes | asyncio.Event]]
"""Pieces to write; an Event among them makes the server wait for it before writing the next."""


@dataclass
class Seen:
    """What a raw server saw: connections accepted, requests read, connections the client closed."""

    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed_by_client: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request (head + Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return head + await reader.readexactly(length)


async def serve(reply: Reply, *, close_after: bool = False, hold: bool = False) -> tuple[RawServer, Seen]:
    """A raw server answering each request with `reply(request)` pieces, written one by one.

    `close_after` closes the connection after each answer; `hold` keeps it open after the answer
    without reading further, until the client closes it (counted in `closed_by_client`)."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.writers.append(writer)
        try:
            while True:
                request = await read_request(reader)
                seen.requests.append(request)
                for piece in reply(request):
                    if isinstance(piece, asyncio.Event):
                        await piece.wait()
                        continue
                    writer.write(piece)
                    await writer.drain()
                if close_after:
                    break
                if hold:
                    await reader.read()  # until the client closes
                    seen.closed_by_client += 1
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            seen.closed_by_client += 1
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0)
    return server, seen


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    pool = Pool(limit_per_host=4, keepalive_seconds=30)
    yield pool
    await pool.close()


def url_of(server: RawServer) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def ok(body: bytes = b"ok") -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]


async def fetch(pool: Pool, url: str, body: bytes = b"{}") -> bytes:
    response = await pool.post(url, "/chat/completions", body, {}, connect_timeout=1)
    return await response.read()


# --- framings ---------------------------------------------------------------------------------------


async def test_content_length_bodies_reuse_one_connection(pool: Pool) -> None:
    server, seen = await serve(lambda request: ok(request.rsplit(b"\r\n\r\n", 1)[1]))
    async with server:
        for i in range(3):
            response = await pool.post(url_of(server), "/echo", b"hello %d" % i, {}, connect_timeout=1)
            assert response.status == 200
            assert await response.read() == b"hello %d" % i
    assert seen.connections == 1


async def test_chunked_body_is_streamed_and_dechunked(pool: Pool) -> None:
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
              b"5\r\ndata:\r\n", b"3;ext=1\r\n 1\n\r\n", b"0\r\nX-Trailer: t\r\n\r\n"]  # fmt: skip
    server, seen = await serve(lambda request: pieces)
    async with server:
        response = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        assert response.content_type == "text/event-stream"
        assert b"".join([c async for c in response.iter_chunks()]) == b"data: 1\n"
        again = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        assert await again.read() == b"data: 1\n"
    assert seen.connections == 1


async def test_relay_hands_pieces_to_the_sink_and_pauses_while_it_drains(pool: Pool) -> None:
    """`relay` calls the sink from the protocol callback; a sink that says it is full stops the reading
    until its drain returns, and every byte still arrives, in order, on a connection that is reused."""
    events = [b"data: %d\n\n" % i for i in range(50)]
    first_seen = asyncio.Event()  # the rest is written once the sink has the first event, so the body
    # cannot arrive in one read that ends it (then nothing is left to pause for and no drain is due)
    chunks: list[bytes | asyncio.Event] = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    chunks += [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
    chunks.insert(2, first_seen)
    server, seen = await serve(lambda request: chunks)  # the second answer: the Event is set by then
    async with server:
        response = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        got: list[bytes] = []
        drains = 0

        def sink(piece: bytes) -> bool:
            got.append(piece)
            first_seen.set()
            return len(got) % 7 != 1  # "full" at the first piece and every seventh after

        async def drain() -> None:
            nonlocal drains
            drains += 1
            await asyncio.sleep(0)

        await response.relay(sink, drain)
        assert b"".join(got) == b"".join(events)
        assert drains >= 1
        again = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        assert b"".join([c async for c in again.iter_chunks()]) == b"".join(events)
    assert seen.connections == 1  # paused and resumed, then pooled: still readable


async def test_relay_hands_what_one_read_brought_to_the_sink_as_one_piece(pool: Pool) -> None:
    """Chunks that arrive together leave together (one scan, one write to the client, as nginx writes
    what one read brought with one writev): two chunks written at once reach the sink as one piece;
    good chunks ahead of broken framing in the same read still reach it, then the relay raises."""
    go, more = asyncio.Event(), asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await go.wait()
        writer.write(b"3\r\nabc\r\n3\r\ndef\r\n")  # one write: one read on loopback
        await more.wait()
        writer.write(b"3\r\nghi\r\nzz\r\n")  # a good chunk, then a chunk size that is not hex
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0)
    async with server:
        response = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)
        got: list[bytes] = []

        def sink(piece: bytes) -> bool:
            got.append(piece)
            more.set()
            return True

        relaying = asyncio.create_task(response.relay(sink, asyncio.sleep))
        await asyncio.sleep(0)  # the relay has set its sink and waits: what arrives now goes to it
        go.set()
        with pytest.raises(UpstreamProtocolError):
            await asyncio.wait_for(relaying, 5)
        assert got == [b"abcdef", b"ghi"]


async def test_relay_raises_what_the_sink_raised_and_closes(pool: Pool) -> None:
    chunks = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n", b"3\r\ndef\r\n"]
    server, seen = await serve(lambda request: chunks, hold=True)
    async with server:
        response = await pool.post(url_of(server), "/s", b"{}", {}, connect_timeout=1)

        def sink(piece: bytes) -> bool:
            raise ConnectionResetError("the client left")

        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(response.relay(sink, asyncio.sleep), 5)
        await eventually(lambda: seen.closed_by_client == 1)  # not pooled: closed


async def test_interim_100_continue_is_skipped(pool: Pool) -> None:
    server, _ = await serve(lambda request: [b"HTTP/1.1 100 Continue\r\n\r\n", *ok(b"final")])
    async with server:
        assert await fetch(pool, url_of(server)) == b"final"


async def test_close_delimited_body(pool: Pool) -> None:
    server, seen = await serve(lambda request: [b"HTTP/1.1 200 OK\r\n\r\n", b"abc", b"def"], close_after=True)
    async with server:
        assert await fetch(pool, url_of(server)) == b"abcdef"
        assert await fetch(pool, url_of(server)) == b"abcdef"
    assert seen.connections == 2  # not reusable: a new connection each time


async def test_idle_connection_closed_by_the_server_is_replaced(pool: Pool) -> None:
    server, seen = await serve(lambda request: ok(), close_after=True)  # closes after each answer
    async with server:
        for _ in range(3):
            assert await fetch(pool, url_of(server)) == b"ok"
    assert seen.connections == 3
    assert len(seen.requests) == 3  # each request written once


async def test_refused_connection_is_an_upstream_error(pool: Pool) -> None:
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.post(f"http://127.0.0.1:{free_port()}/v1", "/", b"", {}, connect_timeout=1)


# --- strict framing ------------------------------------------------------------------------------------

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
HOSTILE = {
    "chunk size not hex": (CHUNKED + b"zz\r\nok\r\n0\r\n\r\n", "chunk size"),
    "negative chunk size": (CHUNKED + b"-2\r\nok\r\n0\r\n\r\n", "chunk size"),
    "chunk size overflow": (CHUNKED + b"ffffffffffffffffff\r\nok\r\n0\r\n\r\n", "[Cc]hunk size overflow"),
    "space after chunk size": (CHUNKED + b"2 \r\nok\r\n0\r\n\r\n", "chunk size"),
    "chunk longer than its size": (CHUNKED + b"2\r\nokXX\r\n0\r\n\r\n", "after chunk data"),
    "bare LF header line": (b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok", "Missing expected CR"),
    "bare LF status line": (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "Missing expected CR"),
    "duplicate Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        "Duplicate Content-Length",
    ),
    "conflicting Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nok",
        "Duplicate Content-Length",
    ),
    "Content-Length list": (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", "Content-Length"),
    "Content-Length with Transfer-Encoding": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "Transfer-Encoding can't be present with Content-Length",
    ),
    "Transfer-Encoding other than chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "only chunked",
    ),
    "space in a header name": (b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 2\r\n\r\nok", "header token"),
    "space before the colon": (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "header field char"),
    "control byte in a value": (
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
        "header value char",
    ),
    "NUL in a value": (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "header value char"),
    "obs-fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "whitespace"),
    "not HTTP at all": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "Expected HTTP/"),
    "switching protocols": (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        "switched protocols",
    ),
    "oversized head": (
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n",
        "head exceeds",
    ),
    "head trickled past the bound": (
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 200) for i in range(400)),
        "head exceeds|more than 256 header lines",
    ),
    "too many header lines": (
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n",
        "more than 256 header lines",
    ),
}


@pytest.mark.parametrize(("answer", "error"), list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_framing_is_refused_and_the_connection_closed(
    pool: Pool, answer: bytes, error: str
) -> None:
    server, seen = await serve(lambda request: [answer], hold=True)
    async with server:
        with pytest.raises(UpstreamProtocolError, match=error):
            await fetch(pool, url_of(server))
        await eventually(lambda: seen.closed_by_client == 1, 2, "the client to close the connection")
    assert pool._idle == {} or all(not idle for idle in pool._idle.values())


async def test_body_over_the_bound_is_refused() -> None:
    pool = Pool(max_body_bytes=1000)
    big = [b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", b"x" * 5000]
    server, seen = await serve(lambda request: big, hold=True)
    async with server:
        with pytest.raises(UpstreamProtocolError, match="body exceeds 1000 bytes"):
            await fetch(pool, url_of(server))
        await eventually(lambda: seen.closed_by_client == 1, 2, "the client to close the connection")
        chunked = [CHUNKED, b"400\r\n" + b"y" * 1024 + b"\r\n", b"0\r\n\r\n"]
        server2, _ = await serve(lambda request: chunked)
        async with server2:
            with pytest.raises(UpstreamProtocolError, match="body exceeds 1000 bytes"):
                await fetch(pool, url_of(server2))
            # a streamed answer is not bounded: it is relayed as it comes
            response = await pool.post(url_of(server2), "/", b"", {}, connect_timeout=1)
            assert len(b"".join([c async for c in response.iter_chunks()])) == 1024
    await pool.close()


async def test_body_cut_short_is_an_error(pool: Pool) -> None:
    server, _ = await serve(
        lambda request: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], close_after=True
    )
    async with server:
        with pytest.raises(UpstreamError, match="closed by upstream after 3 body bytes"):
            await fetch(pool, url_of(server))


async def test_stalled_head_is_cut_by_the_callers_timeout(pool: Pool) -> None:
    """The client has no timer of its own: the proxy's per-try deadline scope covers the head read."""
    server, seen = await serve(lambda request: [b"HTTP/1.1 200 OK\r\nContent-"], hold=True)
    async with server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await fetch(pool, url_of(server))
        await eventually(lambda: seen.closed_by_client == 1, 2, "the client to close the connection")


# --- write once ------------------------------------------------------------------------------------------


async def test_a_post_the_upstream_read_is_never_sent_again(pool: Pool) -> None:
    """The upstream answers the first request, then reads the second and drops the connection: the
    client reports the failure (the proxy's retry policy decides) instead of resending it."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                request = await read_request(reader)
                seen.requests.append(request)
                if request.endswith(b'{"n": 2}'):
                    break  # read the POST, then drop it on the floor
                writer.write(ok()[0])
                await writer.drain()
        writer.close()

    server = await start_raw_server(handle, "127.0.0.1", 0)
    async with server:
        assert await fetch(pool, url_of(server), b'{"n": 1}') == b"ok"
        with pytest.raises(UpstreamError, match="closed by upstream before the response head"):
            await fetch(pool, url_of(server), b'{"n": 2}')
        # a (wrong) resend of n=2 would reach the server before this next request
        assert await fetch(pool, url_of(server), b'{"n": 3}') == b"ok"
    bodies = [r.rsplit(b"\r\n\r\n", 1)[1] for r in seen.requests]
    assert bodies.count(b'{"n": 2}') == 1


# --- pool hygiene ----------------------------------------------------------------------------------------


async def test_stray_bytes_after_an_answer_drop_the_connection(pool: Pool) -> None:
    smuggled = ok()[0] + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    answers = iter([[smuggled], ok(b"clean")])
    server, seen = await serve(lambda request: next(answers))
    async with server:
        assert await fetch(pool, url_of(server)) == b"ok"
        assert await fetch(pool, url_of(server)) == b"clean"  # not the smuggled answer
    assert seen.connections == 2


async def test_bytes_arriving_while_idle_drop_the_connection(pool: Pool) -> None:
    server, seen = await serve(lambda request: ok())
    async with server:
        assert await fetch(pool, url_of(server)) == b"ok"
        seen.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
        idle = [conn for conns in pool._idle.values() for conn in conns]
        await eventually(lambda: all(conn.closed for conn in idle), 2, "the idle connection to close")
        assert await fetch(pool, url_of(server)) == b"ok"
    assert seen.connections == 2


async def test_readable_pooled_connection_is_not_taken(pool: Pool) -> None:
    """Bytes the event loop has not delivered yet still disqualify a pooled connection (poll(2))."""
    server, seen = await serve(lambda request: ok())
    async with server:
        assert await fetch(pool, url_of(server)) == b"ok"
        (conn,) = [conn for conns in pool._idle.values() for conn in conns]
        assert conn.usable(conn.idle_since, 30)
        assert conn.transport is not None
        conn.transport.pause_reading()  # the loop stops reading: the bytes stay in the socket
        seen.writers[0].write(b"junk")
        await eventually(lambda: not conn.usable(conn.idle_since, 30), 2, "the socket to be readable")
        assert await fetch(pool, url_of(server)) == b"ok"
    assert seen.connections == 2


async def test_idle_connection_past_the_limit_is_not_reused() -> None:
    pool = Pool(keepalive_seconds=4.0)
    server, seen = await serve(lambda request: ok(), hold=False)
    async with server:
        assert await fetch(pool, url_of(server)) == b"ok"
        (conn,) = [conn for conns in pool._idle.values() for conn in conns]
        conn.idle_since -= 3.9  # younger than the limit: reused
        assert await fetch(pool, url_of(server)) == b"ok"
        assert seen.connections == 1
        (conn,) = [conn for conns in pool._idle.values() for conn in conns]
        conn.idle_since -= 4.0  # as old as the limit: closed, a new connection carries the request
        assert await fetch(pool, url_of(server)) == b"ok"
        assert seen.connections == 2
        await eventually(lambda: seen.closed_by_client == 1, 2, "the aged connection to be closed")
    await pool.close()


@pytest.mark.parametrize("answer", [[], [CHUNKED, b"5\r\nfirst\r\n"]], ids=["before the head", "mid-stream"])
async def test_cancelled_request_closes_its_connection(pool: Pool, answer: list[bytes]) -> None:
    """A client that goes away (or a deadline) cancels the task: the upstream sees its connection
    closed, whether the answer had started or not, and nothing goes back to the pool."""
    server, seen = await serve(lambda request: answer, hold=True)
    async with server:
        first_chunk = asyncio.Event()

        async def call() -> None:
            response = await pool.post(url_of(server), "/", b"{}", {}, connect_timeout=1)
            try:
                async for _ in response.iter_chunks():
                    first_chunk.set()
            finally:
                response.release()

        task = asyncio.create_task(call())
        await eventually(lambda: len(seen.requests) == 1 and (not answer or first_chunk.is_set()), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: seen.closed_by_client == 1, 0.2, "the upstream to see the close")
        assert all(not idle for idle in pool._idle.values())


async def test_cancelled_whole_body_read_closes_its_connection(pool: Pool) -> None:
    server, seen = await serve(
        lambda request: [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart"], hold=True
    )
    async with server:
        task = asyncio.create_task(fetch(pool, url_of(server)))
        await eventually(lambda: len(seen.requests) == 1, 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: seen.closed_by_client == 1, 0.2, "the upstream to see the close")


def test_origin_parsing() -> None:
    origin = parse_origin("https://api.example.com/v1/")
    assert (origin.scheme, origin.host, origin.port, origin.base_path, origin.host_header) == (
        "https", "api.example.com", 443, "/v1", "api.example.com",
    )  # fmt: skip
    assert parse_origin("http://127.0.0.1:9001/v1").host_header == "127.0.0.1:9001"
    assert parse_origin("http://[::1]:9001/v1").host_header == "[::1]:9001"
    with pytest.raises(ValueError, match="not an http"):
        parse_origin("ftp://x/v1")
