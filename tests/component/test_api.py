"""The sidecar's OpenAI-compatible API as clients see it through the official SDK: answers, streams,
model rewrite, upstream credentials, decision headers, error bodies, metrics and the audit log."""

from __future__ import annotations

import json
import math
from pathlib import Path

import aiohttp
import openai
import pytest

from modelroute_contract import SCHEMA_VERSION
from tests.component.conftest import UPSTREAM_KEY, Running, SidecarFactory, build_config, eventually
from tests.fakes.upstream import FakeUpstream

DECISION_HEADERS = (
    "x-modelroute-endpoint",
    "x-modelroute-replica",
    "x-modelroute-region",
    "x-modelroute-rule",
    "x-modelroute-policy",
    "x-modelroute-data-class",
    "x-modelroute-config-version",
    "x-modelroute-attempts",
    "x-request-id",
)

SECRET_PROMPT = "my name is Zyxwv and my secret plan is ready"


async def test_chat_is_answered_by_the_local_replica_with_the_upstream_model(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sidecar.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": "req-123"}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from eu-1"
    assert raw.headers["x-modelroute-endpoint"] == "llama"
    assert raw.headers["x-modelroute-replica"] == "eu-1"
    assert raw.headers["x-modelroute-region"] == "eu-west"
    assert raw.headers["x-modelroute-rule"] == "default"
    assert raw.headers["x-modelroute-policy"] == "main"
    assert raw.headers["x-modelroute-attempts"] == "1"
    assert raw.headers["x-request-id"] == "req-123"
    assert raw.headers["x-modelroute-config-version"] == sidecar.sidecar.config.version
    seen = upstreams["eu-1"].requests
    assert [r.model for r in seen] == ["llama-3-70b-instruct"]
    assert seen[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen[0].headers["x-request-id"] == "req-123"
    assert seen[0].body["messages"] == [{"role": "user", "content": "hi"}]


async def test_body_is_forwarded_unchanged_but_for_the_model(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    body = {
        "messages": [{"role": "user", "content": 'say "model": "auto"'}],
        "model": "auto",
        "temperature": 0.25,
        "metadata": {"task": "qa"},
        "user": "u1",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/chat/completions", json=body) as r,
    ):
        assert r.status == 200
    assert upstreams["eu-1"].requests[0].body == {**body, "model": "llama-3-70b-instruct"}


async def test_streaming_is_relayed_chunk_by_chunk(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(stream_chunks=5)
    client = sidecar.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-modelroute-replica"] == "eu-1"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in raw.parse()]
    assert len(chunks) == 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from eu-1 [0] [1] [2] [3] [4]"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_fails_over_before_the_first_byte(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["eu-1"].set(fail_next=1, fail_status=503)
    client = sidecar.client()
    stream = await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].system_fingerprint == "eu-2"


async def test_completions_embeddings_and_models(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    client = sidecar.client()
    completion = await client.completions.create(model="auto", prompt="Once upon a time")
    assert completion.choices[0].text == "Hello from eu-1"
    embedding = await client.embeddings.create(model="auto", input=["a", "b"])
    assert len(embedding.data) == 2
    assert [r.path for r in upstreams["eu-1"].requests] == ["/v1/completions", "/v1/embeddings"]
    models = await client.models.list()
    assert sorted(m.id for m in models.data) == ["auto", "cascade", "split"]


async def test_declared_data_class_keeps_requests_in_compliant_regions(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    running = await start_sidecar(region="us-east")
    client = running.client()
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-modelroute-data-class": "eu-personal"},
    )  # fmt: skip
    assert raw.headers["x-modelroute-region"] in ("eu-west", "eu-central")
    assert raw.headers["x-modelroute-data-class"] == "eu-personal"
    plain = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert plain.headers["x-modelroute-region"] == "us-east"  # locality: the sidecar's own region first


# --- errors ------------------------------------------------------------------------------------------


def assert_error_body(error: openai.APIStatusError, status: int, code: str) -> None:
    assert error.status_code == status
    body = error.response.json()["error"]
    assert body["code"] == code
    assert body["message"]
    assert "type" in body and "param" in body
    assert body["request_id"] == error.response.headers["x-request-id"]
    for header in DECISION_HEADERS:
        assert header in error.response.headers, header


async def test_unknown_model_is_404(sidecar: Running) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sidecar.client().chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    assert_error_body(caught.value, 404, "model_not_found")
    assert "auto" in caught.value.response.json()["error"]["message"]


async def test_bad_json_and_bad_fields_are_400(sidecar: Running) -> None:
    async with aiohttp.ClientSession() as session:
        for body in (
            b"{not json",
            b"[]",
            b'{"messages": []}',
            b'{"model": "auto"}',
            b'{"model": "auto", "messages": [], "stream": "yes"}',
            b'{"model": "auto", "messages": [], "user": "\xff"}',  # not UTF-8
        ):
            async with session.post(sidecar.url + "/v1/chat/completions", data=body) as response:
                assert response.status == 400, body
                error = (await response.json())["error"]
                assert error["type"] == "invalid_request_error"
                assert response.headers["x-request-id"]


async def test_json_that_python_reads_but_strict_parsers_refuse_is_still_served(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    """NaN is not JSON by the RFC, but Python's `json` (and so many upstreams) accept it: the sidecar
    forwards what it did before its fast parser, unchanged."""
    body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}'
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/chat/completions", data=body) as response,
    ):
        assert response.status == 200
    seen = upstreams["eu-1"].requests[-1].body
    assert seen["model"] == "llama-3-70b-instruct"
    assert math.isnan(seen["temperature"])


async def test_missing_or_wrong_client_key_is_401_and_a_key_fixes_the_tenant(
    start_sidecar: SidecarFactory, tmp_path: Path, upstreams: dict[str, FakeUpstream]
) -> None:
    keys = tmp_path / "client-keys.yaml"
    keys.write_text(
        "sk-client-a:\n  tenant: acme\n  tier: gold\nsk-client-b:\n  tenant: freeloader\n  tier: free\n"
    )
    running = await start_sidecar(client_keys_file=keys)
    with pytest.raises(openai.AuthenticationError) as caught:
        await running.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert_error_body(caught.value, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        await running.client(api_key="sk-wrong").chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    ok = await running.client(api_key="sk-client-a").chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "x"}]
    )
    assert ok.choices[0].message.content == "Hello from eu-1"
    assert "sk-client-a" not in json.dumps(
        upstreams["eu-1"].requests[0].headers
    )  # client key never goes upstream
    # a free-tier key cannot claim a better tier by header: its limit (2/min) applies
    client = running.client(api_key="sk-client-b")
    for _ in range(2):
        await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-modelroute-tier": "gold"},
        )
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-modelroute-tier": "gold"},
        )


