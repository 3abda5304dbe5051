"""The operator's health probes: never sent to a metadata address, and a credential Secret the operator
may not read leaves health alone with an error naming the missing grant.

A fake KubeApi records the status patches; a real aiohttp session against a loopback server counts the
probes that actually went out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientSession, web
from tests.manifests import endpoint, with_change

from modelroute_operator.clients.kube import SecretForbiddenError
from modelroute_operator.runtime.monitor import HealthMonitor


class FakeKube:
    def __init__(self, forbid: bool) -> None:
        self.forbid = forbid
        self.patches: list[dict[str, Any]] = []
        self.secret_reads = 0

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        self.secret_reads += 1
        if self.forbid:
            raise SecretForbiddenError(namespace, name)
        return "sk-test"

    async def patch_status(self, kind: Any, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    async def record_event(self, *args: Any, **kwargs: Any) -> None:
        return None


async def _check(body: dict[str, Any], kube: FakeKube) -> tuple[int, list[dict[str, Any]]]:
    hits = 0

    async def models(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        body = with_change(body, "spec.replicas.1.url", f"http://127.0.0.1:{port}/v1")
        body["metadata"] |= {"namespace": "team-a", "resourceVersion": "1"}
        async with ClientSession() as session:
            monitor = HealthMonitor(kube, session)  # type: ignore[arg-type]
            await monitor.check_endpoint(("team-a", "llama"), body)
    finally:
        await runner.cleanup()
    return hits, kube.patches


def _probed(spec_changes: dict[str, Any]) -> dict[str, Any]:
    body = endpoint()
    body["spec"]["healthCheck"] = {"enabled": True, "interval": "10s", "timeout": "2s"}
    for path, value in spec_changes.items():
        body = with_change(body, path, value)
    return body


def test_a_metadata_replica_is_never_probed() -> None:
    body = _probed({"spec.replicas.0.url": "http://169.254.169.254/latest"})
    hits, patches = asyncio.run(_check(body, FakeKube(forbid=False)))
    assert hits == 1  # only the loopback replica
    replicas = {r["name"]: r for r in patches[-1]["replicas"]}
    metadata = replicas["eu-west-1"]
    assert metadata["health"] == "Unknown" and "cloud-metadata" in metadata["lastError"]
    assert metadata["lastError"].startswith("not probed: url ")


def test_a_forbidden_credentials_secret_leaves_health_alone_and_names_the_grant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELROUTE_CREDENTIALS_CLUSTERROLE", "mr-modelroute-credentials")
    monkeypatch.setenv("MODELROUTE_SERVICE_ACCOUNT", "modelroute-system:mr-modelroute")
    body = _probed({"spec.credentials": {"name": "openai-key", "key": "apiKey"}})
    kube = FakeKube(forbid=True)
    hits, patches = asyncio.run(_check(body, kube))
    assert hits == 0 and kube.secret_reads == 1  # no probe without the key: it would only see 401s
    for replica in patches[-1]["replicas"]:
        assert replica["health"] == "Unknown"
        assert replica["consecutiveFailures"] == 0
        assert "may not read Secret team-a/openai-key" in replica["lastError"]
        assert (
            "kubectl create rolebinding modelroute-credentials -n team-a "
            "--clusterrole=mr-modelroute-credentials --serviceaccount=modelroute-system:mr-modelroute"
        ) in replica["lastError"]


def test_a_readable_credentials_secret_is_used() -> None:
    body = _probed({"spec.credentials": {"name": "openai-key", "key": "apiKey"}})
    hits, patches = asyncio.run(_check(body, FakeKube(forbid=False)))
    assert hits == 1
    assert any(r["health"] != "Unknown" or r.get("consecutiveSuccesses") for r in patches[-1]["replicas"])
