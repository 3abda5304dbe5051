"""The JSON-lines audit log: one line per request saying what was decided, why, and how it ended.

Logging a request costs the event loop an encode (orjson, ~1.5 us for a typical record against ~15 us
with `json`) and an append under an uncontended lock; never a syscall. A writer thread drains the
queue a few times a second (sooner once 64 KiB are queued) with blocking writes, so a slow disk or a stdout
pipe nobody reads stalls the thread, never the loop. The queue is bounded in bytes: when it is full
new lines are dropped and counted (`dropped`, exported as `modelroute_audit_lines_dropped_total`),
never buffered without bound. Closing flushes what is queued, waiting at most `CLOSE_SECONDS`.

Prompt text is left out unless explicitly enabled: the log is for explaining routing, and prompts may
hold exactly the data residency protects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import stat
import sys
import threading
import time
from typing import Any

import orjson

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25
MAX_QUEUED_BYTES = 8 * 1024 * 1024
"""Audit bytes waiting for the writer at most; lines beyond are dropped (and counted)."""
WAKE_BYTES = 64 * 1024
"""Queued audit bytes that wake the writer before its tick. Small batches keep the process small: at
thousands of requests a second a quarter-second tick queued megabytes of ~1 KiB lines, and the C heap
they were allocated from stayed resident after they were written (+7 MiB RSS measured after a load
phase, 1 worker)."""
CLOSE_SECONDS = 5.0
"""How long closing waits for the writer to flush (a destination that blocks forever must not hang a
shutdown)."""
PIPE_ATOMIC_BYTES = select.PIPE_BUF
"""Writes up to this size to a pipe are atomic: workers sharing stdout never interleave within a line."""


class AuditLog:
    """Writes audit records; `open`/`close` bracket its life (the app's cleanup context does it).

    Lines are written whole with O_APPEND, so several worker processes can share one file or one
    stdout without tearing each other's lines.
    """

    def __init__(
        self, destination: str, *, include_prompts: bool = False, max_queued_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self.destination = destination
        self.include_prompts = include_prompts
        self.max_queued_bytes = max_queued_bytes
        self.dropped = 0
        """Lines dropped because the queue was full (updated on the event loop's thread)."""
        self.failed = 0
        """Lines lost to failed writes, a full disk say (updated by the writer thread)."""
        self._fd = -1
        self._owned = False
        self._regular = False
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._queued = 0
        self._wake = threading.Event()
        self._waking = False
        """The writer was woken for a batch and has not taken it yet (one wake per batch)."""
        self._idle = False
        """The writer's last drain found nothing: it sleeps until a line comes (the first one wakes it)
        instead of ticking 4 times a second in an idle pod."""
        self._stopping = False
        self._writer: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """False when no destination is configured."""
        return bool(self.destination)

    def open(self) -> None:
        """Open the destination and start the writer thread."""
        if not self.destination:
            return
        if self.destination == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._owned = True
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._stopping = False
        self._writer = threading.Thread(target=self._write_forever, name="audit-writer", daemon=True)
        self._writer.start()

    async def close(self) -> None:
        """Flush what is queued (waiting at most `CLOSE_SECONDS`, off the loop) and close."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._stopping = True
            self._wake.set()
            await asyncio.get_running_loop().run_in_executor(None, writer.join, CLOSE_SECONDS)
            if writer.is_alive():
                # the destination blocks: leave the descriptor open, the thread may still write to it
                # (a closed and reused descriptor would get audit lines meant for this one)
                log.error(
                    "audit log writer did not finish within %ss, %d lines unwritten",
                    CLOSE_SECONDS,
                    len(self._pending),
                )
                self._fd = -1
                return
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (a JSON object on one line); dropped and counted when the queue is full."""
        if self._fd < 0:
            return
        record["time"] = round(time.time(), 6)
        try:
            line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:
            # what orjson refuses but a request can carry (a lone surrogate in a header, an integer
            # over 64 bits in a usage figure): `json` escapes it, so every request still gets its line
            line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            if self._queued + len(line) > self.max_queued_bytes:
                self.dropped += 1
                return
            self._pending.append(line)
            self._queued += len(line)
            wake = (self._queued > WAKE_BYTES or self._idle) and not self._waking
            if wake:
                self._waking = True
                self._idle = False
        if wake:  # a batch is ready: write it now, not at the next tick
            self._wake.set()

    def _write_forever(self) -> None:
        """The writer thread: drain every `FLUSH_SECONDS` or when woken, until closed and drained; with
        nothing written since its last drain it waits for a line without a tick."""
        while True:
            self._wake.wait(None if self._idle else FLUSH_SECONDS)  # write() clears _idle before set()
            self._wake.clear()
            stopping = self._stopping
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        """Write queued lines: one write for a file, whole lines in pipe-atomic chunks otherwise."""
        with self._lock:
            lines, self._pending, self._queued = self._pending, [], 0
            self._waking = False
            self._idle = not lines
        if not lines:
            return
        try:
            if self._regular:
                _write_all(self._fd, b"".join(lines))
                return
            chunk: list[bytes] = []
            size = 0
            for line in lines:
                if chunk and size + len(line) > PIPE_ATOMIC_BYTES:
                    _write_all(self._fd, b"".join(chunk))
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            if chunk:
                _write_all(self._fd, b"".join(chunk))
        except OSError as exc:  # a full disk must not fail requests; the lines are lost, say so
            self.failed += len(lines)
            log.error("audit log write failed, %d lines lost: %s", len(lines), exc)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
