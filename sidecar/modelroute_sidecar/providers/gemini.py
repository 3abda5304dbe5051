"""Google's Gemini API (and Vertex AI's, the same body under another path): OpenAI chat requests to a
`gemini` endpoint, and its answers, streams and errors back.

Messages become `contents` (assistant turns are role `model`), system and developer messages the
`systemInstruction`; tool calls become `functionCall` parts and tool messages `functionResponse` parts,
whose function name is looked up from the call they answer (Gemini keys results by name, OpenAI by
id). JSON mode is `responseMimeType` (with `responseJsonSchema` for a schema). A stream is
`streamGenerateContent?alt=sse`: each event a whole `GenerateContentResponse`, no end marker, so the
translated stream gets its usage chunk and `[DONE]` when the upstream body ends after a finish reason.

Paths: the Gemini API `/v1/models/<model>:<method>` below the replica URL (its host), Vertex AI
`/v1/projects/<project>/locations/<replica region>/publishers/google/models/<model>:<method>`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
    tool_call_id_of,
    tool_calls_of,
    tool_name_of,
)

CARRIED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "parallel_tool_calls",
    }
)
"""OpenAI chat fields this translation carries (`user` is the router's to read; Gemini has none)."""

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}
"""Gemini finish reasons as OpenAI's (anything else: `stop`; `tool_calls` when the answer calls tools)."""


def path(model: str, stream: bool, project: str = "", location: str = "") -> str:
    """The request path: the Gemini API, or Vertex AI when `project` is set."""
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    model = quote(model, safe="")
    if project:
        return f"/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}"
    return f"/v1/models/{model}:{method}"


def chat_to_gemini(body: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a `GenerateContentRequest`."""
    check_fields(body, CARRIED, "gemini")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise UnsupportedError("messages", "must be a list")
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UnsupportedError(where, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_of(message.get("content"), f"{where}.content"))
        elif role == "user":
            append_turn(contents, "user", "parts", _user_parts(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            text = text_of(message.get("content"), f"{where}.content")
            if text:
                parts.append({"text": text})
            for call_id, name, args in tool_calls_of(message, where):
                names[call_id] = name
                parts.append({"functionCall": {"name": name, "args": args}})
            append_turn(contents, "model", "parts", parts or [{"text": ""}])
        elif role == "tool":
            call_id = tool_call_id_of(message, where)
            if call_id not in names:
                raise UnsupportedError(
                    f"{where}.tool_call_id", "must answer a tool call of an earlier assistant message"
                )
            result = text_of(message.get("content"), f"{where}.content")
            parsed = loads_object(result.encode())
            response = parsed if parsed else {"result": result}
            call = {"functionResponse": {"name": names[call_id], "response": response}}
            append_turn(contents, "user", "parts", [call])
        else:
            raise UnsupportedError(f"{where}.role", f"{role!r} is not supported by provider gemini")
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    limit = max_tokens_of(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    stops = stops_of(body)
    if stops:
        config["stopSequences"] = stops
    config.update(_json_mode(body.get("response_format")))
    if config:
        request["generationConfig"] = config
    if body.get("tools"):
        declarations = []
        for name, description, schema in (tool_name_of(t, i) for i, t in enumerate(body["tools"])):
            declaration: dict[str, Any] = {"name": name, "parametersJsonSchema": schema}
            if description:
                declaration["description"] = description
            declarations.append(declaration)
        request["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    if choice is not None:
        request["toolConfig"] = {"functionCallingConfig": _calling_config(choice)}
    return request


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise UnsupportedError(where, "must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            inline = data_url(url)
            if inline is None:
                raise UnsupportedError(f"{where}[{i}].image_url.url", "must be a data: URL (gemini)")
            parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
        else:
            raise UnsupportedError(f"{where}[{i}]", f"a {kind!r} part is not supported by provider gemini")
    return parts


def _json_mode(response_format: Any) -> dict[str, Any]:
    if response_format is None or response_format == {"type": "text"}:
        return {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        config: dict[str, Any] = {"responseMimeType": "application/json"}
        if schema is not None:
            config["responseJsonSchema"] = schema
        return config
    raise UnsupportedError("response_format", "must be text, json_object or json_schema")


def _calling_config(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "none":
        return {"mode": "NONE"}
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    raise UnsupportedError("tool_choice", "must be auto, none, required or a named function")


def outbound(
    body: Mapping[str, Any],
    model: str,
    stream: bool,
    auth_headers: dict[str, str],
    project: str = "",
    location: str = "",
) -> Outbound:
    """The generateContent request for an OpenAI chat body."""
    headers = {"content-type": "application/json", **auth_headers}
    return Outbound(path(model, stream, project, location), orjson.dumps(chat_to_gemini(body)), headers)


def _parts_of(candidate: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"] or {}
            calls.append(
                {
                    "id": str(call.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(call.get("name") or ""),
                        "arguments": arguments_text(call.get("args")),
                    },
                }
            )
    return "".join(texts), calls


def _finish(candidate: Mapping[str, Any], calls: bool) -> str:
    return "tool_calls" if calls else FINISH.get(str(candidate.get("finishReason")), "stop")


def gemini_to_chat(answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `GenerateContentResponse` as an OpenAI chat completion."""
    candidates = answer.get("candidates") or [{}]
    first = candidates[0] if isinstance(candidates[0], dict) else {}
    text, calls = _parts_of(first)
    for n, call in enumerate(calls):
        call["id"] = call["id"] or f"call_{n}"
    usage = answer.get("usageMetadata") or {}
    return completion(
        str(answer.get("responseId") or "gemini"),
        str(answer.get("modelVersion") or model),
        text if text or not calls else None,
        calls,
        _finish(first, bool(calls)),
        int(usage.get("promptTokenCount") or 0),
        int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0),
    )


