"""The operator's active health probe per provider: each native provider's own cheap authenticated GET
(its model list) against the fakes, a wrong key failing it, and why Bedrock and Vertex AI are not probed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from modelroute_operator.clients import probe as pr
from modelroute_operator.logic.health import probe_request
from modelroute_operator.logic.resources import ModelEndpointSpec
from tests.fakes.native import ENTRA_TOKEN, KEYS, FakeNative


def spec(provider: str, **settings: Any) -> ModelEndpointSpec:
    return ModelEndpointSpec.model_validate(
        {"model": "m", "provider": provider, "providerSettings": settings or None,
         "credentials": {"name": "s", "key": "k"}, "replicas": [{"name": "r", "region": "eu-central-1", "url": "http://x"}]}
    )


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, FakeNative]]:
    made = {p: await FakeNative(p, p).start() for p in ("azure-openai", "anthropic", "gemini")}
    yield made
    for fake in made.values():
        await fake.stop()


@pytest.mark.parametrize(
    ("provider", "settings", "key"),
    [
        ("azure-openai", {"apiVersion": "2024-10-21"}, KEYS["azure-openai"]),
        ("azure-openai", {"apiVersion": "2024-10-21", "auth": "entra-token"}, ENTRA_TOKEN),
        ("anthropic", {}, KEYS["anthropic"]),
        ("gemini", {}, KEYS["gemini"]),
    ],
)
async def test_each_native_provider_is_probed_with_its_own_authenticated_read(
    fakes: dict[str, FakeNative], provider: str, settings: dict[str, str], key: str
) -> None:
    fake = fakes[provider]
    async with aiohttp.ClientSession() as session:
        request = probe_request(spec(provider, **settings), key)
        assert not isinstance(request, str)
        assert await pr.probe(session, fake.url, request[0], 2.0, None, headers=request[1]) == (True, None)
        wrong = probe_request(spec(provider, **settings), "wrong-key")
        assert not isinstance(wrong, str)
        assert await pr.probe(session, fake.url, wrong[0], 2.0, None, headers=wrong[1]) == (False, "HTTP 401")
        fake.set(fail_next=1, fail_status=503)
        assert await pr.probe(session, fake.url, request[0], 2.0, None, headers=request[1]) == (False, "HTTP 503")
        await fake.stop()
        ok, error = await pr.probe(session, fake.url, request[0], 2.0, None, headers=request[1])
        assert not ok and error == "connection refused"


def test_bedrock_and_vertex_say_why_they_are_not_probed() -> None:
    assert "Bedrock" in str(probe_request(spec("bedrock"), "{}"))
    assert "Vertex" in str(probe_request(spec("gemini", auth="service-account", project="acme-ml"), "{}"))
    assert probe_request(spec("openai"), "k") == ("/v1/models", {"Authorization": "Bearer k"})
