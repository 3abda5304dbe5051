"""The proxy in front of misbehaving upstreams written on raw sockets: a replica that reads the POST and
drops the connection gets it exactly once (the retry goes to the next choice, counted as a retry), a
replica that breaks the framing is a failed attempt that fails over."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from modelroute_contract import RouterConfig
from tests.component.conftest import SidecarFactory, build_config
from tests.component.test_httpclient import read_request
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
