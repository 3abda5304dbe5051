"""The relay's view of an SSE body: whole events whatever the pieces, what makes a stream complete,
and the usage event read (and hidden when the sidecar asked for it)."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelroute_sidecar import sse
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


# --- the cheap look at a piece of whole events (`_plain`) ------------------------------------------------


def compact(payload: object) -> bytes:
    """An event as OpenAI and vLLM write it: compact JSON, so `"finish_reason":null`."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


OPENAI_STREAM = [compact(chunk(str(i))) for i in range(5)]
OPENAI_STREAM += [compact(chunk("", "stop")), compact(USAGE), compact(b"[DONE]")]


@pytest.mark.parametrize(
    "piece",
    [
        compact(chunk("a", "stop")),
        compact(USAGE),
        compact(b"[DONE]"),
        compact({"error": {"message": "boom"}}),
        event(chunk("a", "stop")),  # spaced JSON
        compact(chunk("a")) + compact(chunk("b", "length")),  # the second event of a piece matters
        compact({"choices": [{"index": 0, "finish_reason": None}, {"index": 1, "finish_reason": "stop"}]}),
    ],
)
def test_a_piece_that_may_matter_is_never_plain(piece: bytes) -> None:
    assert not sse._plain(piece)


@pytest.mark.parametrize(
    "piece",
    [compact(chunk("a")), compact({**chunk("b"), "system_fingerprint": None}), event(chunk("c"))],
    ids=["compact", "more nulls", "json.dumps spacing"],
)
def test_a_content_chunk_is_plain(piece: bytes) -> None:
    assert sse._plain(piece) and not sse._has_marker(piece)


KEYS = st.sampled_from(['"finish_reason"', '"usage"', '"error"', '"content"', '"x"', "[DONE]"])
VALUES = st.sampled_from(["null", '"stop"', "{}", '{"a":1}', " null", ' "stop"', "1", '"\\":null"'])


def scanned(pieces: list[bytes], *, cheap_look: bool) -> tuple[bytes, object]:
    """What a scanner relays of `pieces` and what it learnt, with or without the `_plain` look."""
    scanner = StreamScanner(choices=2, hide_usage=True)
    if cheap_look:
        out = relay(scanner, pieces)
    else:
        plain, sse._plain = sse._plain, lambda data: False  # every piece to the full search
        try:
            out = relay(scanner, pieces)
        finally:
            sse._plain = plain
    return out, (scanner.done, scanner.error, scanner.finished, scanner.usage, scanner.complete)


@given(
    st.lists(st.lists(st.tuples(KEYS, st.sampled_from([":", " : ", ": "]), VALUES), max_size=5), max_size=4)
)
def test_the_cheap_look_changes_nothing_the_scanner_relays_or_learns(
    events: list[list[tuple[str, str, str]]],
) -> None:
    """`_plain` only lets pieces skip the full search that it would have passed on unchanged, learning
    nothing (e.g. `"error":null` is searched for, parsed, and is no error)."""
    pieces = [b"data: {" + ",".join(k + s + v for k, s, v in parts).encode() + b"}\n\n" for parts in events]
    assert scanned(pieces, cheap_look=True) == scanned(pieces, cheap_look=False)


def test_a_quoted_key_inside_a_string_is_no_key() -> None:
    piece = compact(chunk('say "finish_reason":"stop"'))  # escaped in JSON: \"finish_reason\"
    assert scanned([piece], cheap_look=True) == scanned([piece], cheap_look=False)


def test_an_openai_stream_relays_its_content_chunks_untouched_and_reads_the_end() -> None:
    """One event a piece, as an upstream sends them: every content chunk is passed on as it came (the
    same object, no copy), the finish, usage and [DONE] are read, the usage event is hidden."""
    scanner = StreamScanner(hide_usage=True)
    relayed = [scanner.feed(piece) for piece in OPENAI_STREAM]
    assert all(out is piece for out, piece in zip(relayed[:5], OPENAI_STREAM, strict=False))
    assert relayed[6] == b""  # the usage event, hidden
    assert scanner.finish() == b""
    assert scanner.usage == (7, 3) and scanner.done and scanner.complete and scanner.finished == {0}


@pytest.mark.parametrize("cut", range(1, len(b"data: [DONE]\n\n")))
def test_done_split_across_pieces_is_still_seen(cut: int) -> None:
    done = compact(b"[DONE]")
    scanner = StreamScanner()
    pieces = [*OPENAI_STREAM[:5], done[:cut], done[cut:]]
    assert relay(scanner, pieces) == b"".join(pieces)
    assert scanner.done and scanner.complete


@pytest.mark.parametrize("cut", [1, 6, 40, -3, -2, -1])
def test_an_event_split_across_pieces_comes_out_whole_and_is_still_read(cut: int) -> None:
    finish = compact(chunk("", "stop"))
    scanner = StreamScanner()
    assert scanner.feed(OPENAI_STREAM[0]) == OPENAI_STREAM[0]
    assert scanner.feed(finish[:cut]) == b""  # held: never half an event
    assert scanner.feed(finish[cut:] + OPENAI_STREAM[1]) == finish + OPENAI_STREAM[1]
    assert scanner.finished == {0} and scanner.complete  # the finish was read, not passed unseen


def test_after_an_over_long_event_plain_pieces_flow_again() -> None:
    scanner = StreamScanner()
    long = b"data: " + b"x" * (MAX_HELD_BYTES + 1)
    assert scanner.feed(long) == long and scanner.open_event
    assert scanner.feed(b"\n\n" + OPENAI_STREAM[0]) == b"\n\n" + OPENAI_STREAM[0]
    assert not scanner.open_event
    assert scanner.feed(OPENAI_STREAM[1]) is OPENAI_STREAM[1]
    assert scanner.feed(compact(b"[DONE]")) and scanner.done
