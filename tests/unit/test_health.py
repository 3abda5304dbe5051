"""Active health: hysteresis of probe results into replica health, the probe schedule across restarts,
and the probe itself against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from modelroute_operator.clients.probe import probe
from modelroute_operator.logic.health import Transition, due, observe
from modelroute_operator.logic.resources import HealthCheck, ReplicaHealth, ReplicaStatus

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
U, H, X = ReplicaHealth.UNKNOWN, ReplicaHealth.HEALTHY, ReplicaHealth.UNHEALTHY


def check(healthy: int = 2, unhealthy: int = 3, **extra: Any) -> HealthCheck:
    return HealthCheck(healthy_threshold=healthy, unhealthy_threshold=unhealthy, **extra)


def replica(health: ReplicaHealth = U, **extra: Any) -> ReplicaStatus:
    return ReplicaStatus(name="r1", region="eu-west-1", health=health, **extra)


def run(
    start: ReplicaStatus, results: str, hc: HealthCheck, roundtrip: bool = False
) -> tuple[ReplicaStatus, list[tuple[int, Transition]]]:
    """Feed probe results ('+' ok, '-' failed) one per 10s; return the last status and the transitions
    with the index of the probe that caused each."""
    status, transitions = start, []
    for i, result in enumerate(results):
        ok = result == "+"
        status, transition = observe(
            status, ok, None if ok else f"HTTP 503 #{i}", hc, T0 + timedelta(seconds=10 * i)
        )
        if transition:
            transitions.append((i, transition))
        if roundtrip:  # an operator restart between every probe: all state comes back from status
            status = ReplicaStatus.model_validate(status.model_dump(by_alias=True, mode="json"))
    return status, transitions


# ------------------------------------------------------------------------------------------- observe


@dataclass(frozen=True)
class Case:
    name: str
    start: ReplicaHealth
    results: str
    healthy: int
    unhealthy: int
    end: ReplicaHealth
    changes: Sequence[tuple[int, ReplicaHealth, ReplicaHealth]]
    """(probe index, before, after) of each transition."""


CASES = [
    Case("new replica trusted on first success", U, "+", 2, 3, H, [(0, U, H)]),
    Case("new replica, failures below threshold", U, "--", 2, 3, U, []),
    Case("new replica drained at threshold", U, "---", 2, 3, X, [(2, U, X)]),
    Case("healthy stays healthy", H, "++++", 2, 3, H, []),
    Case("healthy, failures below threshold", H, "--", 2, 3, H, []),
    Case("healthy drained at threshold", H, "---", 2, 3, X, [(2, H, X)]),
    Case("healthy flapping does not drain", H, "--+--+--+", 2, 3, H, []),
    Case("unhealthy needs healthy threshold", U, "---+", 2, 3, X, [(2, U, X)]),
    Case("unhealthy recovers at threshold", X, "++", 2, 3, H, [(1, X, H)]),
    Case("unhealthy flapping does not recover", X, "+-+-+-", 2, 3, X, []),
    Case("a failure resets the success streak", X, "+-++", 2, 3, H, [(3, X, H)]),
    Case("thresholds of one switch at once", H, "-+-", 1, 1, X, [(0, H, X), (1, X, H), (2, H, X)]),
    Case("full cycle", U, "+---++", 2, 3, H, [(0, U, H), (3, H, X), (5, X, H)]),
    Case("high thresholds", H, "----+-----", 5, 5, X, [(9, H, X)]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("roundtrip", [False, True], ids=["in-memory", "restart-each-probe"])
def test_hysteresis(case: Case, roundtrip: bool) -> None:
    status, transitions = run(
        replica(case.start), case.results, check(case.healthy, case.unhealthy), roundtrip
    )
    assert status.health == case.end
    assert [(i, t.before, t.after) for i, t in transitions] == list(case.changes)
    # The streak is the run of equal results at the end, capped at its threshold.
    tail = len(case.results) - len(case.results.rstrip(case.results[-1]))
    assert (status.consecutive_successes, status.consecutive_failures) == (
        (min(tail, case.healthy), 0) if case.results[-1] == "+" else (0, min(tail, case.unhealthy))
    )


def test_a_steady_state_changes_nothing_but_the_probe_time() -> None:
    hc = check(2, 3)
    status, _ = run(replica(H), "++++", hc, False)
    again, transition = observe(status, True, None, hc, T0 + timedelta(minutes=5))
    assert transition is None
    assert again.model_copy(update={"last_probe_time": None}) == status.model_copy(update={"last_probe_time": None})


def test_since_moves_only_on_transitions() -> None:
    hc = check()
    status, _ = observe(replica(H, since=T0), False, "HTTP 503", hc, T0 + timedelta(seconds=10))
    assert status.since == T0
    status, _ = observe(status, False, "HTTP 503", hc, T0 + timedelta(seconds=20))
    status, transition = observe(status, False, "HTTP 503", hc, T0 + timedelta(seconds=30))
    assert transition is not None and status.since == T0 + timedelta(seconds=30)
    assert status.last_probe_time == T0 + timedelta(seconds=30)


def test_last_error_kept_after_recovery_and_current_only_while_failing() -> None:
    hc = check(healthy=1, unhealthy=1)
    status, _ = observe(replica(H), False, "connection refused", hc, T0)
    assert (status.last_error, status.consecutive_failures) == ("connection refused", 1)
    status, _ = observe(status, True, None, hc, T0 + timedelta(seconds=10))
    # The reason of the last drain stays readable; consecutiveFailures == 0 says it is not current.
    assert (status.last_error, status.consecutive_failures, status.health) == ("connection refused", 0, H)


def test_long_error_fits_the_schema() -> None:
    status, _ = observe(replica(H), False, "x" * 5000, check(), T0)
    assert status.last_error is not None and len(status.last_error) == 1024
    ReplicaStatus.model_validate(status.model_dump(by_alias=True))


def test_times_are_stored_in_whole_seconds() -> None:
    status, _ = observe(replica(), True, None, check(), T0 + timedelta(microseconds=700_000))
    assert status.last_probe_time == T0 and status.since == T0


def test_transition_describes_itself() -> None:
    _, down = run(replica(H), "---", check())
    _, up = run(replica(X), "++", check())
    (_, drained), (_, back) = down[0], up[0]
    assert (drained.replica, drained.region, drained.reason, drained.warning) == (
        "r1",
        "eu-west-1",
        "ReplicaUnhealthy",
        True,
    )
    assert "3 consecutive failed probes" in drained.message and "HTTP 503 #2" in drained.message
    assert (back.reason, back.warning) == ("ReplicaHealthy", False)
    assert "healthy again after 2 successful probes" in back.message


def test_resume_from_status_after_restart() -> None:
    """An operator that restarts after two failures drains the replica on the third, not the fifth."""
    stored = {
        "name": "r1",
        "region": "eu-west-1",
        "health": "Healthy",
        "since": "2025-01-01T11:00:00Z",
        "consecutiveSuccesses": 0,
        "consecutiveFailures": 2,
        "lastProbeTime": "2025-01-01T12:00:00Z",
        "lastError": "timeout after 2s",
    }
    status = ReplicaStatus.model_validate(stored)
    hc = check()
    assert not due(status, hc, T0 + timedelta(seconds=9))
    assert due(status, hc, T0 + timedelta(seconds=10))
    status, transition = observe(status, False, "timeout after 2s", hc, T0 + timedelta(seconds=10))
    assert transition is not None and (transition.before, transition.after) == (H, X)


# ----------------------------------------------------------------------------------------------- due


@pytest.mark.parametrize(
    ("last_probe", "now_offset", "enabled", "expected"),
    [
        (None, 0, True, True),
        (T0, 0, True, False),
        (T0, 9.999, True, False),
        (T0, 10, True, True),
        (T0, 3600, True, True),
        (None, 0, False, False),
        (T0, 3600, False, False),
        (T0 + timedelta(seconds=5), 0, True, False),  # a little in the future: another clock, wait
        (T0 + timedelta(hours=2), 0, True, True),  # far in the future: the clock jumped back, probe
    ],
    ids=["never", "just", "before", "at-interval", "late", "disabled", "disabled-late", "skew", "clock-jump"],
)
def test_due(last_probe: datetime | None, now_offset: float, enabled: bool, expected: bool) -> None:
    status = replica(H, last_probe_time=last_probe)
    assert due(status, check(enabled=enabled, interval="10s"), T0 + timedelta(seconds=now_offset)) is expected


def test_due_accepts_a_naive_now_as_utc() -> None:
    assert due(replica(last_probe_time=T0), check(), datetime(2025, 1, 1, 12, 0, 10))


# --------------------------------------------------------------------------------------------- probe


@dataclass
class Server:
    base: str
    """Replica base URL, with a version path like real ones."""
    release: asyncio.Event
    seen_auth: list[str]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    release = asyncio.Event()
    seen_auth: list[str] = []

    async def models(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        return web.json_response({"object": "list", "data": []})

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def hang(request: web.Request) -> web.Response:
        await release.wait()  # held until teardown: the probe must give up on its own
        return web.Response()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/v1/models")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/down", down)
    app.router.add_get("/hang", hang)
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}/v1", release, seen_auth)
    finally:
        release.set()
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


async def test_probe_ok_joins_path_to_the_replica_host(
    server: Server, session: aiohttp.ClientSession
) -> None:
    assert await probe(session, server.base, "/v1/models", 2, None) == (True, None)
    assert server.seen_auth == [""]


async def test_probe_sends_the_token(server: Server, session: aiohttp.ClientSession) -> None:
    assert await probe(session, server.base, "/v1/models", 2, "s3cret") == (True, None)
    assert server.seen_auth == ["Bearer s3cret"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/down", "HTTP 503"), ("/missing", "HTTP 404"), ("/moved", "HTTP 302")],
    ids=["503", "404", "redirect-not-followed"],
)
async def test_probe_non_2xx(
    server: Server, session: aiohttp.ClientSession, path: str, expected: str
) -> None:
    assert await probe(session, server.base, path, 2, None) == (False, expected)


async def test_probe_hanging_endpoint_times_out(server: Server, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    assert await probe(session, server.base, "/hang", 0.2, None) == (False, "timeout after 0.2s")
    assert time.monotonic() - started < 2


async def test_probe_closed_port_is_refused(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    assert await probe(session, url, "/v1/models", 2, None) == (False, "connection refused")


async def test_probe_never_raises_on_a_bad_url(session: aiohttp.ClientSession) -> None:
    assert await probe(session, "not a url", "/v1/models", 2, None) == (
        False,
        "invalid URL: 'not a url' has no host",
    )


async def test_probe_result_feeds_observe(server: Server, session: aiohttp.ClientSession) -> None:
    hc = check(healthy=1, unhealthy=1)
    ok, error = await probe(session, server.base, "/down", 2, None)
    status, transition = observe(replica(H), ok, error, hc, T0)
    assert transition is not None and status.last_error == "HTTP 503"
