"""What every provider translation shares: the refusal of what cannot be carried, the outbound request,
and the OpenAI shapes (chunks, errors, SSE framing) the translations produce.

Pure: no I/O, no clock but the `created` stamp of an answer. The OpenAI chat completion is the
canonical form: a native provider's answer and stream are turned into it, and the inbound Anthropic
Messages API is served through it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..sse import MAX_HELD_BYTES


class MalformedAnswerError(ValueError):
    """A native upstream's answer or stream that cannot be translated (a field of the wrong type, an
    endless event): a failed attempt of that replica, as a malformed OpenAI answer is, never a 500."""


class UnsupportedError(Exception):
    """A request field (or value) the chosen provider cannot carry: refused with a 400 before any call,
    never dropped. `param` names the field as the client sent it."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"`{param}` {reason}")
        self.param = param
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request to a native upstream: the path below the replica URL (query included), the body and
    the headers (credentials included; never logged)."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


IGNORED_CHAT_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "metadata", "store"})
"""OpenAI chat fields every translation consumes itself or that are the router's (`metadata` carries
routing metadata; `store` false is what a native provider does anyway, see `check_fields`)."""


def check_fields(body: Mapping[str, Any], carried: frozenset[str], provider: str) -> None:
    """Refuse a chat request field that `provider`'s translation does not carry (a default value such
    as `n: 1` or `store: false` is no request at all and passes)."""
    for name, value in body.items():
        if name in carried or (name in IGNORED_CHAT_FIELDS and name != "store"):
            continue
        if (
            value is None
            or (name == "n" and value == 1)
            or (name in ("store", "logprobs") and value is False)
        ):
            continue
        if name == "parallel_tool_calls" and value is True:
            continue
        raise UnsupportedError(name, f"is not supported by provider {provider}")


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    """The completion limit a chat request asks for (`max_completion_tokens` or the older `max_tokens`)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def stops_of(body: Mapping[str, Any]) -> list[str]:
    """`stop` as a list of strings."""
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise UnsupportedError("stop", "must be a string or a list of strings")


def text_of(content: Any, where: str) -> str:
    """The text of a message's `content`: a string, or a list of text parts (other parts refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise UnsupportedError(f"{where}[{i}]", "must be a text part here")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise UnsupportedError(where, "must be a string or a list of parts")


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


def append_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[dict[str, Any]]) -> None:
    """Add a turn, merged into the previous one of the same role: the three native APIs want turns that
    alternate, so tool results of several OpenAI tool messages and the user text after them form one
    user turn. `key` is where a turn keeps its items (`content`, or `parts` for Gemini)."""
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL, or None for another URL."""
    found = _DATA_URL.match(url)
    return (found.group(1), found.group(2)) if found else None


def tool_arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A tool call's `arguments` (a JSON string in the OpenAI API) as the object native APIs take."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):  # a list or a number is valid JSON no native API takes as input
        raise UnsupportedError(where, "must be a JSON object in a string")
    return parsed


def tool_calls_of(message: Mapping[str, Any], where: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, or "" when absent; name; arguments as an object) of each of an assistant message's
    `tool_calls`, checked: a malformed call is a 400 naming its field, never a call under a name
    (`str()` of whatever was sent) the client did not mean, nor a 500 from a `.get` on a string."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise UnsupportedError(f"{where}.tool_calls", "must be a list")
    checked: list[tuple[str, str, dict[str, Any]]] = []
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            raise UnsupportedError(here, "must be an object")
        function = call.get("function")
        if not isinstance(function, dict):
            raise UnsupportedError(f"{here}.function", "must be an object")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise UnsupportedError(f"{here}.function.name", "must be a non-empty string")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise UnsupportedError(f"{here}.id", "must be a string")
        checked.append(
            (call_id or "", name, tool_arguments(function.get("arguments"), f"{here}.function.arguments"))
        )
    return checked


def tool_call_id_of(message: Mapping[str, Any], where: str) -> str:
    """A tool message's `tool_call_id` ("" when absent: the provider then refuses it in its own words)."""
    value = message.get("tool_call_id")
    if value is not None and not isinstance(value, str):
        raise UnsupportedError(f"{where}.tool_call_id", "must be a string")
    return value or ""