async def test_a_tenant_claim_that_conflicts_with_the_key_is_403(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "client-keys.yaml"
    keys.write_text("sk-client-a:\n  tenant: acme\n")
    running = await start_sidecar(client_keys_file=keys)
    client = running.client(api_key="sk-client-a")
    for claim in ({"extra_headers": {"x-modelroute-tenant": "globex"}}, {"metadata": {"tenant": "globex"}}):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x"}], **claim
            )
        assert_error_body(caught.value, 403, "tenant_mismatch")
    # the key's own tenant, in another case, is no conflict
    ok = await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-modelroute-tenant": "ACME"},
    )
    assert ok.choices


async def test_body_over_the_limit_is_413(start_sidecar: SidecarFactory) -> None:
    running = await start_sidecar(max_body_bytes=4096)
    with pytest.raises(openai.APIStatusError) as caught:
        await running.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x" * 10000}]
        )
    assert_error_body(caught.value, 413, "request_too_large")


async def test_tenant_over_its_limit_is_429_with_retry_after(sidecar: Running) -> None:
    client = sidecar.client()
    headers = {"x-modelroute-tenant": "t1", "x-modelroute-tier": "free"}
    for _ in range(2):
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], extra_headers=headers
        )
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], extra_headers=headers
        )
    assert_error_body(caught.value, 429, "rate_limit_exceeded")
    assert int(caught.value.response.headers["retry-after"]) >= 1
    # another tenant of the same tier has its own bucket
    await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={**headers, "x-modelroute-tenant": "t2"},
    )


async def test_a_claimed_tenant_is_bounded_in_length_and_characters(sidecar: Running) -> None:
    """A made-up tenant keys buckets, budgets and audit lines: a huge or control-laden one is a 400."""
    chat = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        for headers, body in (
            ({"x-modelroute-tenant": "t" * 129}, chat),
            ({}, {**chat, "metadata": {"tenant": "t" * 100_000}}),
            ({}, {**chat, "metadata": {"tenant": "acme\nforged"}}),
        ):
            async with session.post(sidecar.url + "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status == 400
                error = (await r.json())["error"]
                assert error["code"] == "invalid_request" and "tenant" in error["message"]
                assert "at most 128 characters" in error["message"]
        ok = {"x-modelroute-tenant": "t" * 128}
        async with session.post(sidecar.url + "/v1/chat/completions", json=chat, headers=ok) as r:
            assert r.status == 200


async def test_deadline_is_504(start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]) -> None:
    config = build_config(
        {n: f.url for n, f in upstreams.items()},
        resilience={"perTryTimeoutSeconds": 5.0, "deadlineSeconds": 0.3, "escalateOn": []},
    )
    running = await start_sidecar(config)
    upstreams["eu-1"].set(hang=True)
    with pytest.raises(openai.APIStatusError) as caught:
        await running.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert_error_body(caught.value, 504, "deadline_exceeded")
    assert caught.value.response.headers["x-modelroute-replica"] == "eu-1"


