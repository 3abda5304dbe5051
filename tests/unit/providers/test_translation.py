"""The pure provider translations, on recorded native payloads (the shapes the providers' API references
and SDKs document): requests out, answers and streams back, errors, and what each cannot carry."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from modelroute_contract import ProviderSettings, provider_settings_problem
from modelroute_sidecar.providers import anthropic, bedrock, gemini
from modelroute_sidecar.providers.common import UnsupportedError

CHAT: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is in "},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "max_tokens": 64,
    "temperature": 0.2,
    "stop": "END",
}


def pieces(data: bytes, size: int = 7) -> list[bytes]:
    """A body cut at arbitrary places, as TCP delivers it."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def chunks_of(sse: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in sse.split(b"\n\n") if line.startswith(b"data: {")]


# --- Anthropic ---------------------------------------------------------------------------------------------


def test_a_chat_request_becomes_a_messages_request() -> None:
    request = anthropic.chat_to_messages(CHAT, "claude-x", 4096, stream=True)
    assert request["system"] == "be brief"
    assert request["max_tokens"] == 64 and request["stop_sequences"] == ["END"] and request["stream"] is True
    assert [t["role"] for t in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][0]["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
    assert request["messages"][1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]
    assert request["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                                                {"type": "text", "text": "thanks"}]
    assert request["tools"] == [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}]
    assert request["tool_choice"] == {"type": "auto"}
    assert anthropic.chat_to_messages({"model": "a", "messages": []}, "c", 4096, stream=False)["max_tokens"] == 4096


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 1}, "seed"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0]"),
    ],
)
def test_what_anthropic_cannot_carry_is_refused(change: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedError) as refused:
        anthropic.chat_to_messages({**CHAT, **change}, "claude", 100, stream=False)
    assert refused.value.param == param



def _assistant(**call: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": [call]}


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "assistant", "content": "x", "tool_calls": "abc"}, "messages[0].tool_calls"),
        ({"role": "assistant", "content": "x", "tool_calls": ["call"]}, "messages[0].tool_calls[0]"),
        (_assistant(id="c1", function="get_weather"), "messages[0].tool_calls[0].function"),
        (_assistant(id="c1", function={"name": {"a": 1}, "arguments": "{}"}), "messages[0].tool_calls[0].function.name"),
        (_assistant(id="c1", function={"name": "", "arguments": "{}"}), "messages[0].tool_calls[0].function.name"),
        (_assistant(id=["c1"], function={"name": "f", "arguments": "{}"}), "messages[0].tool_calls[0].id"),
        (_assistant(id="c1", function={"name": "f", "arguments": "[1, 2]"}), "messages[0].tool_calls[0].function.arguments"),
        ({"role": "tool", "tool_call_id": ["c1"], "content": "sunny"}, "messages[0].tool_call_id"),
    ],
)
@pytest.mark.parametrize("provider", ["anthropic", "bedrock", "gemini"])
def test_a_malformed_tool_call_is_refused_naming_its_field_by_every_provider(
    provider: str, message: dict[str, Any], param: str
) -> None:
    # Before, a non-string name went out as its str() (a call the client never meant) and a call that
    # was not an object raised AttributeError (a 500); every translation now shares one check.
    body = {"model": "m", "messages": [message]}
    translate = {
        "anthropic": lambda: anthropic.chat_to_messages(body, "claude", 100, stream=False),
        "bedrock": lambda: bedrock.chat_to_converse(body),
        "gemini": lambda: gemini.chat_to_gemini(body),
    }[provider]
    with pytest.raises(UnsupportedError) as refused:
        translate()
    assert refused.value.param == param


def test_a_tool_that_is_not_an_object_is_refused_naming_it() -> None:
    body = {**CHAT, "tools": [{"type": "function", "function": "get_weather"}]}
    with pytest.raises(UnsupportedError) as refused:
        anthropic.chat_to_messages(body, "claude", 100, stream=False)
    assert refused.value.param == "tools[0].function"


def test_an_upstream_answer_with_malformed_tool_calls_keeps_the_well_formed_ones() -> None:
    good = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    answer = {"choices": [{"message": {"content": "hi", "tool_calls": ["x", {"function": "y"}, good]}}]}
    content = anthropic.chat_to_message(answer, "m")["content"]
    assert content == [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert anthropic.chat_to_message({"choices": {"0": "x"}}, "m")["content"] == []

RECORDED_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 472, "output_tokens": 89, "cache_read_input_tokens": 10},
}


