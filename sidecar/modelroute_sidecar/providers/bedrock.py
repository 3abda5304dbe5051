"""Amazon Bedrock's Converse API: OpenAI chat requests to a `bedrock` endpoint, and its answers, streams
(decoded from AWS event-stream frames by `aws.EventFrames`) and errors back.

Messages become Converse `messages` of content blocks, system and developer messages `system` blocks;
tool calls become `toolUse` blocks and tool messages `toolResult` blocks of a user turn; images must be
`data:` URLs (Converse takes bytes, not URLs). JSON mode, `n` > 1, logprobs, seeds, penalties and
`tool_choice: none` have no Converse counterpart: refused (`UnsupportedError`).

Paths: `/model/<model id>/converse` and `/converse-stream`, the model id percent-encoded as boto3 does.
Pure; the signing is `aws.sign`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from .common import (
    DONE,
    ChunkWriter,
    UnsupportedError,
    append_turn,
    arguments_text,
    check_fields,
    completion,
    data_url,
    error_event,
    error_type_for,
    loads_object,
    max_tokens_of,
    openai_error,
    stops_of,
    text_of,
    tool_call_id_of,
    tool_calls_of,
    tool_name_of,
)

CARRIED = frozenset(
    {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice", "user"}
)
"""OpenAI chat fields this translation carries (`user` is the router's to read; Converse has none)."""

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def path(model: str, stream: bool) -> str:
    """The Converse path of `model`."""
    return f"/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


def chat_to_converse(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request."""
    check_fields(body, CARRIED, "bedrock")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise UnsupportedError("response_format", "is not supported by provider bedrock (no JSON mode)")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise UnsupportedError("messages", "must be a list")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UnsupportedError(where, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append({"text": text_of(message.get("content"), f"{where}.content")})
        elif role == "user":
            append_turn(turns, "user", "content", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            text = text_of(message.get("content"), f"{where}.content")
            if text:
                blocks.append({"text": text})
            for j, (call_id, name, arguments) in enumerate(tool_calls_of(message, where)):
                blocks.append(
                    {"toolUse": {"toolUseId": call_id or f"tooluse_{j}", "name": name, "input": arguments}}
                )
            append_turn(turns, "assistant", "content", blocks or [{"text": ""}])
        elif role == "tool":
            result = {
                "toolUseId": tool_call_id_of(message, where),
                "content": [{"text": text_of(message.get("content"), f"{where}.content")}],
            }
            append_turn(turns, "user", "content", [{"toolResult": result}])
        else:
            raise UnsupportedError(f"{where}.role", f"{role!r} is not supported by provider bedrock")
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = system
    config: dict[str, Any] = {}
    limit = max_tokens_of(body)
    if limit is not None:
        config["maxTokens"] = limit
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stops = stops_of(body)
    if stops:
        config["stopSequences"] = stops
    if config:
        request["inferenceConfig"] = config
    if body.get("tools"):
        tools = [
            {
                "toolSpec": {
                    "name": name,
                    **({"description": description} if description else {}),
                    "inputSchema": {"json": schema},
                }
            }
            for name, description, schema in (tool_name_of(t, i) for i, t in enumerate(body["tools"]))
        ]
        tool_config: dict[str, Any] = {"tools": tools}
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            tool_config["toolChoice"] = choice
        request["toolConfig"] = tool_config
    elif body.get("tool_choice") is not None:
        raise UnsupportedError("tool_choice", "needs tools")
    return request


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            inline = data_url(str((part.get("image_url") or {}).get("url", "")))
            if inline is None or inline[0] not in IMAGE_FORMATS:
                raise UnsupportedError(
                    f"{where}[{i}].image_url.url",
                    "must be a data: URL of a png, jpeg, gif or webp image for provider bedrock",
                )
            blocks.append({"image": {"format": IMAGE_FORMATS[inline[0]], "source": {"bytes": inline[1]}}})
        else:
            raise UnsupportedError(f"{where}[{i}]", f"a {kind!r} part is not supported by provider bedrock")
    return blocks


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"tool": {"name": choice["function"]["name"]}}
    raise UnsupportedError("tool_choice", "must be auto, required or a named function for provider bedrock")


def request_body(body: Mapping[str, Any]) -> bytes:
    """The Converse request body for an OpenAI chat body."""
    return orjson.dumps(chat_to_converse(body))


def _blocks(blocks: Any) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks or ():
        if not isinstance(block, dict):
            continue
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"] or {}
            calls.append(
                {
                    "id": str(use.get("toolUseId") or ""),
                    "type": "function",
                    "function": {
                        "name": str(use.get("name") or ""),
                        "arguments": arguments_text(use.get("input")),
                    },
                }
            )
    return "".join(texts), calls


def converse_to_chat(answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A Converse answer as an OpenAI chat completion."""
    message = (answer.get("output") or {}).get("message") or {}
    text, calls = _blocks(message.get("content"))
    usage = answer.get("usage") or {}
    return completion(
        "bedrock",
        model,
        text if text or not calls else None,
        calls,
        FINISH.get(str(answer.get("stopReason")), "stop"),
        int(usage.get("inputTokens") or 0) + int(usage.get("cacheReadInputTokens") or 0),
        int(usage.get("outputTokens") or 0),
    )


def error_to_openai(status: int, body: bytes, error_type: str = "") -> dict[str, Any]:
    """A Bedrock error (`{"message"}` with the `x-amzn-errortype` header) as an OpenAI error body."""
    parsed = loads_object(body)
    message = str(parsed.get("message") or parsed.get("Message") or f"HTTP {status}")
    code = error_type.split(":")[0] or None
    return openai_error(f"bedrock: {message}", error_type_for(status), code)


class ConverseToChatStream:
    """ConverseStream events (decoded frames: event type, payload) to OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self._out = ChunkWriter("bedrock", model)
        self._tools: dict[int, int] = {}
        self._finished = False

    def event(self, kind: str, payload: bytes, exception: str = "") -> bytes:
        """One event; `exception` is the `:exception-type` of an exception frame."""
        data = loads_object(payload)
        if exception:
            return error_event(f"bedrock: {data.get('message', exception)}", "server_error", exception)
        if kind == "messageStart":
            return self._out.delta({"role": "assistant", "content": ""})
        if kind == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = self._tools[int(data.get("contentBlockIndex") or 0)] = len(self._tools)
                call = {
                    "index": index,
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {"name": use.get("name"), "arguments": ""},
                }
                return self._out.delta({"tool_calls": [call]})
            return b""
        if kind == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return self._out.delta({"content": str(delta["text"])})
            use = delta.get("toolUse")
            if isinstance(use, dict):
                index = self._tools.get(int(data.get("contentBlockIndex") or 0), 0)
                return self._out.delta(
                    {"tool_calls": [{"index": index, "function": {"arguments": str(use.get("input", ""))}}]}
                )
            return b""
        if kind == "messageStop":
            self._finished = True
            return self._out.delta({}, FINISH.get(str(data.get("stopReason")), "stop"))
        if kind == "metadata":
            usage = data.get("usage") or {}
            return (
                self._out.usage(int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0))
                + DONE
            )
        return b""  # contentBlockStop


def image_bytes(data: str) -> bytes:
    """The bytes of a base64 image (for tests that check what a Converse request carries)."""
    return base64.b64decode(data)