def arguments_text(value: Any) -> str:
    """A native tool input as the OpenAI API's `arguments` string."""
    return json.dumps(value if value is not None else {}, separators=(",", ":"), ensure_ascii=False)


def tool_name_of(tool: Any, i: int) -> tuple[str, str, Any]:
    """(name, description, JSON schema) of an OpenAI `tools[i]` entry (function tools only)."""
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise UnsupportedError(f"tools[{i}]", "must be a function tool")
    function = tool.get("function")
    if not isinstance(function, dict):
        raise UnsupportedError(f"tools[{i}].function", "must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise UnsupportedError(f"tools[{i}].function.name", "is required")
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    return name, str(function.get("description") or ""), schema


def completion(
    answer_id: str,
    model: str,
    content: str | None,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """An OpenAI chat completion of one choice."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": answer_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """An OpenAI usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ChunkWriter:
    """Writes OpenAI chat completion chunks (SSE events) for one streamed answer."""

    __slots__ = ("answer_id", "created", "model")

    def __init__(self, answer_id: str, model: str) -> None:
        self.answer_id = answer_id
        self.model = model
        self.created = int(time.time())

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        """A chunk of choice 0."""
        return self._event(
            {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The usage chunk (no choices), as OpenAI sends under `stream_options.include_usage`."""
        return self._event({"choices": [], "usage": usage(prompt_tokens, completion_tokens)})

    def _event(self, fields: dict[str, Any]) -> bytes:
        chunk = {
            "id": self.answer_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            **fields,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def openai_error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_type_for(status: int) -> str:
    """OpenAI's error type for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_event(message: str, kind: str = "server_error", code: str | None = None) -> bytes:
    """An OpenAI error event, which the SDKs raise mid-stream."""
    return b"data: " + orjson.dumps(openai_error(message, kind, code)) + b"\n\n"


class SseReader:
    """Frames a server-sent event stream that arrives in pieces into (event name, data) pairs.

    An upstream that never ends an event cannot make it hold more than `MAX_HELD_BYTES` (the limit the
    OpenAI stream scanner holds): past it the stream is malformed. A piece that ends no event is only
    appended (the search for an event end looks at the new bytes and the 3 before them), so a stream
    dripped in small pieces is not re-split on every piece: an event of many short lines sent a line at
    a time cost quadratic time (32,768 lines of `data: x` took 15 s of the loop), now linear."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        """The whole events `data` completes."""
        held = self._held
        start = max(0, len(held) - 3)  # an event end (`\n\n`, `\n\r\n`) may begin in the held tail
        held += data
        if held.find(b"\n\n", start) < 0 and held.find(b"\n\r\n", start) < 0:
            if len(held) > MAX_HELD_BYTES:
                raise MalformedAnswerError(f"an upstream event is longer than {MAX_HELD_BYTES} bytes")
            return
        *whole, rest = bytes(self._held).replace(b"\r\n", b"\n").split(b"\n\n")
        if len(rest) > MAX_HELD_BYTES:
            raise MalformedAnswerError(f"an upstream event is longer than {MAX_HELD_BYTES} bytes")
        self._held = bytearray(rest)
        for raw in whole:
            event = _parse_event(raw)
            if event is not None:
                yield event

    def finish(self) -> Iterator[tuple[str, bytes]]:
        """A last event left without its blank line."""
        raw, self._held = bytes(self._held).replace(b"\r\n", b"\n"), bytearray()
        event = _parse_event(raw) if raw.strip() else None
        if event is not None:
            yield event


def _parse_event(raw: bytes) -> tuple[str, bytes] | None:
    name = ""
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
    if not data:
        return None
    return name, b"\n".join(data)


def loads_object(data: bytes) -> dict[str, Any]:
    """A JSON object from an upstream ({} for anything else: the caller treats it as missing fields)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