def test_a_messages_answer_becomes_a_chat_completion() -> None:
    chat = anthropic.message_to_chat(RECORDED_MESSAGE, "claude")
    message = chat["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"] == [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    assert chat["choices"][0]["finish_reason"] == "tool_calls"
    assert chat["usage"] == {"prompt_tokens": 482, "completion_tokens": 89, "total_tokens": 571}


RECORDED_STREAM = b"".join(
    f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    for kind, data in [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": None, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 15}}),
        ("message_stop", {"type": "message_stop"}),
    ]
)


def test_an_anthropic_stream_becomes_chat_chunks_whatever_its_pieces() -> None:
    translator = anthropic.MessagesToChatStream("claude")
    out = b"".join(translator.feed(p) for p in pieces(RECORDED_STREAM)) + translator.finish()
    assert out.endswith(b"data: [DONE]\n\n")
    chunks = chunks_of(out)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    arguments = "".join(
        call["function"].get("arguments") or ""
        for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or ()
    )
    assert text == "Hello" and json.loads(arguments) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["tool_calls"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_an_anthropic_error_event_becomes_an_openai_error_event() -> None:
    translator = anthropic.MessagesToChatStream("claude")
    out = translator.feed(b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n')
    assert chunks_of(out) == [{"error": {"message": "anthropic: Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}}]


def test_an_inbound_messages_request_becomes_a_chat_request() -> None:
    chat = anthropic.messages_to_chat({
        "model": "auto", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}], "stream": True,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                                         {"type": "text", "text": "and?"}]},
        ],
        "tools": [{"name": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["X"], "metadata": {"user_id": "u1"},
    })
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": '{"c":1}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "and?"},
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["stop"] == ["X"] and chat["user"] == "u1" and chat["stream_options"] == {"include_usage": True}


def _user(*blocks: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(blocks)}]}


def _assistant(*blocks: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": list(blocks)}]}


WRONG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("stop_sequences", {"stop_sequences": 5}),
    ("stop_sequences", {"stop_sequences": "END"}),
    ("stop_sequences", {"stop_sequences": ["END", 3]}),
    ("tools", {"tools": 5}),
    ("tools", {"tools": {"name": "w", "input_schema": {}}}),
    ("tools.0.input_schema", {"tools": [{"name": "w", "input_schema": "object"}]}),
    ("tools.0.name", {"tools": [{"name": 7, "input_schema": {}}]}),
    ("tools.0.description", {"tools": [{"name": "w", "description": ["d"], "input_schema": {}}]}),
    ("temperature", {"temperature": "hot"}),
    ("top_p", {"top_p": True}),
    ("stream", {"stream": "yes"}),
    ("metadata", {"metadata": "u1"}),
    ("metadata.user_id", {"metadata": {"user_id": 5}}),
    ("tool_choice.disable_parallel_tool_use", {"tool_choice": {"type": "auto", "disable_parallel_tool_use": "no"}}),
    ("system.0.text", {"system": [{"type": "text", "text": {"a": 1}}]}),
    ("messages.0.content.0.text", _user({"type": "text", "text": 5})),
    ("messages.0.content.0.source", _user({"type": "image", "source": "http://x/cat.png"})),
    ("messages.0.content.0.source.data", _user({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": 5}})),
    ("messages.0.content.0.source.url", _user({"type": "image", "source": {"type": "url", "url": ["x"]}})),
    ("messages.0.content.0.tool_use_id", _user({"type": "tool_result", "tool_use_id": 1, "content": "x"})),
    ("messages.0.content.0.is_error", _user({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"})),
    ("messages.1.content.0.text", _assistant({"type": "text", "text": None})),
    ("messages.1.content.0.input", _assistant({"type": "tool_use", "id": "t", "name": "w", "input": "{}"})),
    ("messages.1.content.0.id", _assistant({"type": "tool_use", "name": "w", "input": {}})),
    ("messages.1.content.0.name", _assistant({"type": "tool_use", "id": "t", "name": ["w"], "input": {}})),
]
"""(param, change): request fields of the wrong type in `/v1/messages`."""


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1000}}, "thinking"),
        ({"top_k": 5}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]}, "system.0.cache_control"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "messages.0.content.0"),
        # a field of the wrong type is a 400 naming it, never a crash or a silent coercion
        *((change, param) for param, change in WRONG_TYPES),
    ],
)
def test_what_the_chat_form_cannot_carry_is_refused_inbound(change: dict[str, Any], param: str) -> None:
    body = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(UnsupportedError) as refused:
        anthropic.messages_to_chat(body)
    assert refused.value.param == param


