"""The edges of the OpenAI API a client meets on day one, through the official SDK: one model by id, the
Responses API relayed (streamed and not), OpenAI's scoping headers and trace context forwarded, the
upstream's rate-limit headers and request id returned, tools and JSON mode served by default, and the
`x-should-retry` advice that keeps the SDK's retries from multiplying the router's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.component.conftest import Running, SidecarFactory, build_config, eventually, sdk_client
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- /v1/models/{id} ---------------------------------------------------------------------------------


async def test_one_model_is_retrieved_by_id_and_an_unknown_one_is_404(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    config = build_config(
        {n: f.url for n, f in upstreams.items()},
        virtualModels=["auto", "cascade", "split", "acme/support-bot"],
    )
    client = (await start_sidecar(config)).client()
    model = await client.models.retrieve("auto")
    assert (model.id, model.object, model.owned_by) == ("auto", "model", "modelroute/main")
    # the SDK percent-encodes the `/` of an id: the router decodes it
    assert (await client.models.retrieve("acme/support-bot")).id == "acme/support-bot"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-nope")
    error = caught.value.response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "acme/support-bot" in error["message"] and "auto" in error["message"]
    listed = [m.id async for m in client.models.list()]
    assert listed == ["acme/support-bot", "auto", "cascade", "split"]


# --- /v1/responses ------------------------------------------------------------------------------------


async def test_responses_are_relayed_with_the_model_rewritten_and_usage_counted(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    raw = await sidecar.client().responses.with_raw_response.create(
        model="auto", input="hi", instructions="be brief", max_output_tokens=64
    )
    response = raw.parse()
    assert response.output_text == "Hello from eu-1"
    assert raw.headers["x-modelroute-endpoint"] == "llama"
    assert raw.headers["x-modelroute-replica"] == "eu-1"
    seen = upstreams["eu-1"].requests
    assert [(r.path, r.model) for r in seen] == [("/v1/responses", "llama-3-70b-instruct")]
    assert seen[0].body["input"] == "hi" and seen[0].body["instructions"] == "be brief"
    await eventually(lambda: len(audit_lines(tmp_path / "audit.jsonl")) == 1, what="the audit line")
    line = audit_lines(tmp_path / "audit.jsonl")[0]
    assert (line["route"], line["tokensIn"], line["tokensOut"], line["status"]) == ("responses", 12, 5, 200)


async def test_a_streamed_response_ends_at_its_terminal_event_without_done(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    upstreams["eu-1"].set(stream_chunks=4)
    stream = await sidecar.client().responses.create(model="auto", input="hi", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        *["response.output_text.delta"] * 4,
        "response.completed",
    ]
    assert events[-1].response.usage is not None and events[-1].response.usage.output_tokens == 5
    # the router adds no `[DONE]` (not part of this API) and asks for no usage option (not one of its fields)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            sidecar.url + "/v1/responses", json={"model": "auto", "input": "x", "stream": True}
        ) as r,
    ):
        body = await r.read()
    assert b"response.completed" in body and b"[DONE]" not in body
    assert "stream_options" not in upstreams["eu-1"].requests[-1].body
    await eventually(lambda: len(audit_lines(tmp_path / "audit.jsonl")) == 2, what="the audit lines")
    assert audit_lines(tmp_path / "audit.jsonl")[0]["tokensOut"] == 5


@pytest.mark.parametrize("end", ["cut", "error"])
async def test_a_responses_stream_that_breaks_raises_in_the_sdk(
    sidecar: Running, upstreams: dict[str, FakeUpstream], end: str
) -> None:
    upstreams["eu-1"].set(stream_end=end, stream_cut_after=2)
    stream = await sidecar.client().responses.create(model="auto", input="hi", stream=True)
    seen: list[str] = []

    async def read() -> None:
        async for event in stream:
            seen.append(event.type)

    if end == "cut":  # ended with no terminal event: the router says so with an error the SDK raises
        with pytest.raises(openai.APIError, match="before the answer was complete"):
            await read()
    else:  # the upstream's own error event reaches the client as it is
        await read()
        assert seen[-1] == "error"
    assert seen[:2] == ["response.created", "response.output_text.delta"]
    assert "response.completed" not in seen


async def test_a_responses_stream_fails_over_before_its_first_event(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=503)
    stream = await sidecar.client().responses.create(model="auto", input="hi", stream=True)
    assert [e.type async for e in stream][-1] == "response.completed"
    assert len(upstreams["eu-2"].requests) == 1


async def test_personal_data_in_a_responses_request_keeps_it_in_its_regions(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    residency = {"detectors": [{"kind": "email", "dataClass": "eu-personal"}]}
    config = build_config({n: f.url for n, f in upstreams.items()}, residency=residency)
    client = (await start_sidecar(config)).client()
    for name in ("eu-1", "eu-2"):
        upstreams[name].set(fail_next=10, fail_status=500)
    item = {"type": "function_call_output", "call_id": "c1", "output": "the user is jane@example.eu"}
    with pytest.raises(openai.APIStatusError) as caught:
        await client.responses.create(model="auto", input=[item])
    assert caught.value.response.headers["x-modelroute-data-class"] == "eu-personal"
    assert upstreams["us-1"].requests == []  # never failed over out of the EU
    answer = await client.responses.with_raw_response.create(model="auto", input="public question")
    assert answer.headers["x-modelroute-region"] == "us-east"


# --- headers -----------------------------------------------------------------------------------------


async def test_openai_scoping_headers_and_trace_context_are_forwarded_and_nothing_else(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sdk_client(
        sidecar.url,
        api_key="sk-client-key",
        organization="org-acme",
        project="proj_support",
        default_headers={
            "OpenAI-Beta": "responses=v1",
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=1",
            "x-internal-secret": "do-not-forward",
        },
    )
    sidecar.clients.append(client)
    await client.chat.completions.create(model="auto", messages=HI)
    await client.responses.create(model="auto", input="hi")
    for seen in upstreams["eu-1"].requests:
        headers = seen.headers
        assert headers["openai-organization"] == "org-acme"
        assert headers["openai-project"] == "proj_support"
        assert headers["openai-beta"] == "responses=v1"
        assert (headers["traceparent"], headers["tracestate"]) == (TRACEPARENT, "vendor=1")
        assert "x-internal-secret" not in headers
        assert (
            headers["authorization"] == "Bearer sk-upstream-secret"
        )  # the endpoint's key, never the client's


async def test_the_upstreams_rate_limit_headers_and_request_id_come_back(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sidecar.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=HI, extra_headers={"x-request-id": "mine-1"}
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "1000"
    assert raw.headers["x-ratelimit-remaining-requests"] == "999"
    assert raw.headers["x-ratelimit-reset-requests"] == "60ms"
    assert raw.headers["x-modelroute-upstream-request-id"] == "req_eu-1_1"
    assert raw.headers["x-request-id"] == "mine-1"  # the router's id (the audit line's) stays the client's
    assert upstreams["eu-1"].requests[0].headers["x-request-id"] == "mine-1"
    # streamed answers carry them too, from the upstream that answered after a failover
    upstreams["eu-1"].set(fail_next=1, fail_status=500)
    stream = await client.chat.completions.with_raw_response.create(model="auto", messages=HI, stream=True)
    assert stream.headers["x-modelroute-replica"] == "eu-2"
    assert stream.headers["x-modelroute-upstream-request-id"] == "req_eu-2_1"
    assert stream.headers["x-ratelimit-remaining-requests"] == "999"
    [chunk async for chunk in stream.parse()]


async def test_an_upstream_429_reaches_the_client_with_its_rate_limit_state(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    for name in ("eu-1", "eu-2", "us-1"):
        upstreams[name].set(fail_next=5, fail_status=429)
    with pytest.raises(openai.RateLimitError) as caught:
        await sidecar.client().chat.completions.create(model="auto", messages=HI)
    headers = caught.value.response.headers
    assert caught.value.response.json()["error"]["code"] == "upstream_rate_limited"
    assert headers["x-ratelimit-limit-requests"] == "1000"
    assert headers["x-modelroute-upstream-request-id"].startswith("req_")
    assert headers["x-should-retry"] == "true"  # paced by the upstream: the router never waits itself


# --- capabilities ------------------------------------------------------------------------------------


async def test_tools_and_json_mode_are_served_by_an_endpoint_that_declares_no_capabilities(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    # `llama` in the test config declares no capabilities: the defaults are what OpenAI-style servers do
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    completion = await sidecar.client().chat.completions.create(
        model="auto", messages=HI, tools=[tool], response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "from eu-1"}
    response = await sidecar.client().responses.create(
        model="auto",
        input="hi",
        tools=[{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
        text={"format": {"type": "json_object"}},
    )
    assert response.output_text == '{"answer": "from eu-1"}'
    assert [r.path for r in upstreams["eu-1"].requests] == ["/v1/chat/completions", "/v1/responses"]


# --- x-should-retry ----------------------------------------------------------------------------------


async def test_sdk_retries_do_not_stack_on_the_routers_own(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    for name in ("eu-1", "eu-2", "us-1"):
        upstreams[name].set(fail_next=100, fail_status=500)
    client = sdk_client(sidecar.url, max_retries=2)  # the SDK's default: two retries
    sidecar.clients.append(client)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="auto", messages=HI)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    # maxAttempts 3: three upstream calls in all, not 3 x (1 + 2 SDK retries) = 9
    assert sum(len(upstreams[n].requests) for n in ("eu-1", "eu-2", "us-1")) == 3


async def test_answers_given_before_any_attempt_advise_a_retry(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    running = await start_sidecar(config_file=tmp_path / "missing.json")
    async with (
        aiohttp.ClientSession() as session,
        session.post(running.url + "/v1/chat/completions", json={"model": "auto", "messages": HI}) as r,
    ):
        assert (r.status, r.headers["x-should-retry"]) == (503, "true")
    with pytest.raises(openai.InternalServerError) as caught:
        await running.client().models.retrieve("auto")
    assert caught.value.response.json()["error"]["code"] == "not_ready"
    assert caught.value.response.headers["x-should-retry"] == "true"


async def test_client_errors_carry_no_retry_advice(sidecar: Running) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sidecar.client().chat.completions.create(model="gpt-nope", messages=HI)
    assert "x-should-retry" not in caught.value.response.headers
