"""Server-sent event streams as the relay sees them: whole events, whether the stream is complete, usage.

An upstream's SSE body arrives in pieces that need not end where events end. The relay passes on
whole events only, so that a stream that breaks never leaves the client half an event glued to the
error event that follows, and so that the usage event the sidecar asked for on the client's behalf
can be dropped. The rules, in one place:

- An event ends at a blank line (`\\n\\n` or `\\r\\n\\r\\n`); bytes after the last one are held until
  the rest arrives (up to `MAX_HELD_BYTES`, past which they are passed on as they are). A piece that
  ends no event is appended to them, the search looking only at its bytes and the held ones' last 3.
- A stream is *complete* when it carried `data: [DONE]`, or, for upstreams that omit `[DONE]`, when
  every choice the request asked for (`n`, default 1) got a non-null `finish_reason`. It is never
  complete once the upstream sent an `error` event. Anything else that ends is a broken stream.
- Only events that can matter are parsed: those holding `[DONE]`, `"error"`, a non-null
  `finish_reason` or a usage object; every other event passes uncopied. A piece of whole events is
  first looked at once more cheaply (`_plain`): with every `":null` (or, when there is none, every
  `": null`, as Python's json.dumps spells it) taken out, a piece that names none of `[DONE]`,
  `"error"`, `"finish_reason"` and `"usage"` cannot hold such an event (a key whose value is null
  loses its closing quote; nothing else a marker spells can be taken out), and is passed on without
  the closer search.
- The usage event is the one with `usage` set to an object and no `choices` (OpenAI's last chunk
  under `stream_options.include_usage`); the last usage seen wins (servers that report running usage
  on every chunk report totals). It is dropped from what the client gets when `hide_usage` is set.
- A Responses API stream (`responses=True`) has typed events and no `[DONE]`: it is complete at its
  terminal `response.completed` or `response.incomplete` event (whose `response.usage` is the usage),
  and failed at a `response.failed` or `error` event.
"""

from __future__ import annotations

import re

import orjson

MAX_HELD_BYTES = 256 * 1024
"""An unfinished event longer than this is passed on in pieces (never buffered without bound)."""

DONE_EVENT = b"data: [DONE]\n\n"

_STRING_VALUE = re.compile(rb'\s*:\s*"')
_OBJECT_VALUE = re.compile(rb"\s*:\s*\{")
_EVENT = re.compile(rb"(?s).*?(?:\r\n\r\n|\n\n)")