def test_chat_chunks_become_messages_events() -> None:
    encoder = anthropic.ChatToMessagesStream("auto")
    chunks = [
        {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "w", "arguments": '{"a"'}}]}, "finish_reason": None}]},
        {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]},
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
    ]
    sse = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    out = b"".join(encoder.feed(p) for p in pieces(sse, 11))
    events = [(block.split(b"\n")[0][7:].decode(), json.loads(block.split(b"\n")[1][6:])) for block in out.split(b"\n\n") if block]
    assert [kind for kind, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "content_block_start",
        "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]
    assert events[4][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "w", "input": {}}
    assert events[8][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                            "usage": {"input_tokens": 9, "output_tokens": 4}}


def test_errors_translate_both_ways() -> None:
    upstream = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert anthropic.error_to_openai(429, upstream) == {
        "error": {"message": "anthropic: slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_error"}
    }
    ours = b'{"error":{"message":"no such model","type":"invalid_request_error","code":"model_not_found"}}'
    assert anthropic.error_to_anthropic(404, ours) == {"type": "error", "error": {"type": "not_found_error", "message": "no such model"}}


# --- Bedrock -----------------------------------------------------------------------------------------------


def test_a_chat_request_becomes_a_converse_request() -> None:
    request = bedrock.chat_to_converse(CHAT)
    assert request["system"] == [{"text": "be brief"}]
    assert request["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2, "stopSequences": ["END"]}
    assert request["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": "iVBO"}}}
    assert request["messages"][1]["content"] == [{"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}]
    assert request["messages"][2]["content"][0] == {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}}
    assert request["toolConfig"] == {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather", "inputSchema": {"json": {"type": "object"}}}}],
                                     "toolChoice": {"auto": {}}}
    assert bedrock.path("anthropic.claude-3-5-sonnet-20240620-v1:0", True) == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    with pytest.raises(UnsupportedError, match="tool_choice"):
        bedrock.chat_to_converse({**CHAT, "tool_choice": "none"})
    with pytest.raises(UnsupportedError, match="data: URL"):
        bedrock.chat_to_converse({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]})


def test_a_converse_answer_and_stream_become_chat() -> None:
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": "Hi"}, {"toolUse": {"toolUseId": "t1", "name": "w", "input": {"a": 1}}}]}},
              "stopReason": "tool_use", "usage": {"inputTokens": 30, "outputTokens": 7, "totalTokens": 37}, "metrics": {"latencyMs": 300}}
    chat = bedrock.converse_to_chat(answer, "claude")
    assert chat["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"a":1}'}
    assert chat["choices"][0]["finish_reason"] == "tool_calls" and chat["usage"]["prompt_tokens"] == 30
    translator = bedrock.ConverseToChatStream("claude")
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": "max_tokens"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2}, "metrics": {"latencyMs": 1}}),
    ]
    out = b"".join(translator.event(kind, json.dumps(data).encode()) for kind, data in events)
    chunks = chunks_of(out)
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[3]["usage"]["completion_tokens"] == 2 and out.endswith(b"[DONE]\n\n")
    failed = translator.event("", b'{"message":"boom"}', "modelStreamErrorException")
    assert chunks_of(failed)[0]["error"]["code"] == "modelStreamErrorException"


