"""The sidecar in front of every native provider (fakes speaking each provider's own API, proven by
the official SDKs in test_native_fakes.py): chat answers, streams and tools through the OpenAI SDK,
refusals of what a provider cannot do, failover across providers, credential rotation, and the
Anthropic SDK as a client of `/v1/messages`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from modelroute_contract import RouterConfig
from tests.component.conftest import Running, SidecarFactory, eventually
from tests.fakes.native import ENTRA_TOKEN, KEYS, FakeNative
from tests.fakes.upstream import FakeUpstream

WEATHER: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
PROVIDERS = ("azure", "entra", "anthropic", "bedrock", "gemini", "vertex")
"""Virtual model = endpoint name of each native endpoint under test."""


def _service_account_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "router@fake-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.fixture
async def natives() -> AsyncIterator[dict[str, FakeNative]]:
    fakes = {
        "azure": await FakeNative("azure-openai", "az").start(),
        "anthropic": await FakeNative("anthropic", "ant").start(),
        "bedrock": await FakeNative("bedrock", "br", region="eu-central-1").start(),
        "gemini": await FakeNative("gemini", "gem").start(),
    }
    fakes["entra"] = fakes["azure"]
    fakes["vertex"] = fakes["gemini"]
    yield fakes
    for name in ("azure", "anthropic", "bedrock", "gemini"):
        await fakes[name].stop()


def _write(secrets: Path, secret: str, key: str, value: str) -> None:
    path = secrets / secret / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)


@pytest.fixture
def native_secrets(secrets_dir: Path) -> Path:
    _write(secrets_dir, "azure", "apiKey", KEYS["azure-openai"])
    _write(secrets_dir, "entra", "token", ENTRA_TOKEN)
    _write(secrets_dir, "anthropic", "apiKey", KEYS["anthropic"])
    _write(
        secrets_dir,
        "aws",
        "keys.json",
        json.dumps({"accessKeyId": KEYS["bedrock"], "secretAccessKey": "s3cr3t-aws"}),
    )
    _write(secrets_dir, "gemini", "apiKey", KEYS["gemini"])
    _write(secrets_dir, "vertex", "key.json", _service_account_key())
    return secrets_dir


def native_config(openai_url: str, fakes: dict[str, FakeNative]) -> RouterConfig:
    def endpoint(
        name: str, provider: str, model: str, secret: str, key: str, region: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            "name": name,
            "model": model,
            "provider": provider,
            "credentials": {"secret": secret, "key": key},
            "replicas": [
                {"name": f"{name}-1", "region": region, "url": fakes[name].url, "health": "Healthy"}
            ],
            **extra,
        }

    endpoints = [
        endpoint(
            "anthropic",
            "anthropic",
            "claude-fake",
            "anthropic",
            "apiKey",
            "eu-west",
            capabilities={"maxOutputTokens": 1024},
        ),
        endpoint(
            "azure",
            "azure-openai",
            "gpt-4o-deploy",
            "azure",
            "apiKey",
            "eu-west",
            providerSettings={"apiVersion": "2024-10-21"},
        ),
        endpoint("bedrock", "bedrock", "anthropic.claude-v2:1", "aws", "keys.json", "eu-central-1"),
        endpoint(
            "entra",
            "azure-openai",
            "gpt-4o-deploy",
            "entra",
            "token",
            "eu-west",
            providerSettings={"apiVersion": "2024-10-21", "auth": "entra-token"},
        ),
        endpoint("gemini", "gemini", "gemini-fake", "gemini", "apiKey", "eu-west"),
        {
            "name": "openai",
            "model": "gpt-fake",
            "replicas": [{"name": "openai-1", "region": "eu-west", "url": openai_url, "health": "Healthy"}],
        },
        endpoint(
            "vertex",
            "gemini",
            "gemini-fake",
            "vertex",
            "key.json",
            "europe-west4",
            providerSettings={"auth": "service-account", "project": "fake-project"},
        ),
    ]
    rules = [
        {"name": name, "match": {"models": [name]}, "targets": [{"endpoint": name, "weight": 100}]}
        for name in PROVIDERS
    ]
    rules.append(
        {"name": "plain", "match": {"models": ["plain"]}, "targets": [{"endpoint": "openai", "weight": 100}]}
    )
    rules.append(
        {
            "name": "chain",
            "match": {"models": ["chain"]},
            "targets": [{"endpoint": "openai", "weight": 100}],
            "fallback": ["azure", "anthropic"],
        }
    )
    rules.append(
        {
            "name": "native-chain",
            "match": {"models": ["native-chain"]},
            "targets": [{"endpoint": "anthropic", "weight": 100}],
            "fallback": ["bedrock"],
        }
    )
    rules.append(
        {
            "name": "cascade",
            "match": {"models": ["cascade"]},
            "targets": [{"endpoint": "openai", "weight": 100}],
            "escalation": ["bedrock"],
        }
    )
    policy = {
        "name": "natives",
        "virtualModels": sorted([*PROVIDERS, "plain", "chain", "cascade", "native-chain"]),
        "rules": rules,
        "resilience": {
            "maxAttempts": 3,
            "perTryTimeoutSeconds": 2.0,
            "deadlineSeconds": 5.0,
            "ejectAfterFailures": 2,
            "baseEjectionSeconds": 30.0,
            "escalateOn": ["error", "length"],
        },
    }
    data = {"namespace": "team-a", "endpoints": endpoints, "policies": [policy]}
    return RouterConfig.model_validate(data).seal()


@pytest.fixture
async def routed(
    start_sidecar: SidecarFactory,
    upstreams: dict[str, FakeUpstream],
    natives: dict[str, FakeNative],
    native_secrets: Path,
) -> Running:
    return await start_sidecar(native_config(upstreams["eu-1"].url, natives), secrets_dir=native_secrets)


@pytest.mark.parametrize("model", PROVIDERS)
async def test_chat_answers_streams_and_tools_through_each_provider(
    routed: Running, natives: dict[str, FakeNative], model: str
) -> None:
    client = routed.client()
    fake = natives[model]
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == f"Hello from {fake.name}"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == 12
    assert raw.headers["x-modelroute-endpoint"] == model
    assert raw.headers["x-modelroute-provider"] == {
        "azure": "azure-openai",
        "entra": "azure-openai",
        "vertex": "gemini",
    }.get(model, model)
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {fake.name} [0] [1] [2]"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert all(c.usage is None for c in chunks)  # not asked for: the sidecar's own usage chunk stays hidden
    usage_stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert [c.usage.prompt_tokens async for c in usage_stream if c.usage] == [12]

    first = [{"role": "user", "content": "weather in Paris?"}]
    called = await client.chat.completions.create(model=model, messages=first, tools=WEATHER)  # type: ignore[arg-type]
    calls = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "tool_calls"
    assert (
        calls
        and calls[0].function.name == "get_weather"
        and json.loads(calls[0].function.arguments) == {"city": "Paris"}
    )
    history: Any = [
        *first,
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    after = await client.chat.completions.create(model=model, messages=history, tools=WEATHER)
    assert after.choices[0].message.content == f"Hello from {fake.name}"
    streamed = await client.chat.completions.create(model=model, messages=first, tools=WEATHER, stream=True)  # type: ignore[arg-type]
    arguments, names = "", []
    async for chunk in streamed:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            arguments += delta.function.arguments or "" if delta.function else ""
            if delta.function and delta.function.name:
                names.append(delta.function.name)
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"}


async def test_native_requests_carry_the_provider_s_own_shape(
    routed: Running, natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    for model in ("anthropic", "bedrock", "gemini", "vertex", "azure"):
        await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_tokens=50,
            temperature=0.5,
            stop=["END"],
        )
    ant = natives["anthropic"].requests[-1]
    assert (
        ant.body["system"] == "be brief"
        and ant.body["max_tokens"] == 50
        and ant.body["stop_sequences"] == ["END"]
    )
    assert ant.headers["x-api-key"] == KEYS["anthropic"] and ant.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in ant.headers
    br = natives["bedrock"].requests[-1]
    assert br.path == "/model/anthropic.claude-v2%3A1/converse"
    assert br.body["system"] == [{"text": "be brief"}] and br.body["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.5,
        "stopSequences": ["END"],
    }
    assert "/eu-central-1/bedrock/aws4_request" in br.headers["authorization"]
    gem, vertex = natives["gemini"].requests[-2:]
    assert (
        gem.path == "/v1/models/gemini-fake:generateContent"
        and gem.headers["x-goog-api-key"] == KEYS["gemini"]
    )
    assert gem.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert (
        vertex.path
        == "/v1/projects/fake-project/locations/europe-west4/publishers/google/models/gemini-fake:generateContent"
    )
    assert vertex.headers["authorization"].startswith("Bearer ey") and "x-goog-api-key" not in vertex.headers
    az = natives["azure"].requests[-1]
    assert az.path == "/openai/deployments/gpt-4o-deploy/chat/completions?api-version=2024-10-21"
    assert az.headers["api-key"] == KEYS["azure-openai"]


async def test_what_a_provider_cannot_do_is_refused_before_the_call(
    routed: Running, natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    with pytest.raises(openai.BadRequestError) as json_mode:
        await client.chat.completions.create(
            model="anthropic",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"},
        )
    assert "JSON mode" in str(json_mode.value) and "anthropic" in str(json_mode.value)
    with pytest.raises(openai.BadRequestError) as logprobs:
        await client.chat.completions.create(
            model="bedrock", messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    assert "`logprobs` is not supported by provider bedrock" in str(logprobs.value)
    with pytest.raises(openai.BadRequestError) as embeddings:
        await client.embeddings.create(model="gemini", input="hi")
    assert "gemini" in str(embeddings.value) and "embeddings" in str(embeddings.value)
    assert (
        natives["anthropic"].requests == []
        and natives["bedrock"].requests == []
        and natives["gemini"].requests == []
    )
    answer = await client.chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert json.loads(answer.choices[0].message.content or "") == {"answer": "from gem"}


async def test_failover_crosses_providers_and_says_who_answered(
    routed: Running, upstreams: dict[str, FakeUpstream], natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    upstreams["eu-1"].set(fail_next=5, fail_status=503)
    natives["azure"].set(fail_next=5, fail_status=500)
    raw = await client.chat.completions.with_raw_response.create(
        model="chain", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from ant"
    assert (raw.headers["x-modelroute-endpoint"], raw.headers["x-modelroute-provider"]) == (
        "anthropic",
        "anthropic",
    )
    assert raw.headers["x-modelroute-attempts"] == "3"
    stream = await client.chat.completions.create(
        model="chain", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert (
        "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        == "Hello from ant [0] [1] [2]"
    )

    def audit() -> list[dict[str, Any]]:
        path = Path(routed.sidecar.settings.audit_log)
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    await eventually(
        lambda: len(audit()) >= 2 and audit()[0]["provider"] == "anthropic", what="the audit line"
    )
    lines = audit()
    assert [a["outcome"] for a in lines[0]["attempts"]] == ["upstream-5xx", "upstream-5xx", "ok"]


async def test_a_native_answer_of_the_wrong_shape_is_a_failed_attempt_that_fails_over(
    routed: Running, natives: dict[str, FakeNative]
) -> None:
    natives["anthropic"].set(wrong_shape=True)  # `content` a number: valid JSON, not a Messages answer
    raw = await routed.client().chat.completions.with_raw_response.create(
        model="native-chain", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from br"
    assert (raw.headers["x-modelroute-provider"], raw.headers["x-modelroute-attempts"]) == ("bedrock", "2")
    path = Path(routed.sidecar.settings.audit_log)

    def attempts() -> list[str]:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [a["outcome"] for a in lines[-1]["attempts"]] if lines else []

    await eventually(lambda: attempts() == ["upstream-protocol", "ok"], what="the audit line")


async def test_escalation_and_ejection_work_across_providers(
    routed: Running, upstreams: dict[str, FakeUpstream], natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    upstreams["eu-1"].set(finish_reason="length")
    raw = await client.chat.completions.with_raw_response.create(
        model="cascade", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from br"
    assert raw.headers["x-modelroute-provider"] == "bedrock"
    natives["azure"].set(
        fail_next=100, fail_status=503
    )  # chain: openai dies, azure fails twice, then is ejected
    upstreams["eu-1"].set(finish_reason="stop", fail_next=100, fail_status=503)
    for _ in range(3):
        answer = await client.chat.completions.create(
            model="chain", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "Hello from ant"
    assert routed.sidecar.ejections.is_ejected("azure", "azure-1")
    seen = len(natives["azure"].requests)
    await client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}])
    assert len(natives["azure"].requests) == seen  # ejected: not tried again


async def test_a_native_stream_cut_or_broken_ends_with_an_error_event(
    routed: Running, natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    for model, end in (
        ("anthropic", "error"),
        ("bedrock", "error"),
        ("gemini", "cut"),
        ("anthropic", "drop"),
    ):
        natives[model].set(stream_end=end, stream_cut_after=1)
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass
        natives[model].reset()


async def test_native_upstream_errors_come_back_in_the_openai_shape(
    routed: Running, natives: dict[str, FakeNative]
) -> None:
    client = routed.client()
    natives["gemini"].set(fail_next=1, fail_status=400)
    with pytest.raises(openai.BadRequestError) as failed:
        await client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])
    assert "gemini: gem failing on purpose" in failed.value.message


async def test_rotated_credentials_are_read_again_and_never_shown(
    routed: Running, natives: dict[str, FakeNative], native_secrets: Path
) -> None:
    client = routed.client()
    await client.chat.completions.create(model="anthropic", messages=[{"role": "user", "content": "hi"}])
    _write(native_secrets, "anthropic", "apiKey", "sk-ant-rotated-wrong")

    async def refused() -> bool:
        try:
            await client.chat.completions.create(
                model="anthropic", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.AuthenticationError as exc:
            shown.append(f"{exc.body} {exc.response.headers}")
            return True
        return False

    shown: list[str] = []
    await eventually(refused, within=10, what="the rotated (wrong) key to be used")
    assert "sk-ant" not in shown[0]
    _write(native_secrets, "anthropic", "apiKey", KEYS["anthropic"])

    async def served() -> bool:
        try:
            await client.chat.completions.create(
                model="anthropic", messages=[{"role": "user", "content": "hi"}]
            )
            return True
        except openai.AuthenticationError:
            return False

    await eventually(served, within=10, what="the rotated-back key to be used")
    _write(native_secrets, "aws", "keys.json", "not a key at all")

    async def credential_refused() -> bool:
        try:
            await client.chat.completions.create(
                model="bedrock", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            return "not a key" not in str(exc.body)
        return False

    await eventually(credential_refused, within=10, what="an unreadable AWS key to fail the attempt")


# --- the Anthropic SDK as a client of /v1/messages ------------------------------------------------------

TOOL: Any = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("model", ["plain", "anthropic", "bedrock", "gemini"])
async def test_anthropic_sdk_routes_through_v1_messages(routed: Running, model: str) -> None:
    name = {"plain": "eu-1", "anthropic": "ant", "bedrock": "br", "gemini": "gem"}[model]
    async with anthropic.AsyncAnthropic(api_key="unused", base_url=routed.url, max_retries=0) as client:
        raw = await client.messages.with_raw_response.create(
            model=model, max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hi"}]
        )
        message = await raw.parse()
        assert message.content[0].type == "text" and message.content[0].text == f"Hello from {name}"
        assert message.stop_reason == "end_turn" and message.model == model and message.usage.input_tokens > 0
        assert raw.headers["x-modelroute-endpoint"] == ("openai" if model == "plain" else model)
        async with client.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == f"Hello from {name} [0] [1] [2]"
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
        if model == "plain":
            return  # the OpenAI fake calls no tools
        tooled = await client.messages.create(
            model=model, max_tokens=100, tools=[TOOL], messages=[{"role": "user", "content": "weather?"}]
        )
        block = tooled.content[0]
        assert (
            tooled.stop_reason == "tool_use" and block.type == "tool_use" and block.input == {"city": "Paris"}
        )
        answered = await client.messages.create(
            model=model,
            max_tokens=100,
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": block.id,
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
                },
            ],
        )
        assert answered.content[0].type == "text" and answered.content[0].text == f"Hello from {name}"
        async with client.messages.stream(
            model=model, max_tokens=100, tools=[TOOL], messages=[{"role": "user", "content": "weather?"}]
        ) as stream:
            streamed = await stream.get_final_message()
        assert streamed.content[0].type == "tool_use" and streamed.content[0].input == {"city": "Paris"}


async def test_v1_messages_refusals_and_count_tokens(routed: Running) -> None:
    async with anthropic.AsyncAnthropic(api_key="unused", base_url=routed.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as thinking:
            await client.messages.create(
                model="plain",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
                thinking={"type": "enabled", "budget_tokens": 1024},
            )
        assert "thinking" in str(thinking.value)
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(
                model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        counted = await client.messages.count_tokens(
            model="plain", messages=[{"role": "user", "content": "hello there"}]
        )
        assert counted.input_tokens > 0


async def test_v1_messages_fields_of_the_wrong_type_are_400s_naming_the_field(routed: Running) -> None:
    base: dict[str, Any] = {
        "model": "plain",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    cases: list[tuple[str, dict[str, Any]]] = [
        ("stop_sequences", {"stop_sequences": 5}),
        ("tools", {"tools": "get_weather"}),
        ("tools.0.input_schema", {"tools": [{"name": "w", "input_schema": 3}]}),
        ("metadata", {"metadata": ["u1"]}),
        ("temperature", {"temperature": "warm"}),
        ("stream", {"stream": 1}),
        (
            "messages.0.content.0.source",
            {"messages": [{"role": "user", "content": [{"type": "image", "source": "x"}]}]},
        ),
    ]
    async with aiohttp.ClientSession() as session:
        for param, change in cases:
            for path in ("/v1/messages", "/v1/messages/count_tokens"):
                async with session.post(routed.url + path, json={**base, **change}) as response:
                    answer = await response.json()
                assert response.status == 400, (path, param, answer)
                assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
                assert f"`{param}`" in answer["error"]["message"], (path, answer)
    async with anthropic.AsyncAnthropic(api_key="unused", base_url=routed.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="plain",
                max_tokens=10,
                messages=[{"role": "user", "content": "hi"}],
                stop_sequences="END",  # type: ignore[arg-type]
            )
        assert "`stop_sequences` must be a list of strings" in str(refused.value)
