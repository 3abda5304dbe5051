"""extract_features: one pass over a parsed body and its headers gives everything the engine reads."""

from __future__ import annotations

from typing import Any

import pytest

from modelroute_sidecar.engine import extract_features
from modelroute_sidecar.engine.features import estimate_text_tokens


def chat(*contents: Any, **body: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": c} for c in contents], **body}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("x" * 401, 101)],
)
def test_text_tokens_are_a_quarter_of_the_characters_rounded_up(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens


@pytest.mark.parametrize(
    ("body", "api", "text", "tokens"),
    [
        # chat: ceil(len/4) per text, +3 per message, +3 for the reply primer
        (chat("abcdefgh"), "chat", "abcdefgh", 2 + 3 + 3),
        (chat("abcd", "efgh"), "chat", "abcd\nefgh", 1 + 1 + 3 * 2 + 3),
        (
            chat([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]),
            "chat",
            "look",
            1 + 85 + 3 + 3,
        ),
        (
            {
                "model": "auto",
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"function": {"name": "f", "arguments": '{"to": "a@b.eu"}'}}],
                    }
                ],
            },
            "chat",
            '{"to": "a@b.eu"}',
            4 + 3 + 3,
        ),
        ({"model": "auto", "messages": "not a list"}, "chat", "", 0),
        ({"model": "auto"}, "chat", "", 0),
        # completions: a string, strings, or token ids counted exactly
        ({"model": "auto", "prompt": "abcdefgh"}, "completions", "abcdefgh", 2),
        ({"model": "auto", "prompt": ["abcd", "efgh"]}, "completions", "abcd\nefgh", 2),
        ({"model": "auto", "prompt": [1, 2, 3]}, "completions", "", 3),
        # embeddings
        ({"model": "e", "input": "abcd"}, "embeddings", "abcd", 1),
        ({"model": "e", "input": [[1, 2], [3, 4, 5]]}, "embeddings", "", 5),
        ({"model": "e", "input": 42}, "embeddings", "", 0),
    ],
)
def test_prompt_text_and_token_estimate(body: dict[str, Any], api: Any, text: str, tokens: int) -> None:
    features = extract_features(body, {}, "r", api)
    assert (features.prompt_text, features.prompt_tokens) == (text, tokens)


@pytest.mark.parametrize(
    ("body", "headers", "metadata"),
    [
        ({}, {}, {}),
        ({"metadata": {"tenant": "acme", "n": 3}}, {}, {"tenant": "acme"}),
        ({"metadata": "junk"}, {}, {}),
        ({"metadata": {"tenant": "acme"}}, {"X-ModelRoute-Tenant": "globex"}, {"tenant": "globex"}),
        ({}, {"x-modelroute-tier": "gold", "x-other": "1"}, {"tier": "gold"}),
        # the data-class headers declare a class, they are not metadata
        ({}, {"x-modelroute-data-class": "pci"}, {}),
        (
            {},
            {"x-modelroute-task": "code", "x-modelroute-language": "de"},
            {"task": "code", "language": "de"},
        ),
    ],
)
def test_metadata_from_body_overridden_by_headers(
    body: dict[str, Any], headers: dict[str, str], metadata: dict[str, str]
) -> None:
    assert dict(extract_features(chat("x", **body), headers, "r", "chat").metadata) == metadata


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, None),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ({"max_tokens": 0}, None),
        ({"max_tokens": -5}, None),
        ({"max_tokens": True}, None),
        ({"max_tokens": "100"}, None),
    ],
)
def test_max_output_tokens(body: dict[str, Any], expected: int | None) -> None:
    assert extract_features(chat("x", **body), {}, "r", "chat").max_output_tokens == expected


@pytest.mark.parametrize(
    ("body", "stream", "tools", "json"),
    [
        ({}, False, False, False),
        ({"stream": True}, True, False, False),
        ({"stream": "true"}, False, False, False),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, False, True, False),
        ({"tools": []}, False, False, False),
        ({"functions": [{"name": "f"}]}, False, True, False),
        ({"response_format": {"type": "json_object"}}, False, False, True),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, False, False, True),
        ({"response_format": {"type": "text"}}, False, False, False),
        ({"response_format": "json_object"}, False, False, False),
    ],
)
def test_request_needs(body: dict[str, Any], stream: bool, tools: bool, json: bool) -> None:
    features = extract_features(chat("x", **body), {}, "r", "chat")
    assert (features.stream, features.needs_tools, features.needs_json) == (stream, tools, json)


@pytest.mark.parametrize(
    ("headers", "policy_header", "declared"),
    [
        ({}, None, None),
        ({"X-ModelRoute-Data-Class": " pci "}, None, "pci"),
        ({"x-modelroute-data-class": "  "}, None, None),
        ({"x-data-class": "pci"}, "X-Data-Class", "pci"),
        # both accepted; the policy's own header wins
        ({"x-modelroute-data-class": "public", "x-data-class": "pci"}, "x-data-class", "pci"),
        ({"x-modelroute-data-class": "pci"}, "x-data-class", "pci"),
        ({"x-data-class": "pci"}, None, None),
    ],
)
def test_declared_data_class(
    headers: dict[str, str], policy_header: str | None, declared: str | None
) -> None:
    features = extract_features(chat("x"), headers, "r", "chat", residency_header=policy_header)
    assert features.declared_data_class == declared
    assert "data-class" not in features.metadata


def test_identity_and_headers() -> None:
    features = extract_features(chat("x"), {"X-User": "u1", "Content-Type": "json"}, "req-9", "chat")
    assert (features.request_id, features.api, features.model) == ("req-9", "chat", "auto")
    assert dict(features.headers) == {"x-user": "u1", "content-type": "json"}


def test_a_model_that_is_not_a_string_is_empty() -> None:
    assert extract_features({"model": 5, "messages": []}, {}, "r", "chat").model == ""
