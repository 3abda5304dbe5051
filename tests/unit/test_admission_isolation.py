"""Admission is served from its own thread and event loop: a blocked or flooded operator loop, or a full
default executor, does not delay an AdmissionReview's answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.unit.test_admission import SETTINGS, FakeReader, as_review, base, policy, request

from modelroute_operator.runtime.certificates import generate_certificates
from modelroute_operator.runtime.webhook_server import WebhookSettings, WebhookThread

ANSWER_WITHIN = 0.5
"""Generous for a loaded 2-core machine; the main loop is held for 3 s."""


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[WebhookThread, Path]]:
    certs = generate_certificates(tmp_path, ["127.0.0.1"])
    settings = WebhookSettings(certs.cert_file, certs.key_file, SETTINGS, host="127.0.0.1", port=0)
    server = WebhookThread(FakeReader(base()), settings)
    await server.start()
    yield server, certs.ca_file
    await server.stop()
    await server.stop()


def post_review(port: int, ca_file: Path) -> tuple[float, dict[str, object]]:
    """Seconds until the answer, and the answer (a blocking client, as the API server is to us)."""
    body = json.dumps(as_review(request("CREATE", policy("q", "gpt-missing", models=["o"])))).encode()
    context = ssl.create_default_context(cafile=str(ca_file))
    started = time.monotonic()
    req = urllib.request.Request(
        f"https://127.0.0.1:{port}/validate", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10, context=context) as r:
        answer = json.loads(r.read())["response"]
    return time.monotonic() - started, answer


async def test_a_review_is_answered_while_the_main_loop_is_blocked(
    webhook: tuple[WebhookThread, Path],
) -> None:
    server, ca_file = webhook
    loop = asyncio.get_running_loop()
    answer = loop.run_in_executor(None, post_review, server.port, ca_file)
    time.sleep(3)  # noqa: ASYNC251 (the operator's loop is stuck: nothing runs on it)
    took, review = await answer
    assert took < ANSWER_WITHIN, f"admission waited {took:.2f}s on the operator's loop"
    assert review["allowed"] is False  # a real decision, not a timeout


async def test_a_review_is_answered_during_a_reconcile_storm(webhook: tuple[WebhookThread, Path]) -> None:
    server, ca_file = webhook
    stop = asyncio.Event()

    async def busy() -> None:  # a task that keeps the loop at 100% CPU between yields
        while not stop.is_set():
            sum(range(20_000))
            await asyncio.sleep(0)

    # Every worker of the loop's default executor (what kube calls use) is taken too.
    blockers = [asyncio.to_thread(time.sleep, 2) for _ in range(40)]
    storm = [asyncio.create_task(busy()) for _ in range(200)]
    pending = asyncio.gather(*blockers)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as client:  # the API server's side, not ours
            took, review = await asyncio.get_running_loop().run_in_executor(
                client, post_review, server.port, ca_file
            )
    finally:
        stop.set()
        await asyncio.gather(*storm)
        await pending
    assert took < ANSWER_WITHIN * 2, f"admission waited {took:.2f}s behind the storm"
    assert review["allowed"] is False


async def test_a_port_in_use_fails_start(webhook: tuple[WebhookThread, Path], tmp_path: Path) -> None:
    server, _ = webhook
    certs = generate_certificates(tmp_path / "other", ["127.0.0.1"])
    clash = WebhookSettings(certs.cert_file, certs.key_file, SETTINGS, host="127.0.0.1", port=server.port)
    with pytest.raises(OSError, match="address already in use"):
        await WebhookThread(FakeReader(), clash).start()
