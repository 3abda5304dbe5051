"""The pure parts of the OpenAI API edges: what a Responses API request looks like to the engine, when a
Responses stream is complete, which headers cross the proxy each way, and the retry advice per error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelroute_contract.config import Capabilities
from modelroute_operator.logic.resources import Capabilities as CapabilitiesSpec
from modelroute_sidecar.engine import extract_features
from modelroute_sidecar.errors import ApiError, error_response, should_retry
from modelroute_sidecar.proxy import forwarded_headers, read_usage, relayed_headers
from modelroute_sidecar.sse import StreamScanner


def responses(**body: Any) -> dict[str, Any]:
    return {"model": "auto", **body}


@pytest.mark.parametrize(
    ("body", "text", "tokens"),
    [
        # a string input is one user message: ceil(len/4) + 3 per message + 3 for the reply primer
        (responses(input="abcdefgh"), "abcdefgh", 2 + 3 + 3),
        (responses(instructions="be brief", input="abcd"), "be brief\nabcd", 2 + 1 + 3 + 3),
        # items: messages read as chat messages; a tool's result and a tool call's arguments are text too
        (
            responses(
                input=[
                    {"role": "user", "content": [{"type": "input_text", "text": "abcd"}]},
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"q":1}'},
                    {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                ]
            ),
            'abcd\n{"q":1}\nok',
            1 + 2 + 1 + 3 + 3,
        ),
        (responses(previous_response_id="resp_1"), "", 0),
    ],
)
def test_responses_prompt_text_and_tokens(body: dict[str, Any], text: str, tokens: int) -> None:
    features = extract_features(body, {}, "r", "responses")
    assert (features.prompt_text, features.prompt_tokens) == (text, tokens)


@pytest.mark.parametrize(
    ("body", "tools", "json_mode", "max_output"),
    [
        (responses(input="x"), False, False, None),
        (responses(input="x", tools=[{"type": "function", "name": "f"}]), True, False, None),
        (
            responses(input="x", text={"format": {"type": "json_schema", "name": "a", "schema": {}}}),
            False,
            True,
            None,
        ),
        (responses(input="x", text={"format": {"type": "text"}}), False, False, None),
        (responses(input="x", max_output_tokens=64), False, False, 64),
    ],
)
def test_responses_needs(body: dict[str, Any], tools: bool, json_mode: bool, max_output: int | None) -> None:
    features = extract_features(body, {}, "r", "responses")
    assert (features.needs_tools, features.needs_json, features.max_output_tokens) == (
        tools,
        json_mode,
        max_output,
    )


def sse(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **fields}).encode() + b"\n\n"


USAGE = {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
CREATED = sse("response.created", response={"status": "in_progress", "error": None, "usage": None})
DELTA = sse("response.output_text.delta", delta='say "error" or [DONE]')


@pytest.mark.parametrize(
    ("events", "complete", "error", "usage"),
    [
        ([CREATED, DELTA, sse("response.completed", response={"usage": USAGE})], True, False, (9, 4)),
        # cut at max_output_tokens: whole, like finish_reason `length`
        ([CREATED, sse("response.incomplete", response={"usage": USAGE})], True, False, (9, 4)),
        ([CREATED, DELTA], False, False, None),
        ([CREATED, sse("error", code="engine_dead", message="x")], False, True, None),
        ([CREATED, sse("response.failed", response={"error": {"code": "x"}})], False, True, None),
        ([CREATED, b'data: {"error": {"message": "broke"}}\n\n'], False, True, None),
    ],
)
def test_a_responses_stream_is_complete_at_its_terminal_event(
    events: list[bytes], complete: bool, error: bool, usage: tuple[int, int] | None
) -> None:
    scanner = StreamScanner(responses=True, hide_usage=True)
    body = b"".join(events)
    relayed = b"".join(scanner.feed(body[i : i + 7]) for i in range(0, len(body), 7)) + scanner.finish()
    assert relayed == body  # nothing dropped, nothing added
    assert (scanner.complete, scanner.error, scanner.usage) == (complete, error, usage)
    assert not scanner.done or complete  # a `[DONE]` in the text of a delta is not the end


def test_a_chat_stream_scanner_ignores_responses_terminal_events() -> None:
    scanner = StreamScanner()
    scanner.feed(sse("response.completed", response={"usage": USAGE}))
    assert not scanner.complete


def test_usage_of_a_responses_answer_is_read() -> None:
    body = json.dumps({"object": "response", "usage": USAGE}).encode()
    assert read_usage(body, None) == (9, 4)
    assert read_usage(body, json.loads(body)) == (9, 4)


def test_only_scoping_and_trace_headers_go_upstream() -> None:
    client = {
        "openai-organization": "org-1",
        "openai-project": "p",
        "openai-beta": "assistants=v2",
        "traceparent": "00-a-b-01",
        "tracestate": "k=v",
        "cookie": "session=1",
        "x-modelroute-tenant": "acme",
        "user-agent": "OpenAI/Python",
    }
    assert forwarded_headers(client) == {
        k: client[k]
        for k in ("openai-organization", "openai-project", "openai-beta", "traceparent", "tracestate")
    }


def test_rate_limit_headers_and_the_upstream_request_id_come_back() -> None:
    upstream = {
        "content-type": "application/json",
        "x-ratelimit-remaining-tokens": "999",
        "x-ratelimit-reset-requests": "1s",
        "x-request-id": "req_abc",
        "set-cookie": "a=b",
        "openai-organization": "org-1",
    }
    assert relayed_headers(upstream) == {
        "x-ratelimit-remaining-tokens": "999",
        "x-ratelimit-reset-requests": "1s",
        "x-modelroute-upstream-request-id": "req_abc",
    }


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (502, "upstream_error", "false"),  # after the router's own attempts
        (503, "no_healthy_endpoint", "false"),
        (503, "no_compliant_endpoint", "false"),  # residency: a retry meets the same refusal
        (504, "deadline_exceeded", "false"),
        (500, "internal_error", "false"),
        (503, "not_ready", "true"),  # nothing attempted yet
        (503, "too_many_connections", "true"),
        (429, "rate_limit_exceeded", "true"),  # paced by retry-after
        (429, "upstream_rate_limited", "true"),
        (400, "invalid_request", None),  # the SDK's own rule: not retried
        (404, "model_not_found", None),
    ],
)
def test_retry_advice(status: int, code: str, advice: str | None) -> None:
    error = ApiError(status, code, "m")
    assert should_retry(error) == (None if advice is None else advice == "true")
    assert error_response(error, "r").headers.get("x-should-retry") == advice


def test_tools_and_json_mode_are_on_by_default_on_both_sides_of_the_contract() -> None:
    spec, compiled = CapabilitiesSpec(), Capabilities()
    assert (spec.tools, spec.json_mode, compiled.tools, compiled.json_mode) == (True, True, True, True)