class StreamScanner:
    """Frames one upstream SSE body into whole events and keeps what the relay must know about it."""

    __slots__ = (
        "_held", "choices", "done", "error", "finished", "hide_usage", "open_event", "responses", "usage"
    )  # fmt: skip

    def __init__(self, *, choices: int = 1, hide_usage: bool = False, responses: bool = False) -> None:
        self.responses = responses
        """A Responses API stream: complete at its terminal event, never given a `[DONE]`."""
        self.choices = max(1, choices)
        """How many choices must each get a finish_reason for a stream without [DONE] to be complete."""
        self.hide_usage = hide_usage
        """Drop the usage event from what is relayed (the sidecar asked for it, not the client)."""
        self.done = False
        """`data: [DONE]` was seen."""
        self.error = False
        """The upstream sent an error event of its own."""
        self.finished: set[int] = set()
        """Indexes of the choices that got a finish_reason."""
        self.usage: tuple[int, int] | None = None
        """Prompt and completion tokens of the last usage object seen."""
        self.open_event = False
        """The bytes relayed so far end inside an event (only after an over-long one)."""
        self._held = bytearray()

    @property
    def complete(self) -> bool:
        """Whether the stream so far is a complete answer (see the module's rules)."""
        return not self.error and (self.done or len(self.finished) >= self.choices)

    def feed(self, data: bytes) -> bytes:
        """The whole events that `data` completes, to relay now (possibly none); the rest is held."""
        held = self._held
        if held:
            # an event end in the new bytes, or begun in the held ones' last 3: else only append (held
            # and re-searched whole on every piece, an event dripped a line at a time cost quadratic time)
            if len(held) + len(data) <= MAX_HELD_BYTES and not _ends_event(bytes(held[-3:]) + data[:3], data):
                held += data
                return b""
            data = bytes(held) + data
            self._held = bytearray()
        elif data.endswith(_BOUNDARIES):  # the common piece: whole events (no framing)
            self.open_event = False
            if not self.responses and _plain(data):
                return data  # nothing that matters: no event parsed, nothing copied
            return self._inspect(data)
        end = _last_boundary(data)
        if end < len(data):
            if len(data) - end > MAX_HELD_BYTES:
                self.open_event = True  # cannot frame it: pass it on rather than buffer without bound
                return self._inspect(data)
            self._held = bytearray(data[end:])
            data = data[:end]
            if not data:
                return b""
        self.open_event = False
        return self._inspect(data)

    def finish(self) -> bytes:
        """What was held when the body ended: a last event without its closing blank line, if any."""
        data, self._held = bytes(self._held), bytearray()
        if not data:
            return b""
        kept = self._inspect(data)
        self.open_event = bool(kept) and _last_boundary(kept) < len(kept)
        return kept

    def _inspect(self, data: bytes) -> bytes:
        if not (_has_responses_marker(data) if self.responses else _has_marker(data)):
            return data
        kept: list[bytes] = []
        dropped = False
        position = 0
        for match in _EVENT.finditer(data):
            if self._read(match.group()):
                kept.append(match.group())
            else:
                dropped = True
            position = match.end()
        if position < len(data):
            tail = data[position:]
            if self._read(tail):
                kept.append(tail)
            else:
                dropped = True
        return b"".join(kept) if dropped else data

    def _read(self, event: bytes) -> bool:
        """Note what one event says; False when it is to be dropped."""
        payload = _data_of(event)
        if payload is None:
            return True
        if payload == b"[DONE]":
            self.done = True
            return True
        if not (_has_responses_marker(payload) if self.responses else _has_marker(payload)):
            return True
        try:
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(parsed, dict):
            return True
        if self.responses:
            self._read_responses_event(parsed)
            return True
        if parsed.get("error"):
            self.error = True
            return True
        choices = parsed.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                index = choice.get("index", 0)
                self.finished.add(index if isinstance(index, int) else 0)
        usage = parsed.get("usage")
        if isinstance(usage, dict):
            self.usage = (_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
            if self.hide_usage and not choices:
                return False
        return True

    def _read_responses_event(self, event: dict[str, object]) -> None:
        """Note a Responses API event: its terminal events end the answer (and carry its usage)."""
        kind = event.get("type")
        if kind == "error" or kind == "response.failed" or (kind is None and event.get("error")):
            self.error = True
        elif kind in _RESPONSES_TERMINAL:
            self.done = True
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self.usage = (_count(usage.get("input_tokens")), _count(usage.get("output_tokens")))


_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete"})
"""Responses API events after which the answer is whole (`incomplete`: cut at max_output_tokens, as a
chat answer with finish_reason `length` is)."""


def _has_responses_marker(data: bytes) -> bool:
    """Whether `data` may hold a Responses API event that matters (terminal or failed): one search per
    marker, on every chunk relayed; the many delta events in between are passed on unparsed."""
    find = data.find  # not `in`, and no generator: see _has_marker
    return (
        find(b'"response.completed"') >= 0
        or find(b'"response.incomplete"') >= 0
        or find(b'"response.failed"') >= 0
        or find(b'"error"') >= 0
    )


def error_event(message: str, code: str, kind: str = "server_error") -> bytes:
    """An OpenAI-style error event, which the SDKs raise as an error (a clean end they would not)."""
    error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return b"data: " + orjson.dumps(error) + b"\n\n"


def _plain(data: bytes) -> bool:
    """Whether `data` certainly holds no event that matters (False: `_has_marker` decides). Four `in`
    tests on text, which take no argument tuple: one bytes.find cost ~1,700 instructions a call on
    CPython 3.12 (its arguments are parsed from a tuple), more than a search of a whole chunk."""
    stripped = data.replace(b'":null', b"")
    if stripped is data:  # no compact null (CPython returns the bytes themselves): JSON with spaces?
        stripped = data.replace(b'": null', b"")
    text = stripped.decode("latin-1")
    return (
        '"finish_reason"' not in text
        and '"usage"' not in text
        and '"error"' not in text
        and "[DONE]" not in text
    )


def _has_marker(data: bytes) -> bool:
    """Whether `data` may hold an event that matters: `[DONE]`, `"error"`, a non-null finish_reason
    or a usage object. Plain searches with a look at the value: one regex alternation over the whole
    chunk measured 2-3x slower, and this runs on every chunk relayed. The value is read from the two
    bytes after the key first (`:null`, `:"`, `:{` as most servers write them); only other spacing
    goes to the anchored pattern (which cost more than all the searches of a chunk together)."""
    # find, not `in`: bytes.__contains__ first tries its argument as an integer, and raising and
    # clearing that TypeError cost twice the search itself (callgrind: 9% of a relayed event)
    if data.find(b"[DONE]") >= 0 or data.find(b'"error"') >= 0:
        return True
    for key, hit, value in _KEYS:
        at = data.find(key)
        while at >= 0:
            at += len(key)
            after = data[at : at + 2]
            if after == hit:
                return True
            if after != b":n" and value.match(data, at):
                return True
            at = data.find(key, at)
    return False


_KEYS = ((b'"finish_reason"', b':"', _STRING_VALUE), (b'"usage"', b":{", _OBJECT_VALUE))
"""The keys whose value makes an event matter: the compact spelling of that value, its pattern."""
_BOUNDARIES = (b"\n\n", b"\r\n\r\n")
"""What a piece ending in whole events ends with."""


def _ends_event(*pieces: bytes) -> bool:
    """Whether any of `pieces` holds a blank line."""
    return any(b"\n\n" in piece or b"\r\n\r\n" in piece for piece in pieces)


def _last_boundary(data: bytes) -> int:
    """The end of the last blank line in `data` (0 when there is none)."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def _data_of(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined), None when it has none (a comment, a keep-alive)."""
    lines = [line for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    values = [line[6:] if line[5:6] == b" " else line[5:] for line in lines]
    return values[0] if len(values) == 1 else b"\n".join(values)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
