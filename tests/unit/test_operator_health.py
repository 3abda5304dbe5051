"""The operator's health server tells the truth: /healthz fails while the main event loop is wedged and
recovers when it runs again, /readyz waits for startup, and /metrics carries the operator's own
figures. The server answers from its own thread, so it can say the loop is stuck."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

from tests.kube_harness import wait_for

from modelroute_operator.clients import metrics
from modelroute_operator.runtime.health import MAX_CONNECTIONS, HealthServer, Heartbeat


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def test_a_wedged_loop_turns_unhealthy_and_recovers() -> None:
    heartbeat = Heartbeat(wedged_seconds=1.5)  # beats every 1 s: a healthy loop is never that late
    beating = asyncio.get_running_loop().create_task(heartbeat.beat())
    server = HealthServer(heartbeat, 0, "127.0.0.1")
    server.start()
    try:
        assert (await asyncio.to_thread(get, server.port, "/healthz"))[0] == 200
        assert await asyncio.to_thread(get, server.port, "/readyz") == (
            503,
            json.dumps({"status": "starting"}),
        )
        heartbeat.ready = True
        assert (await asyncio.to_thread(get, server.port, "/readyz"))[0] == 200

        seen: list[tuple[int, str]] = []
        unhealthy = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not unhealthy.is_set():
                answer = get(server.port, "/healthz")
                if answer[0] == 503:
                    seen.extend([answer, get(server.port, "/readyz")])
                    unhealthy.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        unhealthy.wait(10)  # on the loop's own thread: the loop is wedged until the watcher saw the 503
        watcher.join()
        assert seen and "event loop wedged: no heartbeat for" in seen[0][1]
        assert seen[1][0] == 503, "not ready while wedged"

        deadline = time.monotonic() + 10
        while (await asyncio.to_thread(get, server.port, "/healthz"))[0] != 200:
            assert time.monotonic() < deadline, "healthy again once the loop runs"
            await asyncio.sleep(0.05)
    finally:
        beating.cancel()
        server.stop()


async def test_metrics_carry_the_operators_own_figures() -> None:
    metrics.RECONCILE_PASSES.labels("ok").inc()
    metrics.LEADER.set(1)
    server = HealthServer(Heartbeat(), 0, "127.0.0.1")
    server.start()
    try:
        status, text = await asyncio.to_thread(get, server.port, "/metrics")
    finally:
        server.stop()
    assert status == 200
    for name in (
        'modelroute_operator_reconcile_passes_total{outcome="ok"}',
        "modelroute_operator_reconcile_duration_seconds_bucket",
        "# TYPE modelroute_operator_reconcile_errors_total counter",
        "# TYPE modelroute_operator_config_pushes_total counter",
        "# TYPE modelroute_operator_config_acks_total counter",
        "# TYPE modelroute_operator_probes_total counter",
        "modelroute_operator_leader 1.0",
        "# TYPE modelroute_operator_canary_transitions_total counter",
        "# TYPE modelroute_operator_event_loop_lag_seconds gauge",
    ):
        assert name in text, name


def test_silent_connections_are_bounded_and_dropped() -> None:
    """A client holding connections open without sending a request neither starts threads without bound
    nor keeps the probe out for longer than the request timeout."""
    # 3 s: long enough that all the slots fill on a loaded machine before the first silent one is dropped
    server = HealthServer(Heartbeat(), 0, "127.0.0.1", request_seconds=3.0)
    server.start()
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS + 8)]
    try:
        # the cap is reached (every slot holds a silent connection) and never passed
        wait_for(lambda: threading.active_count() - threads_before >= MAX_CONNECTIONS, "slots taken", 10)
        for _ in range(50):
            assert threading.active_count() - threads_before <= MAX_CONNECTIONS
            time.sleep(0.002)
        # every silent connection is closed by the server once its request timeout passes
        for conn in idle:
            conn.settimeout(15)
            with contextlib.suppress(ConnectionResetError):  # refused at accept (over the cap): as good
                assert conn.recv(1) == b""
        status, _ = wait_for(lambda: (r := get(server.port, "/healthz"))[0] == 200 and r, "/healthz again", 10)
        assert status == 200
    finally:
        for conn in idle:
            conn.close()
        server.stop()