def error_to_openai(status: int, body: bytes) -> dict[str, Any]:
    """A Google API error (`{"error": {"code", "message", "status"}}`) as an OpenAI error body."""
    parsed = loads_object(body)
    found = parsed.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    message = str(error.get("message") or body[:200].decode("utf-8", "replace") or f"HTTP {status}")
    return openai_error(f"gemini: {message}", error_type_for(status), str(error.get("status") or "") or None)


class GeminiToChatStream:
    """`streamGenerateContent?alt=sse` events to OpenAI chunks."""

    def __init__(self, model: str) -> None:
        self._sse = SseReader()
        self._out = ChunkWriter("gemini", model)
        self._started = False
        self._finished = False
        self._calls = 0
        self._usage = (0, 0)

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._event(payload) for _, payload in self._sse.feed(data))

    def finish(self) -> bytes:
        out = b"".join(self._event(payload) for _, payload in self._sse.finish())
        if self._finished:  # the body ended after a finish reason: the answer is whole
            out += self._out.usage(*self._usage) + DONE
        return out

    def _event(self, payload: bytes) -> bytes:
        event = loads_object(payload)
        if isinstance(event.get("error"), dict):
            error = event["error"]
            self._finished = False
            return error_event(
                f"gemini: {error.get('message', 'stream error')}",
                "server_error",
                str(error.get("status") or "") or None,
            )
        out: list[bytes] = []
        if not self._started:
            self._started = True
            self._out.answer_id = str(event.get("responseId") or "gemini")
            self._out.model = str(event.get("modelVersion") or self._out.model)
            out.append(self._out.delta({"role": "assistant", "content": ""}))
        usage = event.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = (
                int(usage.get("promptTokenCount") or 0),
                int(usage.get("candidatesTokenCount") or 0) + int(usage.get("thoughtsTokenCount") or 0),
            )
        candidates = event.get("candidates") or ()
        first = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
        text, calls = _parts_of(first)
        if text:
            out.append(self._out.delta({"content": text}))
        for call in calls:
            call["id"] = call["id"] or f"call_{self._calls}"
            out.append(self._out.delta({"tool_calls": [{"index": self._calls, **call}]}))
            self._calls += 1
        if first.get("finishReason"):
            self._finished = True
            out.append(self._out.delta({}, _finish(first, self._calls > 0)))
        return b"".join(out)
