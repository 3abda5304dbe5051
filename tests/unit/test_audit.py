"""The audit log (and the sidecar's own log) never block the event loop: a destination that stops
reading fills a bounded queue, after which lines are dropped and counted; what was queued is flushed
on close."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

from modelroute_sidecar.audit import AuditLog
from modelroute_sidecar.main import LOG_QUEUE_RECORDS, configure_logging
from modelroute_sidecar.metrics import Metrics

RECORD = {"requestId": "r", "route": "chat", "padding": "x" * 200}


async def test_a_destination_that_blocks_fills_the_queue_then_lines_are_dropped_and_counted() -> None:
    read_end, write_end = os.pipe()  # nobody reads: once the pipe buffer is full the writer blocks
    audit = AuditLog(f"/dev/fd/{write_end}", max_queued_bytes=16 * 1024)
    audit.open()
    try:
        total = 5000  # ~1.2 MB of lines: far more than the pipe buffer plus the queue
        # the event loop keeps running while the writer is stuck: a ticker task advances meanwhile
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.get_running_loop().create_task(tick())
        for index in range(total):
            audit.write({**RECORD, "n": index})
            if index % 100 == 0:
                await asyncio.sleep(0)
        ticker.cancel()
        assert ticks >= total // 100
        assert audit.dropped > 0
        assert audit._queued <= audit.max_queued_bytes  # bounded, whatever the writer's state

        metrics = Metrics()
        metrics.audit_lines_dropped.read = lambda: {("queue-full",): audit.dropped}
        text = metrics.render().decode()
        assert f'modelroute_audit_lines_dropped_total{{reason="queue-full"}} {float(audit.dropped)}' in text

        received = bytearray()

        def drain() -> None:
            while chunk := os.read(read_end, 1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        await audit.close()  # flushes what is queued once the destination reads again
    finally:
        os.close(write_end)
    reader.join(timeout=10)
    os.close(read_end)
    lines = [json.loads(line) for line in received.splitlines()]
    assert len(lines) == total - audit.dropped
    numbers = [line["n"] for line in lines]
    assert numbers == sorted(numbers)  # whole lines, in order, none torn


async def test_lines_are_written_off_the_loop_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit.open()
    for index in range(10):
        audit.write({**RECORD, "n": index})
    deadline = time.monotonic() + 5
    while len(path.read_bytes().splitlines()) < 10:  # the writer's periodic drain, no close needed
        assert time.monotonic() < deadline, "audit lines never written"
        await asyncio.sleep(0.02)
    audit.write({**RECORD, "n": 10})
    await audit.close()  # the last line is flushed, not lost
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == list(range(11))
    assert audit.dropped == 0 and audit.failed == 0


def test_log_lines_go_through_a_bounded_queue_to_a_writer_thread() -> None:
    """The sidecar's own log (stderr) is written by a thread too: with a stderr nobody reads, logging
    on the event loop's thread still returns at once and drops past the queue's bound."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    try:
        handler = configure_logging("info", stream)
        started = time.monotonic()
        for index in range(LOG_QUEUE_RECORDS + 2000):
            logging.getLogger("modelroute_sidecar.test").warning("line %d %s", index, "x" * 100)
        assert handler.dropped > 0
        assert time.monotonic() - started < 30  # did not wait for the pipe (it would wait forever)
        received = bytearray()

        def drain() -> None:
            while chunk := os.read(read_end, 1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        handler.stop_writer()
        stream.close()
        reader.join(10)
        lines = received.splitlines()
        assert len(lines) == LOG_QUEUE_RECORDS + 2000 - handler.dropped
        assert lines[0].endswith(b"line 0 " + b"x" * 100)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        os.close(read_end)


async def test_an_idle_writer_sleeps_without_a_tick_and_the_next_line_wakes_it(tmp_path: Path) -> None:
    # An idle pod's writer used to wake 4 times a second for nothing; now it waits for a line. If the
    # first line after the idle drain did not wake it, that line would never be written.
    waits: list[float | None] = []

    class Recorded(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return super().wait(timeout)

    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    audit._wake = Recorded()  # the writer's wake, seen from outside
    audit.open()

    async def written(count: int, what: str) -> None:
        deadline = time.monotonic() + 10
        while len(path.read_bytes().splitlines()) < count:
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    audit.write({**RECORD, "n": 0})
    await written(1, "the first line was never written")
    deadline = time.monotonic() + 10
    while None not in waits:  # a drain found nothing: it waits without a timeout now
        assert time.monotonic() < deadline, f"the writer kept ticking: {waits[-5:]}"
        await asyncio.sleep(0.02)
    audit.write({**RECORD, "n": 1})
    await written(2, "the line after the idle drain did not wake the writer")
    await audit.close()
    assert [json.loads(line)["n"] for line in path.read_bytes().splitlines()] == [0, 1]
