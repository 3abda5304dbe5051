"""The native fakes are faithful: each provider's official Python SDK talks to its fake (answer, stream,
tools, errors), so a sidecar test against a fake is a test against what the provider speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import boto3
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.fakes.native import KEYS, FakeNative

TOOL = {"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture
async def native() -> AsyncIterator[dict[str, FakeNative]]:
    fakes = {
        "azure-openai": await FakeNative("azure-openai", "az").start(),
        "anthropic": await FakeNative("anthropic", "ant").start(),
        "bedrock": await FakeNative("bedrock", "br", region="eu-central-1").start(),
        "gemini": await FakeNative("gemini", "gem").start(),
    }
    yield fakes
    for fake in fakes.values():
        await fake.stop()


async def test_anthropic_sdk_talks_to_the_fake(native: dict[str, FakeNative]) -> None:
    fake = native["anthropic"]
    async with anthropic.AsyncAnthropic(api_key=KEYS["anthropic"], base_url=fake.url, max_retries=0) as client:
        message = await client.messages.create(
            model="claude-x", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].type == "text" and message.content[0].text == "Hello from ant"
        assert message.usage.input_tokens == 12 and message.stop_reason == "end_turn"
        async with client.messages.stream(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "Hello from ant [0] [1] [2]" and final.stop_reason == "end_turn"
        tooled = await client.messages.create(
            model="claude-x", max_tokens=100, tools=[TOOL], messages=[{"role": "user", "content": "weather?"}]  # type: ignore[list-item]
        )
        assert tooled.stop_reason == "tool_use"
        block = tooled.content[0]
        assert block.type == "tool_use" and block.input == {"city": "Paris"}
        async with client.messages.stream(
            model="claude-x", max_tokens=100, tools=[TOOL], messages=[{"role": "user", "content": "weather?"}]  # type: ignore[list-item]
        ) as stream:
            streamed = await stream.get_final_message()
        assert streamed.content[0].type == "tool_use" and streamed.content[0].input == {"city": "Paris"}
        fake.set(fail_next=1, fail_status=529)
        with pytest.raises(anthropic.APIStatusError) as failed:
            await client.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert failed.value.status_code == 529
    async with anthropic.AsyncAnthropic(api_key="wrong", base_url=fake.url, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def _bedrock(fake: FakeNative) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="eu-central-1",
        endpoint_url=fake.url,
        aws_access_key_id=KEYS["bedrock"],
        aws_secret_access_key="fake-secret",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


async def test_boto3_bedrock_runtime_talks_to_the_fake(native: dict[str, FakeNative]) -> None:
    fake = native["bedrock"]
    client = _bedrock(fake)
    messages = [{"role": "user", "content": [{"text": "hi"}]}]

    def calls() -> dict[str, Any]:
        answer = client.converse(modelId="anthropic.claude-v2:1", messages=messages, system=[{"text": "brief"}])
        events = list(client.converse_stream(modelId="anthropic.claude-v2:1", messages=messages)["stream"])
        tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": TOOL["input_schema"]}}}]}
        tooled = client.converse(modelId="m", messages=messages, toolConfig=tools)
        tool_events = list(client.converse_stream(modelId="m", messages=messages, toolConfig=tools)["stream"])
        return {"answer": answer, "events": events, "tooled": tooled, "tool_events": tool_events}

    got = await asyncio.to_thread(calls)
    assert got["answer"]["output"]["message"]["content"][0]["text"] == "Hello from br"
    assert got["answer"]["usage"]["inputTokens"] == 12
    assert fake.requests[0].path == "/model/anthropic.claude-v2%3A1/converse"
    kinds = [next(iter(event)) for event in got["events"]]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
    assert got["tooled"]["stopReason"] == "tool_use"
    assert got["tooled"]["output"]["message"]["content"][0]["toolUse"]["input"] == {"city": "Paris"}
    assert "contentBlockStart" in [next(iter(e)) for e in got["tool_events"]]
    fake.set(fail_next=1, fail_status=429)
    with pytest.raises(ClientError) as failed:
        await asyncio.to_thread(client.converse, modelId="m", messages=messages)
    assert failed.value.response["Error"]["Code"] == "ThrottlingException"
    fake.set(stream_end="error", stream_cut_after=1)
    with pytest.raises(Exception, match=r"modelStreamErrorException|broke"):
        await asyncio.to_thread(lambda: list(client.converse_stream(modelId="m", messages=messages)["stream"]))


async def test_google_genai_talks_to_the_fake(native: dict[str, FakeNative]) -> None:
    fake = native["gemini"]
    client = genai.Client(api_key=KEYS["gemini"], http_options=genai_types.HttpOptions(base_url=fake.url))
    answer = await client.aio.models.generate_content(
        model="gemini-2.5-flash",
        contents="hi",
        config=genai_types.GenerateContentConfig(system_instruction="brief", max_output_tokens=50),
    )
    assert answer.text == "Hello from gem" and answer.usage_metadata is not None
    assert answer.usage_metadata.prompt_token_count == 12
    pieces = [chunk.text async for chunk in await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")]
    assert "".join(p or "" for p in pieces) == "Hello from gem [0] [1] [2]"
    tool = genai_types.Tool(function_declarations=[genai_types.FunctionDeclaration(name="get_weather", parameters_json_schema=TOOL["input_schema"])])
    tooled = await client.aio.models.generate_content(
        model="gemini-2.5-flash", contents="weather?", config=genai_types.GenerateContentConfig(tools=[tool], automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True))
    )
    assert tooled.function_calls and tooled.function_calls[0].args == {"city": "Paris"}
    fake.set(fail_next=1, fail_status=429)
    with pytest.raises(genai_errors.ClientError) as failed:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert failed.value.code == 429
    bad = genai.Client(api_key="wrong", http_options=genai_types.HttpOptions(base_url=fake.url))
    with pytest.raises(genai_errors.ClientError):
        await bad.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")


async def test_openai_sdk_azure_client_talks_to_the_fake(native: dict[str, FakeNative]) -> None:
    fake = native["azure-openai"]
    async with openai.AsyncAzureOpenAI(
        api_key=KEYS["azure-openai"], api_version="2024-10-21", azure_endpoint=fake.url, max_retries=0
    ) as client:
        answer = await client.chat.completions.create(model="gpt-4o-deploy", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "Hello from az"
        assert fake.requests[-1].path.startswith("/openai/deployments/gpt-4o-deploy/chat/completions?api-version=")
        tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL["input_schema"]}}]
        tooled = await client.chat.completions.create(model="gpt-4o-deploy", messages=[{"role": "user", "content": "w"}], tools=tools)
        calls = tooled.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        stream = await client.chat.completions.create(model="gpt-4o-deploy", messages=[{"role": "user", "content": "hi"}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello from az [0] [1] [2]"
    async with openai.AsyncAzureOpenAI(api_key="wrong", api_version="2024-10-21", azure_endpoint=fake.url, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="d", messages=[{"role": "user", "content": "hi"}])
