"""The proxy in front of misbehaving upstreams written on raw sockets: a replica that reads the POST and
drops the connection gets it exactly once (the retry goes to the next choice, counted as a retry), a
replica that breaks the framing is a failed attempt that fails over; a stream in compact JSON (the relay's
cheap path) comes out in whole events however it is cut, gets its usage counted, and ends with an error
event when the upstream cuts it mid-event; a client that leaves mid-stream closes the upstream stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from modelroute_contract import RouterConfig
from modelroute_sidecar.sse import MAX_HELD_BYTES
from tests.component.conftest import SidecarFactory, build_config, eventually
from tests.component.test_httpclient import read_request
from tests.component.test_server_attacks import CHAT, gone_outcomes, port_of, post
from tests.component.test_streams import raw_stream
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


@dataclass
class RawUpstream:
    """A replica on a raw socket: records every request, answers with `answer` (None: drop the line)."""

    answer: Callable[[bytes], bytes | None]
    port: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


@contextlib.asynccontextmanager
async def raw_upstream(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream(answer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                request = await read_request(reader)
                upstream.requests.append(request)
                reply = answer(request)
                if reply is None:
                    break  # read the POST, then drop the connection without a word
                writer.write(reply)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def config_with(upstreams: dict[str, FakeUpstream], **urls: str) -> RouterConfig:
    return build_config({**{n: f.url for n, f in upstreams.items()}, **urls})


async def test_a_post_read_then_dropped_is_seen_once_and_retried_on_the_next_choice(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    async with raw_upstream(lambda request: None) as dropper:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": dropper.url}))
        raw = await running.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
        assert raw.headers["x-modelroute-replica"] == "eu-2"
        assert raw.headers["x-modelroute-attempts"] == "2"
        assert len(dropper.requests) == 1  # never resent to the replica that may have processed it
        assert len(upstreams["eu-2"].requests) == 1
        retries = running.sidecar.metrics.retries
        assert retries.value("llama", "connect") == 1  # one retry, to the next choice


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ],
    ids=["bad chunk size", "bare LF header", "conflicting Content-Length", "CL with TE"],
)
async def test_broken_framing_fails_over(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], reply: bytes
) -> None:
    async with raw_upstream(lambda request: reply) as liar:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": liar.url}))
        raw = await running.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
        assert raw.parse().choices[0].message.content == "Hello from eu-2"
        assert len(liar.requests) == 1
        retries = running.sidecar.metrics.retries
        assert retries.value("llama", "upstream-protocol") == 1


# --- streams from a raw upstream: the relay's cheap path (compact JSON, as OpenAI and vLLM write) -----


def sse_event(payload: object) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def delta(content: str, finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice], "usage": None}


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
STREAM_USAGE = {"id": "c", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4}}


@contextlib.asynccontextmanager
async def stream_upstream(body: bytes) -> AsyncIterator[RawUpstream]:
    """A replica that answers every request with the chunked stream `body` in one write, then closes
    the connection (a body without its last chunk is an upstream cut mid-stream)."""
    upstream = RawUpstream(lambda request: body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            upstream.requests.append(await read_request(reader))
            writer.write(STREAM_HEAD + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


async def test_events_and_done_split_across_chunks_come_out_whole_and_usage_is_counted(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    first, finish, done = sse_event(delta("Hel")), sse_event(delta("lo", "stop")), sse_event(b"[DONE]")
    body = b"".join(
        [
            http_chunk(first[:9]), http_chunk(first[9:]),  # one event in two pieces
            http_chunk(sse_event(delta(" there"))),
            http_chunk(finish), http_chunk(sse_event(STREAM_USAGE)),  # the usage in the last event
            http_chunk(done[:10]), http_chunk(done[10:]),  # [DONE] cut in two
            b"0\r\n\r\n",
        ]
    )  # fmt: skip
    async with stream_upstream(body) as upstream:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": upstream.url}))
        status, events = await raw_stream(running)
        assert status == 200
        assert events == [first[6:-2], sse_event(delta(" there"))[6:-2], finish[6:-2], b"[DONE]"]
        assert b'"include_usage":true' in upstream.requests[0]  # asked for, and hidden from the client
        assert running.sidecar.metrics.tokens.value("llama", "in") == 11
        assert running.sidecar.metrics.tokens.value("llama", "out") == 4


async def test_a_stream_cut_mid_event_relays_the_whole_events_then_an_error(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    half = sse_event(delta("never seen"))[:30]
    body = http_chunk(sse_event(delta("Hello"))) + http_chunk(half)  # then the connection is cut
    async with stream_upstream(body) as upstream:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": upstream.url}))
        status, events = await raw_stream(running)
        assert status == 200
        assert json.loads(events[0])["choices"][0]["delta"]["content"] == "Hello"
        assert len(events) == 2 and b"never" not in b"".join(events)  # no half event glued to the error
        assert json.loads(events[1])["error"]["code"] == "stream_broken"
        assert len(upstreams["eu-2"].requests) == 0  # the stream had started: no failover


async def test_an_oversized_event_is_passed_on_in_pieces_and_the_stream_still_ends_well(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    big = sse_event(delta("x" * (MAX_HELD_BYTES + 1000)))
    pieces = [big[i : i + 16384] for i in range(0, len(big), 16384)]
    body = http_chunk(sse_event(delta("a"))) + b"".join(http_chunk(p) for p in pieces)
    body += http_chunk(sse_event(delta("", "stop"))) + http_chunk(sse_event(b"[DONE]")) + b"0\r\n\r\n"
    async with stream_upstream(body) as upstream:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": upstream.url}))
        status, events = await raw_stream(running)
        assert status == 200 and events[-1] == b"[DONE]"
        assert json.loads(events[1])["choices"][0]["delta"]["content"] == "x" * (MAX_HELD_BYTES + 1000)


async def test_a_client_that_leaves_mid_stream_closes_the_upstream_stream(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    """The upstream sends one event and waits (a slow generation); the client reads it and leaves: the
    upstream sees its connection closed, and the exchange is counted as client_closed."""
    upstream = RawUpstream(lambda request: None)
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            upstream.requests.append(await read_request(reader))
            writer.write(STREAM_HEAD + http_chunk(sse_event(delta("Hello"))))
            await writer.drain()
            await reader.read()  # b"" once the sidecar closes the connection
        closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        running = await start_sidecar(config_with(upstreams, **{"eu-1": upstream.url}))
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(running))
        writer.write(post(CHAT.replace(b'"hi"}]', b'"hi"}], "stream": true')))
        async with asyncio.timeout(5):
            await reader.readuntil(b'"Hello"')  # the first event got through
        writer.close()
        async with asyncio.timeout(2):
            await closed.wait()
        await eventually(
            lambda: gone_outcomes(running), within=2, what="the exchange counted as client_closed"
        )
        assert len(upstream.requests) == 1 and upstreams["eu-2"].requests == []
