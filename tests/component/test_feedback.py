"""`POST /v1/feedback` on the data port of a real in-process sidecar: scores land on the rule and
endpoint that served the request id, in `/stats` and `/metrics`; bad bodies are 400 naming the field,
unknown ids 404, and with client keys a tenant can only score its own requests."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelroute_sidecar.admin import CLAIM_PATH, WorkerSockets, control_server, sibling_claims, worker_socket
from modelroute_sidecar.feedback import Served
from tests.component.conftest import Running, SidecarFactory, eventually


async def post_feedback(
    running: Running, body: bytes | dict[str, Any], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(running.url + "/v1/feedback", data=data, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def chat(running: Running, request_id: str, key: str | None = None) -> None:
    client = running.client(api_key=key) if key else running.client()
    await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": request_id}
    )


async def test_feedback_counts_for_the_rule_and_endpoint_that_served(sidecar: Running) -> None:
    await chat(sidecar, "req-good")
    await chat(sidecar, "req-bad")
    assert await post_feedback(sidecar, {"request_id": "req-good", "score": 0.9, "label": "helpful"}) == (
        200,
        {"object": "feedback", "policy": "main", "rule": "default", "endpoint": "llama", "score": 0.9},
    )
    status, _ = await post_feedback(sidecar, {"request_id": "req-bad", "score": 0.2})
    assert status == 200
    for _ in range(3):  # a request is scored once: posting it again cannot move the mean
        status, answer = await post_feedback(sidecar, {"request_id": "req-good", "score": 1.0})
        assert status == 404 and "already scored" in answer["error"]["message"]
    status, stats = await sidecar.admin("GET", "/stats")
    assert status == 200
    [figures] = stats["feedback"]
    assert figures == {"policy": "main", "rule": "default", "endpoint": "llama", "count": 2, "scoreSum": 1.1}
    text = (await sidecar.sidecar.render_metrics()).decode()
    assert 'modelroute_feedback_score_count{endpoint="llama",policy="main",rule="default"} 2.0' in text
    assert "req-good" not in text and "helpful" not in text  # no request ids or labels as labels


async def test_bad_feedback_is_400_naming_the_field_and_unknown_ids_are_404(sidecar: Running) -> None:
    await chat(sidecar, "req-1")
    cases: list[tuple[bytes | dict[str, Any], str | None]] = [
        ({"request_id": "req-1", "score": 1.5}, "score"),
        ({"request_id": "req-1", "score": -0.1}, "score"),
        ({"request_id": "req-1", "score": "high"}, "score"),
        ({"request_id": "req-1", "score": True}, "score"),
        ({"request_id": "req-1"}, "score"),
        ({"score": 0.5}, "request_id"),
        ({"request_id": "req-1", "score": 0.5, "label": 3}, "label"),
        ({"request_id": "req-1", "score": 0.5, "label": "x" * 65}, "label"),
        ({"request_id": "req-1", "score": 0.5, "rating": 1}, "rating"),
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"request_id": "req-1", "score": 0.5, "label": "x" * 5000}).encode(), None),
    ]
    for body, field in cases:
        status, answer = await post_feedback(sidecar, body)
        assert status == 400, (body, answer)
        assert answer["error"]["param"] == field, (body, answer)
    status, answer = await post_feedback(sidecar, {"request_id": "never-served", "score": 0.5})
    assert status == 404 and answer["error"]["code"] == "request_not_found"
    assert answer["error"]["param"] == "request_id" and "never-served" in answer["error"]["message"]
    _, stats = await sidecar.admin("GET", "/stats")
    assert "feedback" not in stats  # nothing was taken
    text = (await sidecar.sidecar.render_metrics()).decode()
    assert 'modelroute_feedback_refused_total{reason="invalid"} 12.0' in text
    assert 'modelroute_feedback_refused_total{reason="unknown_request"} 1.0' in text


async def test_feedback_is_authenticated_and_scoped_to_the_keys_tenant(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "client-keys.yaml"
    keys.write_text("sk-a:\n  tenant: acme\nsk-b:\n  tenant: globex\n")
    running = await start_sidecar(client_keys_file=keys)
    await chat(running, "req-acme", key="sk-a")
    status, answer = await post_feedback(running, {"request_id": "req-acme", "score": 1})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    status, answer = await post_feedback(running, {"request_id": "req-acme", "score": 1}, key="sk-b")
    assert status == 404  # another tenant's request reads as unknown
    status, answer = await post_feedback(running, {"request_id": "req-acme", "score": 1}, key="sk-a")
    assert status == 200 and answer["endpoint"] == "llama"


async def test_a_sibling_claims_a_request_id_once_over_the_control_socket(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    keys = tmp_path / "client-keys.yaml"
    keys.write_text("sk-a:\n  tenant: acme\nsk-b:\n  tenant: globex\n")
    running = await start_sidecar(client_keys_file=keys)
    await chat(running, "req-acme", key="sk-a")
    control_dir = Path(tempfile.mkdtemp(prefix="mr-claim-"))  # short: a unix socket path is bounded
    server = control_server(running.sidecar)  # as worker 0; the asking worker is 1, whose socket is absent
    await server.start_unix(str(worker_socket(control_dir, 0)))
    try:
        sockets = WorkerSockets(control_dir, 3)  # worker 2 is down: it only reads as not remembering
        claim = sibling_claims(sockets, own=1)
        assert await claim("req-acme", "globex") is None  # another tenant's id reads as unknown, and stays
        assert await claim("never-served", "acme") is None
        assert await claim("req-acme", "ACME") == Served("main", "default", "llama", "acme")
        assert await claim("req-acme", "acme") is None  # claimed once
        assert running.sidecar.served.lookup("req-acme") is None  # forgotten where it was served
        for bad in (b"{", b"[]", b'{"request_id": 1, "tenant": null}', b'{"request_id": "x"}'):
            status, _ = await sockets.call(0, "POST", CLAIM_PATH, bad)
            assert status == 400, bad
    finally:
        await server.close(1.0)
        shutil.rmtree(control_dir, ignore_errors=True)


async def test_sibling_claims_in_flight_are_bounded_and_the_rest_told_to_retry() -> None:
    from modelroute_sidecar.admin import SIBLING_CLAIMS_IN_FLIGHT
    from modelroute_sidecar.errors import ApiError

    control_dir = Path(tempfile.mkdtemp(prefix="mr-hold-"))
    release, held = asyncio.Event(), []

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # a sibling stuck on something: the asking posts wait on it
        await release.wait()
        writer.close()

    server = await asyncio.start_unix_server(never_answers, str(worker_socket(control_dir, 0)))
    try:
        claim = sibling_claims(WorkerSockets(control_dir, 2), own=1)
        waiting = [
            asyncio.ensure_future(claim(f"made-up-{n}", None)) for n in range(SIBLING_CLAIMS_IN_FLIGHT)
        ]
        await eventually(lambda: len(held) == SIBLING_CLAIMS_IN_FLIGHT, what="the claims held by the sibling")
        with pytest.raises(ApiError) as refused:
            await claim("one-more", None)
        assert refused.value.status == 503 and refused.value.code == "feedback_busy"
        release.set()
        assert await asyncio.gather(*waiting) == [None] * SIBLING_CLAIMS_IN_FLIGHT
        assert len(held) == SIBLING_CLAIMS_IN_FLIGHT  # the refused post never reached the sibling
    finally:
        server.close()
        shutil.rmtree(control_dir, ignore_errors=True)
