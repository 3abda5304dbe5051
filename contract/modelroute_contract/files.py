"""Noticing that a mounted file changed, the one way both sides do it.

Kubernetes rewrites mounted ConfigMaps and Secrets by swapping a `..data` symlink; `os.stat` follows it,
so a new version shows as a new (modification time, size, inode). The sidecar's config file, upstream
credentials, admin token and upstream TLS material, and the operator's webhook serving certificate are
all re-read when their stamp changes; `FileCache` is the one throttled reloader the sidecar's request
path uses for them. Standard library only (like the whole contract package).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FileStamp = tuple[int, int, int]
"""(mtime in ns, size, inode) of a file, as `stat` follows symlinks."""


def file_stamp(path: str | os.PathLike[str] | Path) -> FileStamp:
    """The file's stamp; equal stamps mean an unchanged file. Raises OSError when it cannot be read."""
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


Clock = Callable[[], float]
"""Monotonic seconds (`time.monotonic`); tests pass their own to step past a recheck interval."""


@dataclass(slots=True)
class _Entry[T]:
    value: T
    stamps: tuple[FileStamp, ...]
    checked_at: float


class FileCache[K, T]:
    """Values loaded from mounted files, one per key, looked at again at most every `recheck_seconds`.

    The one reloader behind every file the sidecar re-reads on its request path (upstream keys, the client
    key table, upstream TLS material, the admin token): a request does not stat a file, a rotated Secret
    is picked up within the interval, and an unchanged file is not parsed again. Not thread-safe (one
    event loop owns it).
    """

    def __init__(self, recheck_seconds: float, clock: Clock = time.monotonic) -> None:
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._entries: dict[K, _Entry[T]] = {}
        self._failures: dict[K, tuple[float, Exception]] = {}

    def fresh(self, key: K) -> T | None:
        """The value of `key` when it was looked at within the interval, else None (no file access)."""
        entry = self._entries.get(key)
        if entry is not None and self.clock() - entry.checked_at < self.recheck_seconds:
            return entry.value
        return None

    def get(
        self, key: K, stamps: Callable[[], tuple[FileStamp, ...]], load: Callable[[], T]
    ) -> T:
        """The value of `key`: cached within the interval; past it, `stamps()` of its files are compared
        with those of the cached value and `load()` runs when they differ (or nothing is cached).

        Errors of `stamps` and `load` propagate, and the same error is raised again until the interval
        has passed: a broken or missing file is looked at once per interval, not on every call, and never
        answered with the value it replaced (callers that want the last good value keep it themselves).
        """
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.checked_at < self.recheck_seconds:
            return entry.value
        failure = self._failures.get(key)
        if failure is not None and now - failure[0] < self.recheck_seconds:
            raise failure[1].with_traceback(None)  # the same error, without piling up frames
        try:
            current = stamps()
            if entry is None or entry.stamps != current:
                entry = self._entries[key] = _Entry(load(), current, now)
        except Exception as exc:
            self._failures[key] = (now, exc)
            raise
        self._failures.pop(key, None)
        entry.checked_at = now
        return entry.value

    def forget(self, key: K) -> None:
        """Drop `key` (its settings changed: the next `get` loads it whatever the stamps say)."""
        self._entries.pop(key, None)
        self._failures.pop(key, None)
