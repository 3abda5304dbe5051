"""A raw asyncio TCP server for tests that closes its open connections when the block ends.

Python 3.12's `Server.wait_closed()` (which `async with server:` awaits) waits until every accepted
connection has finished; a test's pooled client keeps its keep-alive connection open past the block, so
the exit would hang. 3.13 has `Server.close_clients()`; this does the same on 3.12: the handler's
transports are tracked and aborted on exit, as a real upstream going away would do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """`asyncio.Server` for `async with`, aborting the connections still open when the block ends."""

    def __init__(self, server: asyncio.Server, writers: set[asyncio.StreamWriter]) -> None:
        self._server = server
        self._writers = writers

    @property
    def sockets(self) -> tuple[Any, ...]:
        return self._server.sockets

    async def __aenter__(self) -> RawServer:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()


async def start_raw_server(handle: Handler, host: str, port: int, **kwargs: Any) -> RawServer:
    writers: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await handle(reader, writer)
        finally:
            writers.discard(writer)

    return RawServer(await asyncio.start_server(tracked, host, port, **kwargs), writers)
