"""Per-namespace work queue: one run at a time per namespace, the latest request wins, failures back off.

The reconciler and the syncer both work namespace by namespace. Requests that arrive during a run
collapse into one more run; a run that fails (or asks to be retried) runs again after an exponential
backoff, unless a new request comes first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .kube import TransientApiError

log = logging.getLogger(__name__)

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0


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
        """Every namespace ever scheduled."""
        return list(self._workers)

    async def close(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _run(self, namespace: str) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        while self._dirty.get(namespace):
            if self._debounce:
                await asyncio.sleep(self._debounce)
            self._dirty[namespace] = False
            try:
                again = await self._work(namespace)
            except TransientApiError as exc:
                log.warning(
                    "%s %s: API server unavailable (%s); retrying in %.1fs",
                    self._name,
                    namespace,
                    exc,
                    backoff,
                )
                again = True
            except Exception:
                log.exception("%s %s failed; retrying in %.1fs", self._name, namespace, backoff)
                again = True
            if not again:
                backoff = INITIAL_BACKOFF_SECONDS
            elif not self._dirty.get(namespace):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._dirty[namespace] = True