async def test_no_config_is_503_and_not_ready(start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    running = await start_sidecar(config_file=tmp_path / "missing.json")
    async with aiohttp.ClientSession() as session:
        async with session.get(running.url + "/readyz") as response:
            assert response.status == 503
        async with session.get(running.url + "/healthz") as response:
            assert response.status == 200
    with pytest.raises(openai.APIStatusError) as caught:
        await running.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}]
        )
    assert_error_body(caught.value, 503, "not_ready")


# --- observability -----------------------------------------------------------------------------------


async def test_metrics_are_exposed(sidecar: Running) -> None:
    await sidecar.client().chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    async with aiohttp.ClientSession() as session, session.get(sidecar.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert (
        'modelroute_requests_total{endpoint="llama",outcome="ok",region="eu-west",replica="eu-1",route="chat"} 1.0'
        in text
    )
    assert "modelroute_request_duration_seconds_bucket" in text
    assert "modelroute_upstream_duration_seconds_bucket" in text
    assert 'modelroute_tokens_total{direction="in",endpoint="llama"} 12.0' in text
    assert 'modelroute_tokens_total{direction="out",endpoint="llama"} 5.0' in text
    assert 'modelroute_estimated_cost_usd_total{endpoint="llama"}' in text
    assert (
        f'modelroute_config_info{{schema="{SCHEMA_VERSION}",version="{sidecar.sidecar.config.version}"}} 1.0'
        in text
    )
    for name in ("retries_total", "failovers_total", "ejections_total", "residency_blocks_total"):
        assert f"# TYPE modelroute_{name} counter" in text, name


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_audit_log_explains_each_request_without_prompt_text(sidecar: Running, tmp_path: Path) -> None:
    client = sidecar.client()
    await client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": SECRET_PROMPT}],
        extra_headers={"x-request-id": "audit-1"},
    )
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": SECRET_PROMPT}]
        )
    await client.chat.completions.create(  # a canary route: the other side is dropped, and says why
        model="split", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-user": "u-7"}
    )
    path = tmp_path / "audit.jsonl"
    await eventually(lambda: len(audit_lines(path)) >= 3, what="audit lines")
    first, second, third = audit_lines(path)[:3]
    assert first["requestId"] == "audit-1"
    assert first["model"] == "auto"
    assert (first["policy"], first["rule"], first["endpoint"], first["replica"], first["region"]) == (
        "main", "default", "llama", "eu-1", "eu-west",
    )  # fmt: skip
    assert first["outcome"] == "ok" and first["status"] == 200
    assert first["tokensIn"] == 12 and first["tokensOut"] == 5
    assert first["attempts"] == [
        {"endpoint": "llama", "replica": "eu-1", "region": "eu-west", "role": "primary", "outcome": "ok",
         "status": 200, "ms": first["attempts"][0]["ms"]},  # type: ignore[index]
    ]  # fmt: skip
    (dropped,) = third["dropped"]  # type: ignore[misc]
    assert dropped["reason"] == "canary-other-side" and "cand-rollout" in dropped["detail"]
    assert set(dropped) == {"endpoint", "replica", "region", "reason", "detail"}
    assert "dataClass" in first and "complexity" in first and "dropped" in first and "latencyMs" in first
    assert second["status"] == 404 and second["outcome"] == "model_not_found"
    assert "Zyxwv" not in path.read_text()


async def test_every_request_gets_its_audit_line_even_with_unencodable_text(
    sidecar: Running, tmp_path: Path
) -> None:
    """A lone surrogate is valid JSON text but not UTF-8: the fast encoder refuses it, and a client
    must not be able to keep its request out of the audit log that way."""
    bodies = (
        b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "metadata": {"tenant": "\\ud800"}}',
        b'{"model": "\\ud800", "messages": []}',  # a 404
    )
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(sidecar.url + "/v1/chat/completions", data=body) as response:
                assert response.status in (200, 404)
    path = tmp_path / "audit.jsonl"
    await eventually(lambda: len(audit_lines(path)) >= 2, what="audit lines")
    first, second = audit_lines(path)[:2]
    assert first["tenant"] == "\ud800" and first["status"] == 200
    assert second["model"] == "\ud800" and second["status"] == 404


async def test_audit_log_holds_prompts_only_when_enabled(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    path = tmp_path / "audit-with-prompts.jsonl"
    running = await start_sidecar(audit_log=str(path), audit_prompts=True)
    await running.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": SECRET_PROMPT}]
    )
    await eventually(lambda: len(audit_lines(path)) == 1, what="audit line")
    assert "Zyxwv" in audit_lines(path)[0]["prompt"]  # type: ignore[operator]
