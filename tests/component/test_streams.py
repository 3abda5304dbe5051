"""Streams that never lie: a stream fails over until its first event reached the client, and after that
ends either complete (with `[DONE]`) or with an OpenAI-style error event that the official SDK raises;
streamed answers are counted in token and cost metrics through the usage event the sidecar asks for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.component.conftest import Running, SidecarFactory, build_config, eventually
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]


async def raw_stream(sidecar: Running, body: dict[str, Any] | None = None) -> tuple[int, list[bytes]]:
    """POST a streamed chat request with a plain HTTP client; the status and the `data:` payloads, in
    order. Reading to the end proves the response was terminated properly (a cut chunked body raises)."""
    request = {"model": "auto", "messages": HI, "stream": True, **(body or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/chat/completions", json=request) as response,
    ):
        text = await response.read()
        status = response.status
    events = [block for block in text.split(b"\n\n") if block.strip()]
    assert all(e.startswith(b"data: ") for e in events), events
    return status, [e.removeprefix(b"data: ") for e in events]


async def metrics_text(sidecar: Running) -> str:
    async with aiohttp.ClientSession() as session, session.get(sidecar.url + "/metrics") as response:
        return await response.text()


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def last_audit(tmp_path: Path, count: int = 1) -> dict[str, Any]:
    path = tmp_path / "audit.jsonl"
    await eventually(lambda: len(audit_lines(path)) >= count, what="audit lines")
    return audit_lines(path)[count - 1]


async def read_all(stream: openai.AsyncStream[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


# --- before the first byte: failover ------------------------------------------------------------------


@pytest.mark.parametrize("end", ["empty", "drop"])
async def test_a_stream_that_ends_before_its_first_event_fails_over(
    sidecar: Running, upstreams: dict[str, FakeUpstream], end: str
) -> None:
    """A 200 whose body ends (cleanly or by a dropped connection) before any event: nothing reached the
    client yet, so the next replica serves it and the client sees one clean answer."""
    upstreams["eu-1"].set(stream_end=end, stream_cut_after=0)
    chunks = await read_all(
        await sidecar.client().chat.completions.create(model="auto", messages=HI, stream=True)
    )
    assert {c.system_fingerprint for c in chunks} == {"eu-2"}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(upstreams["eu-1"].requests) == 1 and len(upstreams["eu-2"].requests) == 1


async def test_a_stream_failing_with_5xx_fails_over_and_says_so_in_the_audit_log(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=503)
    status, events = await raw_stream(sidecar)
    assert status == 200 and events[-1] == b"[DONE]"
    record = await last_audit(tmp_path)
    assert [a["outcome"] for a in record["attempts"]] == ["upstream-5xx", "ok"]
    assert record["outcome"] == "ok" and record["replica"] == "eu-2"


# --- after the first byte: an error event, never a clean end ------------------------------------------


@pytest.mark.parametrize(
    ("end", "attempt_outcome"), [("drop", "stream-broken"), ("cut", "stream-incomplete")]
)
async def test_a_stream_broken_after_its_first_event_ends_with_an_error_event_and_no_done(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path, end: str, attempt_outcome: str
) -> None:
    """`drop`: the connection is cut mid-body. `cut`: the body ends cleanly after two chunks, without a
    finish_reason or `[DONE]` (a client used to see that as a normal end). Either way the client gets
    what was relayed, then an error event, no `[DONE]`, a properly ended response; and no failover."""
    upstreams["eu-1"].set(stream_chunks=5, stream_end=end, stream_cut_after=2)
    status, events = await raw_stream(sidecar)
    assert status == 200
    assert b"[DONE]" not in events
    relayed = [json.loads(e) for e in events]
    assert [c["choices"][0]["delta"]["content"] for c in relayed[:-1]] == ["Hello from eu-1 [0]", " [1]"]
    error = relayed[-1]["error"]
    assert error["code"] == "stream_broken" and error["type"] == "server_error" and error["message"]
    assert upstreams["eu-2"].requests == []
    record = await last_audit(tmp_path)
    assert record["outcome"] == "stream_broken" and record["status"] == 200 and record["error"]
    assert [a["outcome"] for a in record["attempts"]] == [attempt_outcome]
    text = await metrics_text(sidecar)
    assert (
        'modelroute_requests_total{endpoint="llama",outcome="stream_broken",region="eu-west",'
        'replica="eu-1",route="chat"} 1.0'
    ) in text


@pytest.mark.parametrize("end", ["drop", "cut"])
async def test_the_official_sdk_raises_on_a_broken_stream_instead_of_ending_cleanly(
    sidecar: Running, upstreams: dict[str, FakeUpstream], end: str
) -> None:
    upstreams["eu-1"].set(stream_chunks=5, stream_end=end, stream_cut_after=2)
    stream = await sidecar.client().chat.completions.create(model="auto", messages=HI, stream=True)
    received: list[Any] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as caught:
        await consume()
    assert len(received) == 2
    assert caught.value.code == "stream_broken"


async def test_a_stream_with_finish_reasons_but_no_done_is_complete_and_gets_its_done(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """Upstreams that omit `[DONE]` but finish every choice gave a complete answer: the client gets it
    with the `[DONE]` OpenAI's protocol promises, and it counts as ok."""
    upstreams["eu-1"].set(stream_chunks=3, stream_end="noDone")
    status, events = await raw_stream(sidecar)
    assert status == 200 and events[-1] == b"[DONE]" and events.count(b"[DONE]") == 1
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"
    assert (await last_audit(tmp_path))["outcome"] == "ok"
    chunks = await read_all(
        await sidecar.client().chat.completions.create(model="auto", messages=HI, stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_n_choices_need_a_finish_reason_each_when_done_is_missing(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    """The fake streams one choice whatever `n` says: with n=2 and no `[DONE]` the second choice never
    finished, so the stream is not complete."""
    upstreams["eu-1"].set(stream_chunks=3, stream_end="noDone")
    _, events = await raw_stream(sidecar, {"n": 2})
    assert b"[DONE]" not in events and json.loads(events[-1])["error"]["code"] == "stream_broken"
    assert (await last_audit(tmp_path))["outcome"] == "stream_broken"


async def test_an_upstream_error_event_is_relayed_alone_and_counted_broken(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    upstreams["eu-1"].set(stream_chunks=5, stream_end="error", stream_cut_after=2)
    status, events = await raw_stream(sidecar)
    assert status == 200 and b"[DONE]" not in events
    errors = [json.loads(e)["error"] for e in events if b'"error"' in e]
    assert [e["code"] for e in errors] == ["engine_dead"]  # the upstream's, and no second one of ours
    record = await last_audit(tmp_path)
    assert record["outcome"] == "stream_broken"
    assert [a["outcome"] for a in record["attempts"]] == ["stream-error"]


# --- usage: asked of the upstream, hidden unless the client asked -------------------------------------


async def test_streamed_tokens_are_counted_and_the_usage_event_hidden_from_a_client_that_did_not_ask(
    sidecar: Running, upstreams: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    upstreams["eu-1"].set(stream_chunks=5)
    body = {"temperature": 0.5, "metadata": {"task": "qa"}}
    status, events = await raw_stream(sidecar, body)
    assert status == 200 and events[-1] == b"[DONE]"
    relayed = [json.loads(e) for e in events[:-1]]
    assert len(relayed) == 5 and all(c["choices"] for c in relayed)  # no usage event
    seen = upstreams["eu-1"].requests[0].body
    assert seen["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in seen.items() if k != "stream_options"} == {
        "model": "llama-3-70b-instruct", "messages": HI, "stream": True, **body,
    }  # fmt: skip
    text = await metrics_text(sidecar)
    assert 'modelroute_tokens_total{direction="in",endpoint="llama"} 12.0' in text
    assert 'modelroute_tokens_total{direction="out",endpoint="llama"} 5.0' in text
    # llama costs 1 USD per 1M prompt tokens and 2 per 1M completion tokens
    assert 'modelroute_estimated_cost_usd_total{endpoint="llama"} 2.2e-05' in text
    record = await last_audit(tmp_path)
    assert (record["tokensIn"], record["tokensOut"]) == (12, 5)


async def test_a_client_that_asked_for_usage_gets_the_usage_event(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(stream_chunks=4)
    chunks = await read_all(
        await sidecar.client().chat.completions.create(
            model="auto", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 4)
    assert upstreams["eu-1"].requests[0].body["stream_options"] == {"include_usage": True}
    text = await metrics_text(sidecar)
    assert 'modelroute_tokens_total{direction="out",endpoint="llama"} 4.0' in text


async def test_a_client_that_turned_usage_off_still_gets_counted_without_seeing_it(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    _, events = await raw_stream(sidecar, {"stream_options": {"include_usage": False}})
    assert all(json.loads(e)["choices"] for e in events[:-1])
    assert upstreams["eu-1"].requests[0].body["stream_options"] == {"include_usage": True}
    assert 'modelroute_tokens_total{direction="out",endpoint="llama"} 3.0' in await metrics_text(sidecar)


async def test_an_endpoint_that_does_not_take_stream_options_gets_the_body_unchanged(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    config = build_config({n: f.url for n, f in upstreams.items()})
    llama = next(e for e in config.endpoints if e.name == "llama")
    patched = llama.model_copy(
        update={"capabilities": llama.capabilities.model_copy(update={"stream_usage": False})}
    )
    endpoints = tuple(patched if e.name == "llama" else e for e in config.endpoints)
    running = await start_sidecar(config.model_copy(update={"endpoints": endpoints}).seal())
    _, events = await raw_stream(running)
    assert events[-1] == b"[DONE]"
    assert "stream_options" not in upstreams["eu-1"].requests[0].body
    assert 'modelroute_tokens_total{direction="out",endpoint="llama"}' not in await metrics_text(running)
