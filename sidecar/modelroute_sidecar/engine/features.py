"""Feature extraction: the one pass over a parsed request body that gives the engine everything it reads.

The views parse the body once and call `extract_features`; the engine never looks at the raw body. The
token count is an estimate, not a tokenizer run (a tokenizer would cost more than the whole decision):

- text: ceil(characters / 4), the usual rule of thumb for English with GPT-style BPE tokenizers;
- chat: plus 3 tokens per message (role and separators) and 3 for the reply primer, as OpenAI documents
  for its chat format, and a flat 85 per non-text content part (an image at low detail);
- pre-tokenized input (`prompt`/`input` given as token ids): the ids are counted exactly.

The estimate feeds rule ranges, context-window checks, cost budgets and tenant token limits, all of which
only need the right order of magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

from .model import Api, RequestFeatures

DATA_CLASS_HEADER = "x-modelroute-data-class"
"""Header a client declares the data class with, whatever the policy's own residency header is."""
METADATA_HEADER_PREFIX = "x-modelroute-"
"""`x-modelroute-<key>: value` sets request metadata `key`, overriding the body's `metadata`."""

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMER = 3
TOKENS_PER_MEDIA_PART = 85


def estimate_text_tokens(text: str) -> int:
    """ceil(len(text) / 4): ~4 characters per token."""
    return -(-len(text) // CHARS_PER_TOKEN)


def _is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """`isinstance(value, Mapping)`, with the parser's own type first: a body comes from orjson (dicts,
    lists, strings, numbers), and an abc check costs ~10x a plain type check, several times a request."""
    return isinstance(value, dict) or (
        value is not None and not isinstance(value, (str, list, int, float)) and isinstance(value, Mapping)
    )


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased (HTTP names are case-insensitive); the last of repeated names wins."""
    return {name.lower(): value for name, value in headers.items()}


def collect_chat(messages: Any, texts: list[str]) -> int:
    """Append the text of chat `messages` to `texts`; return the token overhead they add beyond the text.

    Tool call arguments count as prompt text: they go upstream too, so detectors must see them."""
    if not isinstance(messages, list):
        return 0
    overhead = TOKENS_REPLY_PRIMER
    for message in messages:
        if _is_mapping(message):
            overhead += collect_message(message, texts)
    return overhead


def collect_message(message: Mapping[str, Any], texts: list[str]) -> int:
    """Append the text of one chat message (or Responses API message item) to `texts`; return its
    token overhead: the role and separators, and a flat count per non-text content part."""
    overhead = TOKENS_PER_MESSAGE
    content = message.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            text = part.get("text") if _is_mapping(part) else part
            if isinstance(text, str):
                texts.append(text)
            else:
                overhead += TOKENS_PER_MEDIA_PART
    for call in message.get("tool_calls") or ():
        function = call.get("function") if _is_mapping(call) else None
        arguments = function.get("arguments") if _is_mapping(function) else None
        if isinstance(arguments, str):
            texts.append(arguments)
    return overhead


def collect_responses(body: Mapping[str, Any], texts: list[str]) -> int:
    """Append the text of a Responses API request to `texts` (`instructions`, then `input`: a string or
    a list of items, in order); return the token overhead its items add beyond the text.

    Message items read like chat messages; other items carry their text in `output` (a tool's result)
    or `arguments` (a tool call), and both go upstream, so detectors and budgets see them too."""
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        texts.append(instructions)
    items = body.get("input")
    if isinstance(items, str):
        texts.append(items)
        return TOKENS_PER_MESSAGE + TOKENS_REPLY_PRIMER
    if not isinstance(items, list):
        return 0
    overhead = TOKENS_REPLY_PRIMER
    for item in items:
        if not _is_mapping(item):
            continue
        if "content" in item:
            overhead += collect_message(item, texts)
        for key in ("arguments", "output"):
            if isinstance(item.get(key), str):
                texts.append(item[key])
    return overhead


def collect_prompt(value: Any, texts: list[str]) -> int:
    """Append the text of a completions `prompt` or embeddings `input` to `texts` (a string, a list of
    strings, token ids, or lists of token ids); return the tokens counted exactly (the ids)."""
    if isinstance(value, str):
        texts.append(value)
        return 0
    if not isinstance(value, list):
        return 0
    exact = 0
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, int):
            exact += 1
        elif isinstance(item, list):
            exact += len(item)
    return exact


SCAN_MAX_STRINGS = 100_000
"""Strings (values and keys) one body may carry for the detectors; past it the request is refused (400),
never scanned in part: a string the walk skipped could hide personal data from residency."""


class TextScanLimitError(ValueError):
    """The body carries more strings than `SCAN_MAX_STRINGS`: refused rather than partly classified."""


def collect_strings(value: Any, texts: list[str]) -> None:
    """Append every string of a parsed JSON body to `texts`, object keys included: the detectors must see
    all text a request carries (`user`, `name`, tool results, legacy `function_call`, metadata, fields of
    APIs yet to come), not only the prompt fields. Iterative, so any depth the JSON parser accepts is
    walked whole; raises `TextScanLimitError` past `SCAN_MAX_STRINGS`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) or (not isinstance(item, list) and isinstance(item, Mapping)):
            for key, child in item.items():
                if isinstance(key, str) and key not in _PLAIN_KEYS:
                    texts.append(key)
                stack.append(child)
            if len(texts) > SCAN_MAX_STRINGS:  # strings grow by the keys and, below, one at a time
                break
        elif isinstance(item, list):
            stack.extend(item)
    # Checked once here (and per object above) rather than per item: the body's size bounds the walk,
    # and a body past the limit is refused all the same.
    if len(texts) > SCAN_MAX_STRINGS:
        raise TextScanLimitError(
            f"the request body carries more than {SCAN_MAX_STRINGS} strings; residency detectors "
            "read every one, so such a body is refused rather than partly classified"
        )


_PLAIN_KEYS = frozenset({"model", "messages", "role", "content", "type", "text", "prompt", "input"})
"""Keys of the APIs' own schema: no personal data in them, skipped to keep the scan text short."""


def scan_text_of(body: Mapping[str, Any], metadata: Mapping[str, str]) -> str:
    """The text the detectors read: every string of the body, then every metadata value."""
    texts: list[str] = []
    collect_strings(body, texts)
    texts.extend(metadata.values())
    return "\n".join(texts)


def read_metadata(
    body: Mapping[str, Any], headers: Mapping[str, str], skip: frozenset[str]
) -> dict[str, str]:
    """Body `metadata` (string values only) overridden by `x-modelroute-<key>` headers, except `skip`."""
    metadata: dict[str, str] = {}
    body_metadata = body.get("metadata")
    if _is_mapping(body_metadata):
        for key, value in body_metadata.items():
            if isinstance(key, str) and isinstance(value, str):
                metadata[key] = value
    for name, value in headers.items():
        if name.startswith(METADATA_HEADER_PREFIX) and name not in skip:
            metadata[name[len(METADATA_HEADER_PREFIX) :]] = value
    return metadata


def read_max_output(body: Mapping[str, Any]) -> int | None:
    """`max_completion_tokens` (the current name), `max_output_tokens` (the Responses API's) or else
    `max_tokens`, when a positive integer."""
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def wants_json(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for JSON output: `response_format` (chat) or `text.format` (the
    Responses API) of type json_object or json_schema."""
    response_format = body.get("response_format")
    if not _is_mapping(response_format):
        text = body.get("text")
        response_format = text.get("format") if _is_mapping(text) else None
    return _is_mapping(response_format) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def read_declared_class(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first non-empty value among the data-class headers `names` (lower-cased), stripped."""
    for name in names:
        value = headers.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


_CLASS_HEADERS: dict[str | None, tuple[tuple[str, ...], frozenset[str]]] = {}
"""Residency header → (the data-class headers to read, in order; the same as a set): a config names a few."""


def _class_headers(residency_header: str | None) -> tuple[tuple[str, ...], frozenset[str]]:
    """The data-class header names for a policy's residency header, built once per distinct header."""
    cached = _CLASS_HEADERS.get(residency_header)
    if cached is None:
        names = (residency_header.lower(), DATA_CLASS_HEADER) if residency_header else (DATA_CLASS_HEADER,)
        cached = (names, frozenset(names))
        if len(_CLASS_HEADERS) < 1024:  # bounded: callers pass config values, but stay safe
            _CLASS_HEADERS[residency_header] = cached
    return cached


def extract_features(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    request_id: str,
    api: Api,
    residency_header: str | None = None,
    scan: bool = True,
) -> RequestFeatures:
    """Read a parsed request body and its headers into the `RequestFeatures` the engine decides on.

    `residency_header` is the policy's data-class header when the caller knows it; the standard
    `x-modelroute-data-class` is accepted too, the policy's header winning when both are set. (The Router
    also re-reads `features.headers` with the policy's header, so a caller that does not know the policy
    loses nothing.) Data-class headers are not copied into metadata. `scan` builds the detectors' text
    (every string of the body); a caller whose policy has no detectors passes False and saves the walk.
    """
    lowered = lower_headers(headers)
    class_headers, skip = _class_headers(residency_header)
    texts: list[str] = []
    exact_tokens = 0
    overhead = 0
    if api == "chat":
        overhead = collect_chat(body.get("messages"), texts)
    elif api == "completions":
        exact_tokens = collect_prompt(body.get("prompt"), texts)
    elif api == "responses":
        overhead = collect_responses(body, texts)
    else:
        exact_tokens = collect_prompt(body.get("input"), texts)
    prompt_text = texts[0] if len(texts) == 1 else "\n".join(texts)
    prompt_tokens = exact_tokens + overhead + sum([estimate_text_tokens(text) for text in texts])
    model = body.get("model")
    metadata = read_metadata(body, lowered, skip)
    return RequestFeatures(
        request_id=request_id,
        api=api,
        model=model if isinstance(model, str) else "",
        headers=lowered,
        metadata=metadata,
        prompt_text=prompt_text,
        scan_text=scan_text_of(body, metadata) if scan else "",
        prompt_tokens=prompt_tokens,
        max_output_tokens=read_max_output(body),
        stream=body.get("stream") is True,
        needs_tools=bool(body.get("tools") or body.get("functions")),
        needs_json=wants_json(body),
        declared_data_class=read_declared_class(lowered, class_headers),
    )
