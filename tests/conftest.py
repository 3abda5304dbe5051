"""Session fixtures shared by the integration and e2e suites: one real kube-apiserver, CRDs installed;
and a hang diagnostic: shortly before pytest-timeout fails a test, every asyncio task's stack is printed
(pytest-timeout only shows threads, which for an async test all sit in `select`)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube_harness import REPO, ControlPlane, Kubectl, running_control_plane, wait_for


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl(plane: ControlPlane) -> Kubectl:
    kc = Kubectl(plane)
    kc.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kc.run("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    # Discovery of freshly established CRDs can lag a moment behind the condition.
    wait_for(lambda: kc.run("get", "modelroute", "-A", check=False).returncode == 0, "CRD discovery")
    return kc


TASK_DUMP_LEAD_SECONDS = 10.0
"""How long before the timeout the asyncio tasks are dumped (the loop must still be alive to do it)."""

_session_loops: list[asyncio.AbstractEventLoop] = []
_DUMP_TIMER = pytest.StashKey[threading.Timer]()


@pytest.fixture(scope="session", autouse=True)
async def _remember_session_loop() -> None:
    _session_loops.append(asyncio.get_running_loop())


def _print_tasks() -> None:
    print(f"--- asyncio tasks before the timeout ({len(asyncio.all_tasks())}) ---", file=sys.stderr)
    for task in asyncio.all_tasks():
        print(f"{task!r}", file=sys.stderr)
        # Task.print_stack shows only the task's own frame; follow what each coroutine awaits instead.
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                print(
                    f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=sys.stderr
                )
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)


def _dump_tasks_soon() -> None:
    for loop in _session_loops:
        if loop.is_running():
            loop.call_soon_threadsafe(_print_tasks)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Arm the task dump; returning None lets pytest-timeout arm its own timer as usual."""
    if settings.timeout and settings.timeout > 2 * TASK_DUMP_LEAD_SECONDS:
        timer = threading.Timer(settings.timeout - TASK_DUMP_LEAD_SECONDS, _dump_tasks_soon)
        timer.daemon = True
        timer.start()
        item.stash[_DUMP_TIMER] = timer


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_DUMP_TIMER, None)
    if timer is not None:
        timer.cancel()
