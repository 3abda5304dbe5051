"""Shadow traffic through the data port, with a real sidecar and fake upstreams: the shadow gets a copy,
the client gets only the primary's answer and never waits for the copy (the fake holds the copy on an
event while the client's answer completes), `maxConcurrent` holds, and residency keeps a restricted
request's copy away from a shadow in a forbidden region."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from modelroute_contract import RouterConfig
from modelroute_sidecar.engine.shadow import shadow_bucket
from tests.component.conftest import Running, SidecarFactory, build_config, eventually
from tests.fakes.native import KEYS, USAGE_IN, USAGE_OUT, FakeNative
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
EU = {"x-modelroute-data-class": "eu-personal"}


@pytest.fixture
async def shadow_fake() -> AsyncIterator[FakeUpstream]:
    """The shadow endpoint's one replica (its own fake: every request it sees is a copy)."""
    fake = await FakeUpstream("shadow").start()
    yield fake
    await fake.release_and_stop()


def shadow_config(
    upstreams: dict[str, FakeUpstream],
    shadow: FakeUpstream,
    *,
    percent: float = 100.0,
    max_concurrent: int = 8,
    region: str = "eu-west",
    compliance: tuple[str, ...] = ("gdpr",),
    native: dict[str, Any] | None = None,
    **policy_changes: Any,
) -> RouterConfig:
    """The component config plus endpoint `shadow` (model `shadow-v9`, one replica in `region`), mirrored
    from the default rule (llama)."""
    base = build_config({n: f.url for n, f in upstreams.items()}, **policy_changes)
    data: dict[str, Any] = base.model_dump(by_alias=True, mode="json", exclude={"version"})
    data["endpoints"].append(
        {
            "name": "shadow",
            "model": "shadow-v9",
            "replicas": [
                {
                    "name": "shadow-1",
                    "region": region,
                    "url": shadow.url,
                    "compliance": list(compliance),
                    "health": "Healthy",
                }
            ],
            **(native or {}),
        }
    )
    rule = data["policies"][0]["rules"][-1]
    assert rule["name"] == "default"
    rule["shadow"] = {"endpoint": "shadow", "percent": percent, "maxConcurrent": max_concurrent}
    return RouterConfig.model_validate(data).seal()


async def ask(running: Running, **headers: str) -> tuple[dict[str, str], dict[str, Any]]:
    raw = await running.client().chat.completions.with_raw_response.create(
        model="auto", messages=HI, extra_headers=headers
    )
    return dict(raw.headers), raw.parse().model_dump()


def shadow_figures(running: Running) -> dict[str, Any]:
    (figures,) = running.sidecar.stats.snapshot(pod="p", config_version="v").to_json()["shadows"]
    assert isinstance(figures, dict)
    return figures


def outcomes(running: Running) -> dict[str, float]:
    family = running.sidecar.metrics.shadow
    return {key[3]: value for key, value in family.values.items() if key[:3] == ("main", "default", "shadow")}


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_the_shadow_gets_a_copy_and_the_client_only_the_primary_answer(
    start_sidecar: SidecarFactory,
    upstreams: dict[str, FakeUpstream],
    shadow_fake: FakeUpstream,
    tmp_path: Path,
) -> None:
    running = await start_sidecar(shadow_config(upstreams, shadow_fake))
    headers, answer = await ask(running, **{"x-request-id": "req-copied-1"})
    assert answer["system_fingerprint"] in ("eu-1", "eu-2", "us-1")  # llama answered
    assert answer["choices"][0]["message"]["content"].startswith("Hello from eu-")
    assert not any("shadow" in f"{k}:{v}".lower() for k, v in headers.items())  # nothing leaks to the client
    await eventually(lambda: outcomes(running).get("ok") == 1, what="the copy answered")
    (seen,) = shadow_fake.requests
    assert seen.model == "shadow-v9"
    assert seen.headers["x-modelroute-shadow"] == "1"
    assert seen.headers["x-request-id"] == "req-copied-1"
    assert seen.body["messages"] == HI
    figures = shadow_figures(running)
    assert figures["policy"] == "main" and figures["rule"] == "default" and figures["endpoint"] == "shadow"
    assert figures["primary"]["requests"] == 1 and figures["primary"]["errors"] == 0
    assert figures["shadow"]["requests"] == 1 and figures["shadow"]["errors"] == 0
    assert figures["shadow"]["tokensIn"] == 12 and figures["shadow"]["tokensOut"] == 5
    assert figures["primary"]["tokensOut"] == 5
    assert figures["shadow"]["latencyBuckets"][-1] == 1
    # the copy is none of the primary's business: no upstream attempt, no ejection figures for it
    assert "shadow" not in running.sidecar.stats.endpoints
    await eventually(lambda: bool(audit_lines(tmp_path)), what="the audit line")
    (line,) = audit_lines(tmp_path)
    assert line["shadow"] == {
        "endpoint": "shadow",
        "replica": "shadow-1",
        "region": "eu-west",
        "outcome": "sent",
    }
    assert [a["endpoint"] for a in line["attempts"]] == ["llama"]
    status, stats = await running.admin("GET", "/stats")
    assert status == 200 and stats["shadows"][0]["shadow"]["requests"] == 1


