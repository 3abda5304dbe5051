"""Per-namespace work queue: one run at a time per namespace, the latest request wins, failures back off.

The reconciler and the syncer both work namespace by namespace. Requests that arrive during a run
collapse into one more run; a run that fails (or asks to be retried) runs again after an exponential
backoff, unless a new request comes first. A run that failed because the API server was away waits at
most `MAX_API_RETRY_SECONDS`, so the queue is back within a second of the API server answering; a run
that asks to be retried (a lagging sidecar) backs off further. A worker goes away when its namespace has
nothing left to do, so a namespace that no longer exists costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from modelroute_operator.clients.kube import TransientApiError

log = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_API_RETRY_SECONDS = 1.0


class NamespaceQueue:
    """Runs `work(namespace)` on request; `work` returns True when it wants to run again later."""

    def __init__(self, name: str, work: Callable[[str], Awaitable[bool]], debounce_seconds: float = 0.0):
        self._name = name
        self._work = work
        self._debounce = debounce_seconds
        self._dirty: dict[str, bool] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    def schedule(self, namespace: str) -> None:
        """Ask for a run over `namespace`; returns at once."""
        self._dirty[namespace] = True
        worker = self._workers.get(namespace)
        if worker is None or worker.done():
            self._workers[namespace] = asyncio.get_running_loop().create_task(
                self._run(namespace), name=f"{self._name}:{namespace}"
            )

    def namespaces(self) -> list[str]:
        """The namespaces with a run pending, running or waiting to be retried."""
        return list(self._workers)

    async def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _run(self, namespace: str) -> None:
        try:
            await self._loop(namespace)
        finally:
            # Only this worker's own entry: a schedule() after it ended may have started a new one.
            if self._workers.get(namespace) is asyncio.current_task():
                del self._workers[namespace]
                if not self._dirty.get(namespace):
                    self._dirty.pop(namespace, None)

    async def _loop(self, namespace: str) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        while self._dirty.get(namespace):
            if self._debounce:
                await asyncio.sleep(self._debounce)
            self._dirty[namespace] = False
            delay = backoff
            try:
                again = await self._work(namespace)
            except TransientApiError as exc:
                delay = min(backoff, MAX_API_RETRY_SECONDS)
                log.warning(
                    "%s %s: API server unavailable (%s); retrying in %.1fs", self._name, namespace, exc, delay
                )
                again = True
            except Exception:
                log.exception("%s %s failed; retrying in %.1fs", self._name, namespace, backoff)
                again = True
            if not again:
                backoff = INITIAL_BACKOFF_SECONDS
            elif not self._dirty.get(namespace):
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._dirty[namespace] = True
