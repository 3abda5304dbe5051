"""The relay's view of an SSE body: whole events whatever the pieces, what makes a stream complete,
and the usage event read (and hidden when the sidecar asked for it)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelroute_sidecar.sse import MAX_HELD_BYTES, StreamScanner, error_event


def event(payload: object, newline: bytes = b"\n") -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + data + newline + newline


def chunk(content: str, finish: str | None = None, index: int = 0) -> dict[str, object]:
    return {
        "choices": [{"index": index, "delta": {"content": content}, "finish_reason": finish}],
        "usage": None,
    }


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
STREAM = event(chunk("a")) + event(chunk("b", "stop")) + event(USAGE) + event(b"[DONE]")


def relay(scanner: StreamScanner, pieces: list[bytes]) -> bytes:
    return b"".join(scanner.feed(p) for p in pieces) + scanner.finish()


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_whole_events_come_out_whatever_the_pieces(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    scanner = StreamScanner()
    out = []
    for piece in pieces:
        relayed = scanner.feed(piece)
        assert relayed == b"" or relayed.endswith(b"\n\n")  # never half an event
        out.append(relayed)
    assert b"".join(out) + scanner.finish() == STREAM
    assert scanner.done and scanner.complete and scanner.usage == (7, 3)


def test_the_usage_event_is_hidden_when_asked_and_still_counted() -> None:
    scanner = StreamScanner(hide_usage=True)
    assert relay(scanner, [STREAM]) == event(chunk("a")) + event(chunk("b", "stop")) + event(b"[DONE]")
    assert scanner.usage == (7, 3)


def test_running_usage_on_content_chunks_is_kept_and_the_last_one_wins() -> None:
    first = {**chunk("a"), "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
    last = {**chunk("b", "stop"), "usage": {"prompt_tokens": 7, "completion_tokens": 2}}
    scanner = StreamScanner(hide_usage=True)
    body = event(first) + event(last)
    assert relay(scanner, [body]) == body  # events with choices are never dropped
    assert scanner.usage == (7, 2) and scanner.complete and not scanner.done


@pytest.mark.parametrize(
    ("body", "choices", "complete"),
    [
        (event(chunk("a")) + event(b"[DONE]"), 1, True),
        (event(chunk("a", "stop")), 1, True),  # no [DONE], but finished
        (event(chunk("a")), 1, False),  # a clean end, but not finished: broken
        (event(chunk("a", "stop", 0)), 2, False),
        (event(chunk("a", "stop", 0)) + event(chunk("b", "length", 1)), 2, True),
        (event(chunk("a")) + event({"error": {"message": "boom"}}) + event(b"[DONE]"), 1, False),
        (b"data:" + json.dumps(chunk("a", "stop")).encode() + b"\r\n\r\n", 1, True),  # CRLF, no space
        (event(chunk("a")) + b"data: [DONE]", 1, True),  # the last event without its blank line
        (b": keep-alive\n\n" + event(chunk("a")), 1, False),
    ],
)
def test_what_counts_as_complete(body: bytes, choices: int, complete: bool) -> None:
    scanner = StreamScanner(choices=choices)
    assert relay(scanner, [body]) == body
    assert scanner.complete is complete


def test_an_over_long_event_is_passed_on_rather_than_held_without_bound() -> None:
    scanner = StreamScanner()
    head = b"data: " + b"x" * (MAX_HELD_BYTES + 1)
    assert scanner.feed(head) == head and scanner.open_event
    assert scanner.feed(b"\n\n") == b"\n\n" and not scanner.open_event


def test_a_crlf_event_end_is_found_wherever_the_pieces_are_cut() -> None:
    stream = event(chunk("a"), b"\r\n") + event(chunk("b", "stop"), b"\r\n") + event(b"[DONE]", b"\r\n")
    for i in range(len(stream)):
        for j in range(i, len(stream), 7):
            scanner = StreamScanner()
            relayed = [scanner.feed(piece) for piece in (stream[:i], stream[i:j], stream[j:])]
            assert all(r == b"" or r.endswith(b"\r\n\r\n") for r in relayed), (i, j)
            assert b"".join(relayed) == stream and scanner.done, (i, j)


def test_an_event_dripped_a_line_at_a_time_is_held_whole_then_bounded() -> None:
    scanner = StreamScanner()
    lines = [b"data: x\n"] * 1000
    assert [scanner.feed(line) for line in lines] == [b""] * 1000  # held, appended, not re-searched
    assert scanner.feed(b"\n") == b"".join(lines) + b"\n"
    endless = StreamScanner()
    relayed = b"".join(endless.feed(b"data: x\n") for _ in range(MAX_HELD_BYTES // 8 + 1))
    assert len(relayed) == MAX_HELD_BYTES + 8 and endless.open_event  # past the bound: passed on


def test_the_error_event_is_what_the_openai_sdks_raise_on() -> None:
    raw = error_event("upstream stream interrupted", "stream_broken")
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    assert json.loads(raw[6:])["error"] == {
        "message": "upstream stream interrupted", "type": "server_error", "param": None, "code": "stream_broken",
    }  # fmt: skip
