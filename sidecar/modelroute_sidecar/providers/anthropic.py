"""Anthropic's Messages API, both ways: an OpenAI chat request to an `anthropic` endpoint (and its answer,
stream and errors back), and the inbound `POST /v1/messages` served through the OpenAI chat form.

Outbound: system and developer messages become `system`; tool calls become `tool_use` blocks and tool
messages `tool_result` blocks of a user turn; images travel as base64 or URL sources; `max_tokens` is
required by Anthropic, so the endpoint's output limit is sent when the client names none. JSON mode,
`n` > 1, logprobs, seeds and penalties have no Anthropic counterpart: refused (`UnsupportedError`).

Inbound: the reverse mapping; what the OpenAI form cannot carry (`thinking`, `cache_control`, `top_k`,
documents, server tools) is refused with Anthropic's own 400 error shape, never dropped.

Streams: Anthropic's typed events (`message_start` ... `message_stop`) become OpenAI chunks with a final
usage chunk and `[DONE]`; OpenAI chunks become Anthropic's events (`ChatToMessagesStream`). Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .common import (
    DONE,
    ChunkWriter,
    Outbound,
    SseReader,
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
    tool_arguments,
    tool_call_id_of,
    tool_calls_of,
    tool_name_of,
)

DEFAULT_VERSION = "2023-06-01"
"""The `anthropic-version` sent when the endpoint names none (the one Anthropic's SDKs send)."""

CARRIED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "user",
        "parallel_tool_calls",
    }
)
"""OpenAI chat fields this translation carries to the Messages API."""

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
"""Anthropic's stop reasons as OpenAI finish reasons."""
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
"""OpenAI finish reasons as Anthropic stop reasons (`function_call`, the legacy name, as `tool_use`)."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# ------------------------------------------------------------------------- outbound: OpenAI -> Anthropic


def chat_to_messages(
    body: Mapping[str, Any], model: str, default_max_tokens: int, stream: bool
) -> dict[str, Any]:
    """An OpenAI chat request as a Messages API request for `model`."""
    check_fields(body, CARRIED, "anthropic")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise UnsupportedError("response_format", "is not supported by provider anthropic (no JSON mode)")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise UnsupportedError("messages", "must be a list")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UnsupportedError(where, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_of(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            append_turn(turns, "user", "content", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            append_turn(turns, "assistant", "content", _assistant_blocks(message, where))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": tool_call_id_of(message, where),
                "content": text_of(message.get("content"), f"{where}.content"),
            }
            append_turn(turns, "user", "content", [block])
        else:
            raise UnsupportedError(f"{where}.role", f"{role!r} is not supported by provider anthropic")
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens_of(body) or default_max_tokens,
        "messages": turns,
    }
    if system:
        request["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            request[name] = body[name]
    stops = stops_of(body)
    if stops:
        request["stop_sequences"] = stops
    if body.get("tools"):
        request["tools"] = [
            {"name": name, "description": description, "input_schema": schema}
            if description
            else {"name": name, "input_schema": schema}
            for name, description, schema in (tool_name_of(t, i) for i, t in enumerate(body["tools"]))
        ]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        request["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    if stream:
        request["stream"] = True
    return request


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of parts")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            inline = data_url(url)
            source = (
                {"type": "base64", "media_type": inline[0], "data": inline[1]}
                if inline
                else {"type": "url", "url": url}
            )
            blocks.append({"type": "image", "source": source})
        else:
            raise UnsupportedError(f"{where}[{i}]", f"a {kind!r} part is not supported by provider anthropic")
    return blocks


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of(message.get("content"), f"{where}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    for j, (call_id, name, arguments) in enumerate(tool_calls_of(message, where)):
        blocks.append({"type": "tool_use", "id": call_id or f"toolu_{j}", "name": name, "input": arguments})
    return blocks or [{"type": "text", "text": ""}]


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    result: dict[str, Any]
    if choice in (None, "auto"):
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise UnsupportedError("tool_choice", "must be auto, none, required or a named function")
    if parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def outbound(
    body: Mapping[str, Any], model: str, default_max_tokens: int, stream: bool, key: str, version: str
) -> Outbound:
    """The Messages API request for an OpenAI chat body."""
    payload = orjson.dumps(chat_to_messages(body, model, default_max_tokens, stream))
    headers = {
        "content-type": "application/json",
        "x-api-key": key,
        "anthropic-version": version or DEFAULT_VERSION,
    }
    if stream:
        headers["accept"] = "text/event-stream"
    return Outbound("/v1/messages", payload, headers)


def message_to_chat(answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A Messages API answer as an OpenAI chat completion."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in answer.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
    usage = answer.get("usage") or {}
    return completion(
        str(answer.get("id") or "msg"),
        str(answer.get("model") or model),
        "".join(texts) if texts or not calls else None,
        calls,
        FINISH.get(str(answer.get("stop_reason")), "stop"),
        _input_tokens(usage),
        int(usage.get("output_tokens") or 0),
    )


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(block.get("id") or ""),
        "type": "function",
        "function": {"name": str(block.get("name") or ""), "arguments": arguments_text(block.get("input"))},
    }


def _input_tokens(usage: Mapping[str, Any]) -> int:
    """Prompt tokens, cached ones included (Anthropic counts them apart from `input_tokens`)."""
    return sum(
        int(usage.get(name) or 0)
        for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )


def error_to_openai(status: int, body: bytes) -> dict[str, Any]:
    """An Anthropic error answer as an OpenAI error body."""
    error = loads_object(body).get("error") or {}
    message = str(error.get("message") or body[:200].decode("utf-8", "replace") or f"HTTP {status}")
    return openai_error(f"anthropic: {message}", error_type_for(status), str(error.get("type") or "") or None)


class MessagesToChatStream:
    """Anthropic stream events to OpenAI chunks (`feed` upstream bytes, `finish` at the body's end)."""

    def __init__(self, model: str) -> None:
        self._sse = SseReader()
        self._out = ChunkWriter("msg", model)
        self._tools: dict[int, int] = {}
        """Anthropic content block index -> OpenAI tool call index."""
        self._input = 0
        self._output = 0

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(name, data) for name, data in self._sse.feed(data))

    def finish(self) -> bytes:
        return b"".join(self._event(name, data) for name, data in self._sse.finish())

    def _event(self, name: str, data: bytes) -> bytes:
        event = loads_object(data)
        kind = event.get("type") or name
        if kind == "message_start":
            message = event.get("message") or {}
            self._out.answer_id = str(message.get("id") or "msg")
            self._out.model = str(message.get("model") or self._out.model)
            usage = message.get("usage") or {}
            self._input = _input_tokens(usage)
            self._output = int(usage.get("output_tokens") or 0)
            return self._out.delta({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[int(event.get("index") or 0)] = len(self._tools)
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._out.delta({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                return self._out.delta({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._out.delta({"content": str(delta.get("text", ""))})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(event.get("index") or 0), 0)
                piece = {"index": index, "function": {"arguments": str(delta.get("partial_json", ""))}}
                return self._out.delta({"tool_calls": [piece]})
            return b""  # thinking and signature deltas: not asked for, never sent
        if kind == "message_delta":
            usage = event.get("usage") or {}
            self._output = int(usage.get("output_tokens") or self._output)
            if usage.get("input_tokens") is not None:
                self._input = _input_tokens(usage)
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._out.delta({}, FINISH.get(str(reason), "stop")) if reason else b""
        if kind == "message_stop":
            return self._out.usage(self._input, self._output) + DONE
        if kind == "error":
            error = event.get("error") or {}
            return error_event(
                f"anthropic: {error.get('message', 'stream error')}",
                "server_error",
                str(error.get("type") or "") or None,
            )
        return b""  # ping, content_block_stop


# --------------------------------------------------------------------------- inbound: Anthropic -> OpenAI

INBOUND_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    }
)
"""Messages API request fields the OpenAI form carries; any other is refused."""


def messages_to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages API request (`POST /v1/messages`) as an OpenAI chat request; raises UnsupportedError."""
    for name, value in body.items():
        if name not in INBOUND_FIELDS and value is not None:
            raise UnsupportedError(name, "cannot be carried in the OpenAI chat form")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise UnsupportedError("model", "is required and must be a string")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise UnsupportedError("max_tokens", "is required and must be a positive integer")
    if not isinstance(body.get("messages"), list):
        raise UnsupportedError("messages", "is required and must be a list")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        messages.append({"role": "system", "content": _inbound_text(system, "system")})
    for i, message in enumerate(body["messages"]):
        where = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise UnsupportedError(f"{where}.role", "must be user or assistant")
        if message["role"] == "user":
            messages.extend(_inbound_user(message.get("content"), f"{where}.content"))
        else:
            messages.append(_inbound_assistant(message.get("content"), f"{where}.content"))
    chat: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": max_tokens}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UnsupportedError(name, "must be a number")
            chat[name] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise UnsupportedError("stop_sequences", "must be a list of strings")
        if stops:
            chat["stop"] = list(stops)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise UnsupportedError("tools", "must be a list of tools")
        if tools:
            chat["tools"] = [_inbound_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    if body.get("tool_choice") is not None:
        choice, parallel = _inbound_tool_choice(body["tool_choice"])
        chat["tool_choice"] = choice
        if parallel is False:
            chat["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise UnsupportedError("metadata", "must be an object")
        unknown = [k for k in metadata if k != "user_id"]
        if unknown:
            raise UnsupportedError(f"metadata.{unknown[0]}", "is not a Messages API metadata field")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise UnsupportedError("metadata.user_id", "must be a string")
        if user is not None:
            chat["user"] = user
    streamed = body.get("stream")
    if streamed is not None and not isinstance(streamed, bool):
        raise UnsupportedError("stream", "must be a boolean")
    if streamed:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the message_delta event reports usage
    return chat


def _string(block: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    """`block[name]` when it is a string; `default` when it is absent and one is given."""
    value = block.get(name)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise UnsupportedError(
            f"{where}.{name}", "is required and must be a string" if default is None else "must be a string"
        )
    return value


def _no_cache(block: Mapping[str, Any], where: str) -> None:
    if block.get("cache_control") is not None:
        raise UnsupportedError(f"{where}.cache_control", "cannot be carried in the OpenAI chat form")


def _inbound_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of text blocks")
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise UnsupportedError(f"{where}.{i}", "must be a text block")
        _no_cache(block, f"{where}.{i}")
        texts.append(_string(block, "text", f"{where}.{i}"))
    return "\n\n".join(texts) if where == "system" else "".join(texts)


def _inbound_user(content: Any, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages (first, as the OpenAI form orders them), then the
    rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of blocks")
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.{i}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind is None:
            raise UnsupportedError(at, "must be a content block")
        _no_cache(block, at)
        if kind == "text":
            parts.append({"type": "text", "text": _string(block, "text", at)})
        elif kind == "image":
            source = block.get("source")
            source_kind = source.get("type") if isinstance(source, dict) else None
            if source_kind == "base64":
                media_type = _string(source, "media_type", f"{at}.source")
                url = f"data:{media_type};base64,{_string(source, 'data', f'{at}.source')}"
            elif source_kind == "url":
                url = _string(source, "url", f"{at}.source")
            else:
                raise UnsupportedError(f"{at}.source", "must be a base64 or url image source")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_result":
            failed = block.get("is_error")
            if failed is not None and not isinstance(failed, bool):
                raise UnsupportedError(f"{at}.is_error", "must be a boolean")
            text = _inbound_text(block.get("content") or "", f"{at}.content")
            call_id = _string(block, "tool_use_id", at)
            tools.append(
                {"role": "tool", "tool_call_id": call_id, "content": "Error: " + text if failed else text}
            )
        else:
            raise UnsupportedError(at, f"a {kind!r} block cannot be carried in the OpenAI chat form")
    messages = list(tools)
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        messages.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts}
        )
    return messages


def _inbound_assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.{i}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind is None:
            raise UnsupportedError(at, "must be a content block")
        _no_cache(block, at)
        if kind == "text":
            texts.append(_string(block, "text", at))
        elif kind == "tool_use":
            if block.get("input") is not None and not isinstance(block["input"], dict):
                raise UnsupportedError(f"{at}.input", "must be an object")
            for name in ("id", "name"):
                _string(block, name, at)
            calls.append(_tool_call(block))
        else:
            raise UnsupportedError(at, f"a {kind!r} block cannot be carried in the OpenAI chat form")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _inbound_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or "input_schema" not in tool:
        raise UnsupportedError(where, "must be a client tool with an input_schema")
    _no_cache(tool, where)
    if not isinstance(tool["input_schema"], dict):
        raise UnsupportedError(f"{where}.input_schema", "must be an object (a JSON schema)")
    function: dict[str, Any] = {"name": _string(tool, "name", where), "parameters": tool["input_schema"]}
    description = _string(tool, "description", where, "")
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def _inbound_tool_choice(choice: Any) -> tuple[Any, bool | None]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    serial = choice.get("disable_parallel_tool_use") if isinstance(choice, dict) else None
    if serial is not None and not isinstance(serial, bool):
        raise UnsupportedError("tool_choice.disable_parallel_tool_use", "must be a boolean")
    parallel = False if serial else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise UnsupportedError("tool_choice", "must be of type auto, any, tool or none")


def chat_to_message(answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as a Messages API answer (`model` is the client's model name)."""
    choices = answer.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = first.get("message")
    if not isinstance(message, dict):
        message = {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):  # an upstream's malformed call is left out, never a 500
            continue
        try:
            arguments = tool_arguments(function.get("arguments"), "arguments")
        except UnsupportedError:
            arguments = {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": arguments,
            }
        )
    usage = answer.get("usage") or {}
    return {
        "id": _message_id(answer.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(first.get("finish_reason")),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def _message_id(value: Any) -> str:
    text = str(value or "")
    return text if text.startswith("msg") else f"msg_{text or 'modelroute'}"


def _stop_reason(finish: Any) -> str:
    return STOP_REASON.get(str(finish), "tool_use" if finish == "function_call" else "end_turn")


def error_to_anthropic(status: int, body: bytes) -> dict[str, Any]:
    """An OpenAI error body (the router's or an upstream's) in the Messages API's error shape."""
    error = loads_object(body).get("error") or {}
    message = str(error.get("message") or f"HTTP {status}") if isinstance(error, dict) else str(error)
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_event(kind: str, data: Mapping[str, Any]) -> bytes:
    """One Messages API stream event."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class ChatToMessagesStream:
    """OpenAI chat chunks (whole SSE events, as the relay writes them) to Messages API stream events."""

    def __init__(self, model: str) -> None:
        self._sse = SseReader()
        self._model = model
        self._started = False
        self._block = -1
        """Index of the open content block (-1: none)."""
        self._kind = ""
        self._tools: dict[int, int] = {}
        """OpenAI tool call index -> content block index."""
        self._stop = "end_turn"
        self._usage = (0, 0)
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(payload) for _, payload in self._sse.feed(data))

    def _start(self, answer_id: str) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(answer_id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return anthropic_event("message_start", {"message": message})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block += 1
        self._kind = kind
        return out + anthropic_event("content_block_start", {"index": self._block, "content_block": block})

    def _close(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = ""
        return anthropic_event("content_block_stop", {"index": self._block})

    def _event(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            if self.ended:
                return b""
            self.ended = True
            usage = {"input_tokens": self._usage[0], "output_tokens": self._usage[1]}
            return (
                self._start("")
                + self._close()
                + anthropic_event(
                    "message_delta",
                    {"delta": {"stop_reason": self._stop, "stop_sequence": None}, "usage": usage},
                )
                + anthropic_event("message_stop", {})
            )
        chunk = loads_object(payload)
        if chunk.get("error"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            self.ended = True
            return anthropic_event(
                "error", {"error": {"type": "api_error", "message": str(error.get("message"))}}
            )
        out = [self._start(str(chunk.get("id") or ""))]
        reported = chunk.get("usage")
        if isinstance(reported, dict):
            self._usage = (
                int(reported.get("prompt_tokens") or 0),
                int(reported.get("completion_tokens") or 0),
            )
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._kind != "text":
                    out.append(self._open("text", {"type": "text", "text": ""}))
                out.append(
                    anthropic_event(
                        "content_block_delta",
                        {"index": self._block, "delta": {"type": "text_delta", "text": text}},
                    )
                )
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{index}"),
                        "name": str(function.get("name") or ""),
                        "input": {},
                    }
                    out.append(self._open("tool_use", block))
                    self._tools[index] = self._block
                if function.get("arguments"):
                    delta_event = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out.append(
                        anthropic_event(
                            "content_block_delta", {"index": self._tools[index], "delta": delta_event}
                        )
                    )
            if choice.get("finish_reason"):
                self._stop = _stop_reason(choice["finish_reason"])
        return b"".join(out)
