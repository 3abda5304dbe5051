"""Fire-and-forget tasks are held until they end, and an exception that ends one is logged, not lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from modelroute_operator.runtime.monitor import spawn
from modelroute_sidecar.state import report_failure


async def broken() -> None:
    raise RuntimeError("a bug in a background task")


async def test_the_operator_holds_spawned_tasks_and_logs_their_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    with caplog.at_level(logging.ERROR):
        spawn(tasks, broken(), "probe:ns/e")
        assert len(tasks) == 1
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    assert not tasks
    assert "background task probe:ns/e failed" in caplog.text and "a bug in a background task" in caplog.text


async def test_a_sidecar_background_task_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.get_running_loop().create_task(broken(), name="config-file-watch")
    task.add_done_callback(report_failure)
    cancelled = asyncio.get_running_loop().create_task(asyncio.sleep(10), name="quiet")
    cancelled.add_done_callback(report_failure)
    cancelled.cancel()
    with caplog.at_level(logging.ERROR):
        await asyncio.gather(task, cancelled, return_exceptions=True)
        await asyncio.sleep(0)
    assert "background task config-file-watch failed" in caplog.text
    assert "quiet" not in caplog.text  # a cancelled task is no failure