def test_event_stream_frames_are_decoded_by_botocore() -> None:
    from tests.fakes.native import event_frame

    from modelroute_sidecar.providers.aws import EventFrames

    frame = event_frame({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    frames = EventFrames()
    got = [e for p in pieces(frame * 2, 5) for e in frames.feed(p)]
    assert got == [("messageStart", b'{"role":"assistant"}', "")] * 2
    with pytest.raises(ValueError, match="bad event-stream frame"):
        list(EventFrames().feed(frame[:-1] + b"\x00"))


def test_aws_keys_come_from_json_or_a_credentials_file_and_never_show() -> None:
    from modelroute_sidecar.providers.aws import AwsKeyError, parse_keys

    keys = parse_keys('{"accessKeyId": "AKID", "secretAccessKey": "SECRET", "sessionToken": "TOK"}')
    assert (keys.access_key_id, keys.session_token) == ("AKID", "TOK") and "SECRET" not in repr(keys)
    assert parse_keys("[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRET\n").secret_access_key == "SECRET"
    with pytest.raises(AwsKeyError) as refused:
        parse_keys('{"accessKeyId": "AKID-ONLY-SECRETISH"}')
    assert "SECRETISH" not in str(refused.value)


# --- Gemini ------------------------------------------------------------------------------------------------


def test_a_chat_request_becomes_a_generate_content_request() -> None:
    request = gemini.chat_to_gemini({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}})
    assert request["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in request["contents"]] == ["user", "model", "user"]
    assert request["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}
    assert request["contents"][1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
    assert request["contents"][2]["parts"][0] == {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
    assert request["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.2, "stopSequences": ["END"],
                                           "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
    assert request["tools"] == [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}, "description": "Weather"}]}]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert gemini.path("gemini-2.5-pro", False, "acme-ml", "europe-west4") == (
        "/v1/projects/acme-ml/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
    )
    with pytest.raises(UnsupportedError, match="tool_call_id"):
        gemini.chat_to_gemini({"model": "m", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]})


def test_a_gemini_answer_and_stream_become_chat() -> None:
    answer = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
              "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 3, "totalTokenCount": 11}, "modelVersion": "gemini-2.5-flash", "responseId": "r1"}
    chat = gemini.gemini_to_chat(answer, "gemini")
    assert chat["choices"][0]["finish_reason"] == "tool_calls"
    assert chat["choices"][0]["message"]["tool_calls"][0] == {"id": "call_0", "type": "function", "function": {"name": "w", "arguments": '{"a":1}'}}
    events = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "responseId": "r2"},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS", "index": 0}],
         "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2}},
    ]
    sse = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)
    translator = gemini.GeminiToChatStream("gemini")
    out = b"".join(translator.feed(p) for p in pieces(sse, 9)) + translator.finish()
    chunks = chunks_of(out)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["prompt_tokens"] == 4
    assert out.endswith(b"data: [DONE]\n\n")
    cut = gemini.GeminiToChatStream("gemini")
    assert b"[DONE]" not in cut.feed(b"data: " + orjson.dumps(events[0]) + b"\n\n") + cut.finish()  # no finish: incomplete
    assert gemini.error_to_openai(400, b'{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}')["error"]["code"] == "INVALID_ARGUMENT"


# --- the contract's rule of provider settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "settings", "credentials", "regions", "problem"),
    [
        ("openai", None, False, ["eu-west"], None),
        ("openai", ProviderSettings(), False, [], "providerSettings"),
        ("azure-openai", None, True, ["eu-west"], "providerSettings.apiVersion"),
        ("azure-openai", ProviderSettings(api_version="2024-10-21", auth="entra-token"), True, ["eu"], None),
        ("azure-openai", ProviderSettings(api_version="2024-10-21", auth="service-account"), True, [], "providerSettings.auth"),
        ("azure-openai", ProviderSettings(api_version="latest"), True, [], "providerSettings.apiVersion"),
        ("anthropic", None, False, [], "credentials"),
        ("anthropic", None, True, ["us-east"], None),
        ("bedrock", None, True, ["eu-central-1", "us-gov-west-1"], None),
        ("bedrock", None, True, ["eu-west"], "replicas[0].region"),
        ("bedrock", ProviderSettings(api_version="2023-06-01"), True, [], "providerSettings.apiVersion"),
        ("gemini", ProviderSettings(auth="service-account"), True, [], "providerSettings.project"),
        ("gemini", ProviderSettings(auth="service-account", project="acme-ml"), True, ["europe-west4"], None),
        ("gemini", ProviderSettings(auth="service-account", project="acme-ml"), True, ["eu"], "replicas[0].region"),
        ("gemini", ProviderSettings(project="acme-ml"), True, [], "providerSettings.project"),
        ("cohere", None, True, [], "provider"),
    ],
)
def test_provider_settings_are_checked_per_provider(
    provider: str, settings: ProviderSettings | None, credentials: bool, regions: list[str], problem: str | None
) -> None:
    found = provider_settings_problem(provider, settings, credentials, regions)
    assert (found[0] if found else None) == problem


