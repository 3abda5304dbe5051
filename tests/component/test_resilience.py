"""Failure handling: retries and failover among allowed replicas only, passive ejection with a half-open
trial, per-try timeouts, escalation on bad answers, and failing closed when residency leaves nothing."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from modelroute_contract import Resilience
from modelroute_sidecar.ejection import Ejections
from modelroute_sidecar.stats import EndpointStats
from tests.component.conftest import Running, SidecarFactory, build_config
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


async def test_5xx_is_retried_on_the_next_replica(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=502)
    raw = await sidecar.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from eu-2"
    assert raw.headers["x-modelroute-attempts"] == "2"
    assert raw.headers["x-modelroute-replica"] == "eu-2"


async def test_429_from_upstream_is_retried(sidecar: Running, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=429)
    raw = await sidecar.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-modelroute-replica"] == "eu-2"


async def test_4xx_from_upstream_is_returned_as_is(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=400)
    with pytest.raises(openai.BadRequestError) as caught:
        await sidecar.client().chat.completions.create(model="auto", messages=HI)
    assert "eu-1 failing on purpose" in caught.value.response.json()["error"]["message"]
    assert caught.value.response.headers["x-modelroute-attempts"] == "1"
    assert upstreams["eu-2"].requests == []


async def test_hanging_replica_times_out_and_fails_over(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    config = build_config({n: f.url for n, f in upstreams.items()}, resilience={"perTryTimeoutSeconds": 0.2})
    running = await start_sidecar(config)
    upstreams["eu-1"].set(hang=True)
    raw = await running.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-modelroute-replica"] == "eu-2"
    attempt = running.sidecar.ejections.state("llama", "eu-1")
    assert attempt is not None and attempt.failures == 1


async def test_consecutive_failures_eject_then_a_trial_restores(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sidecar.client()
    upstreams["eu-1"].set(fail_next=3, fail_status=500)
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
        assert raw.headers["x-modelroute-replica"] == "eu-2"
    ejections = sidecar.sidecar.ejections
    assert ejections.is_ejected("llama", "eu-1") and ejections.any_ejected()
    upstreams["eu-1"].requests.clear()
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-modelroute-attempts"] == "1"  # the ejected replica is not even tried
    assert upstreams["eu-1"].requests == []
    state = ejections.state("llama", "eu-1")
    assert state is not None
    state.ejected_until = 0  # backoff over: half-open
    assert not ejections.is_ejected("llama", "eu-1")
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-modelroute-replica"] == "eu-1"
    assert ejections.state("llama", "eu-1") is None  # success reset the streak and the backoff
    assert not ejections.any_ejected()  # the engine's ejection filter is back to its fast path


def test_ejection_backoff_doubles_up_to_the_maximum_and_one_trial_at_a_time() -> None:
    policy = Resilience(eject_after_failures=2, base_ejection_seconds=1.0, max_ejection_seconds=3.0)
    ejections = Ejections(EndpointStats())
    assert not ejections.failed("e", "r", policy)
    assert not ejections.any_ejected()  # a failure streak alone ejects nothing
    assert ejections.failed("e", "r", policy)
    assert ejections.any_ejected()
    state = ejections.state("e", "r")
    assert state is not None
    backoffs = []
    for _ in range(3):
        state.ejected_until = 0
        assert not ejections.is_ejected("e", "r")
        ejections.begin("e", "r")  # the trial
        assert ejections.is_ejected("e", "r")  # nobody else while the trial runs
        now = time.monotonic()
        assert ejections.failed("e", "r", policy)  # a failed trial ejects again at once
        backoffs.append(round(state.ejected_until - now))
    assert backoffs == [2, 3, 3]


async def test_escalation_on_truncated_answer(sidecar: Running, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["small"].set(finish_reason="length")
    raw = await sidecar.client().chat.completions.with_raw_response.create(model="cascade", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from big"
    assert raw.headers["x-modelroute-endpoint"] == "big"
    assert [r.model for r in upstreams["big"].requests] == ["big-70b"]


async def test_escalation_on_invalid_json_when_json_was_asked(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sidecar.client()
    upstreams["small"].set(invalid_json=True)
    plain = await client.chat.completions.create(model="cascade", messages=HI)
    assert plain.choices[0].message.content == "this is {not json"  # no JSON asked: the answer stands
    raw = await client.chat.completions.with_raw_response.create(
        model="cascade", messages=HI, response_format={"type": "json_object"}
    )
    assert raw.headers["x-modelroute-endpoint"] == "big"


async def test_escalation_on_upstream_error(sidecar: Running, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["small"].set(fail_next=5, fail_status=500)
    answer = await sidecar.client().chat.completions.create(model="cascade", messages=HI)
    assert answer.choices[0].message.content == "Hello from big"


async def test_all_compliant_replicas_down_fails_closed_with_the_residency_reason(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    running = await start_sidecar(region="us-east")
    await upstreams["eu-1"].stop()
    await upstreams["eu-2"].stop()
    client = running.client()
    headers = {"x-modelroute-data-class": "eu-personal"}
    messages = []
    for _ in range(4):  # attempts fail first, then the ejected replicas leave nothing compliant
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="auto", messages=HI, extra_headers=headers)
        assert caught.value.status_code == 503
        messages.append(caught.value.response.json()["error"]["message"])
    assert all("residency" in m for m in messages), messages
    assert upstreams["us-1"].requests == []
    # public traffic still flows to the US replica
    raw = await client.chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert raw.headers["x-modelroute-replica"] == "us-1"


async def test_retry_budget_limits_retries_under_a_storm(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    config = build_config(
        {n: f.url for n, f in upstreams.items()},
        resilience={"ejectAfterFailures": 1000, "retryBudgetPercent": 0.0, "escalateOn": []},
    )
    running = await start_sidecar(config, retry_floor_per_second=0.5)  # 5 retries per 10 s window
    for name in ("eu-1", "eu-2", "us-1"):
        upstreams[name].set(fail_percent=100, fail_status=503)
    client = running.client()
    results = await asyncio.gather(
        *(client.chat.completions.create(model="auto", messages=HI) for _ in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, openai.APIStatusError) for r in results)
    total = sum(len(upstreams[n].requests) for n in ("eu-1", "eu-2", "us-1"))
    assert total == 20 + 5  # every request once, plus the floor's five retries


async def test_stats_count_attempts_per_endpoint_and_replica(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=500)
    client = sidecar.client()
    for _ in range(3):
        await client.chat.completions.create(model="auto", messages=HI)
    status, stats = await sidecar.admin("GET", "/stats")
    assert status == 200
    llama = stats["endpoints"]["llama"]
    assert (llama["requests"], llama["errors"]) == (4, 1)
    assert llama["replicas"]["eu-1"]["errors"] == 1
    assert llama["replicas"]["eu-2"]["requests"] == 1
    assert llama["latencyBuckets"][-1] == 4  # cumulative: the +Inf bucket counts everything
    assert stats["configVersion"] == sidecar.sidecar.config.version
    assert stats["pod"] == "app-0"


async def test_a_stream_may_outlast_the_per_try_timeout(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    """The per-try timeout bounds the wait for the answer to start, not the answer itself."""
    config = build_config({n: f.url for n, f in upstreams.items()}, resilience={"perTryTimeoutSeconds": 0.3})
    running = await start_sidecar(config)
    upstreams["eu-1"].set(stream_chunks=4, chunk_delay=0.2)  # the first chunk at once, 0.8 s in all
    stream = await running.client().chat.completions.create(model="auto", messages=HI, stream=True)
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 4 and chunks[-1].choices[0].finish_reason == "stop"
    assert len(upstreams["eu-1"].requests) == 1 and upstreams["eu-2"].requests == []


async def test_the_deadline_cuts_a_stream_without_failing_over(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    """Past the first byte there is no failover: a stream still running at the request's deadline ends
    with an error event, and no other replica is called."""
    config = build_config(
        {n: f.url for n, f in upstreams.items()},
        resilience={"perTryTimeoutSeconds": 5.0, "deadlineSeconds": 0.6, "escalateOn": []},
    )
    running = await start_sidecar(config)
    upstreams["eu-1"].set(stream_chunks=10, chunk_delay=0.2)  # the first chunk at once, 2 s in all
    stream = await running.client().chat.completions.create(model="auto", messages=HI, stream=True)
    received: list[object] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError, match="deadline"):
        await read_all()
    assert 0 < len(received) < 10
    assert len(upstreams["eu-1"].requests) == 1 and upstreams["eu-2"].requests == []
    assert running.sidecar.ejections.state("llama", "eu-1") is None  # our deadline, not its failure