async def test_the_client_is_answered_while_the_copy_is_held_and_a_failing_copy_changes_nothing(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    running = await start_sidecar(shadow_config(upstreams, shadow_fake))
    shadow_fake.set(hang=True)
    _, answer = await ask(running)
    assert answer["choices"][0]["message"]["content"].startswith("Hello from eu-")
    # the client has its whole answer; the copy reached the shadow and is still held there
    await eventually(lambda: shadow_fake.held == 1, what="the copy to be held")
    assert outcomes(running) == {}
    assert running.sidecar.shadows is not None and running.sidecar.shadows.in_flight[("main", "default")] == 1
    shadow_fake.release()
    await eventually(lambda: outcomes(running).get("ok") == 1, what="the released copy to be counted")

    shadow_fake.set(fail_next=1, fail_status=500)
    _, answer = await ask(running)
    assert answer["choices"][0]["message"]["content"].startswith("Hello from eu-")
    await eventually(lambda: outcomes(running).get("error") == 1, what="the failed copy")
    figures = shadow_figures(running)
    assert figures["shadow"] == {**figures["shadow"], "requests": 2, "errors": 1}
    assert figures["primary"]["errors"] == 0
    assert running.sidecar.ejections.is_ejected("shadow", "shadow-1") is False


async def test_a_streamed_request_is_relayed_as_usual_and_copied_without_streaming(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    running = await start_sidecar(shadow_config(upstreams, shadow_fake))
    shadow_fake.set(hang=True)
    stream = await running.client().chat.completions.create(model="auto", messages=HI, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    assert "".join(p or "" for p in pieces).startswith("Hello from eu-")
    await eventually(lambda: shadow_fake.held == 1, what="the copy to be held")
    (seen,) = shadow_fake.requests
    assert seen.body["stream"] is False and "stream_options" not in seen.body
    assert seen.model == "shadow-v9"
    shadow_fake.release()
    await eventually(lambda: outcomes(running).get("ok") == 1, what="the copy answered")
    assert shadow_figures(running)["shadow"]["tokensOut"] == 5  # the usage of a non-streamed answer


async def test_max_concurrent_bounds_the_copies_in_flight(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    running = await start_sidecar(shadow_config(upstreams, shadow_fake, max_concurrent=2))
    shadow_fake.set(hang=True)
    for n in range(5):
        _, answer = await ask(running)
        assert answer["choices"][0]["message"]["content"].startswith("Hello from eu-")
        if n < 2:  # the copy starts after the answer: wait for it, so the count below is exact
            await eventually(lambda n=n: shadow_fake.held == n + 1, what=f"copy {n} held")
    assert outcomes(running) == {"busy": 3}
    assert shadow_fake.held == 2 and len(shadow_fake.requests) == 2
    assert shadow_figures(running)["skipped"] == {"busy": 3}
    shadow_fake.release()
    await eventually(lambda: outcomes(running).get("ok") == 2, what="the held copies")
    await ask(running)  # room again
    await eventually(lambda: outcomes(running).get("ok") == 3, what="a copy after the release")
    assert len(shadow_fake.requests) == 3


async def test_copies_keep_to_the_shadow_endpoint_s_rate_and_skip_abandoned_requests(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    limited = shadow_config(upstreams, shadow_fake, native={"maxRequestsPerMinute": 2})
    running = await start_sidecar(limited)
    for _ in range(5):
        await ask(running)
    await eventually(lambda: outcomes(running) == {"ok": 2, "rate-limited": 3}, what="the copies")
    assert len(shadow_fake.requests) == 2

    for fake in upstreams.values():
        fake.set(delay=5.0)  # the primary answers late: the client gives up first
    with pytest.raises(openai.APITimeoutError):
        await running.client(timeout=0.3).chat.completions.create(model="auto", messages=HI)
    await eventually(lambda: outcomes(running).get("client-closed") == 1, what="the abandoned request")
    assert len(shadow_fake.requests) == 2  # no copy of a request nobody waits for
    assert shadow_figures(running)["skipped"] == {"rate-limited": 3, "client-closed": 1}


async def test_a_restricted_request_is_never_copied_to_a_shadow_in_a_forbidden_region(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    config = shadow_config(upstreams, shadow_fake, region="us-east", compliance=())
    running = await start_sidecar(config)
    for _ in range(5):
        headers, answer = await ask(running, **EU)
        assert headers["x-modelroute-data-class"] == "eu-personal"
        assert answer["system_fingerprint"] in ("eu-1", "eu-2")
    await eventually(lambda: outcomes(running).get("residency") == 5, what="five residency skips")
    assert shadow_fake.requests == []
    assert shadow_figures(running)["skipped"] == {"residency": 5}
    assert shadow_figures(running)["primary"]["requests"] == 0  # only mirrored requests are compared
    # a detector's class is as binding as a declared one
    await running.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "mail me at a.b@example.eu"}], extra_headers=EU
    )
    await eventually(lambda: outcomes(running).get("residency") == 6, what="the sixth skip")
    assert shadow_fake.requests == []
    # a public request may go there: the shadow was reachable all along
    await ask(running)
    await eventually(lambda: outcomes(running).get("ok") == 1, what="the public copy")
    assert len(shadow_fake.requests) == 1


async def test_percent_copies_exactly_the_requests_the_hash_predicts(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    running = await start_sidecar(shadow_config(upstreams, shadow_fake, percent=30.0))
    ids = [f"req-{n}" for n in range(40)]
    predicted = {i for i in ids if shadow_bucket("main", "default", i) < 30.0}
    assert 0 < len(predicted) < len(ids)
    for request_id in ids:
        await ask(running, **{"x-request-id": request_id})
    await eventually(lambda: outcomes(running).get("ok") == len(predicted), what="the predicted copies")
    assert {r.headers["x-request-id"] for r in shadow_fake.requests} == predicted


async def test_a_copy_that_never_answers_ends_at_its_deadline(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], shadow_fake: FakeUpstream
) -> None:
    config = shadow_config(upstreams, shadow_fake, max_concurrent=1, resilience={"perTryTimeoutSeconds": 0.2})
    running = await start_sidecar(config)
    shadow_fake.set(hang=True)
    await ask(running)
    await eventually(lambda: outcomes(running).get("timeout") == 1, what="the copy to time out")
    assert shadow_figures(running)["shadow"]["errors"] == 1
    # its slot is free again: the next copy is sent, not skipped as busy
    shadow_fake.release()
    await ask(running)
    await eventually(lambda: outcomes(running).get("ok") == 1, what="the next copy")
    assert "busy" not in outcomes(running)


async def test_a_native_provider_shadow_gets_a_translated_non_streamed_copy(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream], secrets_dir: Path
) -> None:
    key = secrets_dir / "anthropic" / "apiKey"
    key.parent.mkdir(parents=True)
    key.write_text(KEYS["anthropic"])
    fake = await FakeNative("anthropic", "ant").start()
    try:
        native = {"provider": "anthropic", "credentials": {"secret": "anthropic", "key": "apiKey"}}
        running = await start_sidecar(shadow_config(upstreams, fake, native=native))
        stream = await running.client().chat.completions.create(model="auto", messages=HI, stream=True)
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(p or "" for p in pieces).startswith("Hello from eu-")
        await eventually(lambda: outcomes(running).get("ok") == 1, what="the translated copy")
        (seen,) = fake.requests
        assert seen.path == "/v1/messages" and seen.body["model"] == "shadow-v9"
        assert seen.body.get("stream") in (None, False)  # the Messages API, not streamed
        assert seen.body["messages"][0]["content"] in ("hi", [{"type": "text", "text": "hi"}])
        shadow = shadow_figures(running)["shadow"]
        assert (shadow["errors"], shadow["tokensIn"], shadow["tokensOut"]) == (0, USAGE_IN, USAGE_OUT)
    finally:
        await fake.release_and_stop()