# --- Hostile native answers -------------------------------------------------------------------------------


def test_an_sse_event_is_bounded_and_framed_the_same_whatever_its_pieces() -> None:
    from modelroute_sidecar.providers.common import MalformedAnswerError, SseReader
    from modelroute_sidecar.sse import MAX_HELD_BYTES

    stream = b'event: a\r\ndata: {"x": 1}\r\n\r\nevent: b\ndata: 2\n\ndata: 3'
    whole = SseReader()
    expected = [*whole.feed(stream), *whole.finish()]
    assert [name for name, _ in expected] == ["a", "b", ""]
    dripped = SseReader()  # one byte at a time: `\r\n` split across pieces too
    got = [event for i in range(len(stream)) for event in dripped.feed(stream[i : i + 1])]
    assert [*got, *dripped.finish()] == expected
    endless = SseReader()
    piece = b"data: " + b"x" * 4090
    for _ in range(MAX_HELD_BYTES // len(piece)):  # an event that never ends, with or without line ends
        assert list(endless.feed(piece)) == []
    with pytest.raises(MalformedAnswerError, match="longer than"):
        list(endless.feed(piece))
    with pytest.raises(MalformedAnswerError, match="longer than"):
        list(SseReader().feed(b"data: x\n" * (MAX_HELD_BYTES // 8 + 1)))


def test_every_kind_of_event_end_is_found_wherever_the_pieces_are_cut() -> None:
    from modelroute_sidecar.providers.common import SseReader

    # each mix of `\r\n` and `\n` that ends an event, then a long event sent a line at a time
    stream = b"data: 1\r\n\r\ndata: 2\n\r\ndata: 3\r\n\ndata: 4\n\nevent: e\r\ndata: 5\r\n\r\n"
    expected = [("", b"1"), ("", b"2"), ("", b"3"), ("", b"4"), ("e", b"5")]
    assert list(SseReader().feed(stream)) == expected
    for i in range(len(stream)):
        for j in range(i, len(stream)):
            reader = SseReader()
            got = [event for piece in (stream[:i], stream[i:j], stream[j:]) for event in reader.feed(piece)]
            assert got == expected, (i, j)
    lines = SseReader()
    assert [event for _ in range(1000) for event in lines.feed(b"data: x\n")] == []
    assert list(lines.feed(b"\n")) == [("", b"\n".join([b"x"] * 1000))]


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("anthropic", {"content": 5, "stop_reason": "end_turn"}),
        ("anthropic", {"content": [{"type": "text", "text": "hi"}], "usage": "none"}),
        ("gemini", {"candidates": {"0": "x"}}),
        ("bedrock", {"output": {"message": "not an object"}, "stopReason": "end_turn"}),
        ("bedrock", {"output": {"message": {"content": [{"text": "hi"}]}}, "usage": {"inputTokens": "a"}}),
    ],
)
def test_a_native_answer_of_the_wrong_shape_is_malformed_not_a_crash(provider: str, body: Any) -> None:
    from modelroute_sidecar.providers import Natives
    from modelroute_sidecar.providers.common import MalformedAnswerError

    natives = Natives()
    with pytest.raises(MalformedAnswerError, match=f"the {provider} answer is malformed") as raised:
        natives.answer(provider, 200, orjson.dumps(body), {}, "m")
    assert "not an object" not in str(raised.value) and "none" not in str(
        raised.value
    )  # the class of the error, never the upstream's bytes


def test_a_secret_with_a_percent_sign_is_read_as_written() -> None:
    from modelroute_sidecar.providers.aws import parse_keys

    keys = parse_keys("aws_access_key_id = AKID\naws_secret_access_key = ab%cd%%ef\n")
    assert keys.secret_access_key == "ab%cd%%ef"
