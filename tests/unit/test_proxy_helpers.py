"""The proxy's byte-level helpers: the model rewrite keeps every other byte, usage is read without a
parse, and generated request ids are unique across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelroute_sidecar.errors import new_request_id, request_id_of
from modelroute_sidecar.proxy import ask_for_usage, read_usage, rewrite_model


def rewrite(raw: bytes, upstream: str) -> bytes:
    return rewrite_model(raw, json.loads(raw), upstream)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model": "auto", "x": 1}', b'{"model":"llama-3", "x": 1}'),
        (b'{"x":1,"model"  :  "auto"}', b'{"x":1,"model":"llama-3"}'),
        # the same text inside a string value is not the key: it appears twice, so the body is re-encoded
        (b'{"model":"auto","messages":[{"content":"\\"model\\":\\"auto\\""}]}', None),
    ],
)
def test_rewrite_splices_the_model_in_place(raw: bytes, expected: bytes | None) -> None:
    out = rewrite(raw, "llama-3")
    if expected is not None:
        assert out == expected
    assert json.loads(out) == {**json.loads(raw), "model": "llama-3"}


def test_rewrite_falls_back_when_the_model_is_written_with_escapes() -> None:
    raw = b'{"model": "\\u0061uto", "temperature": 0.5}'  # "auto", spelled with an escape
    assert json.loads(rewrite(raw, "m-2")) == {"model": "m-2", "temperature": 0.5}


def test_rewrite_never_takes_a_nested_key_for_the_top_level_one() -> None:
    # the top-level model is escape-spelled, so the only literal match is the nested key
    raw = b'{"metadata": {"model": "auto"}, "model": "au\\u0074o"}'
    out = json.loads(rewrite(raw, "llama-3"))
    assert out == {"metadata": {"model": "auto"}, "model": "llama-3"}


def test_rewrite_keeps_every_digit_of_big_numbers_when_it_re_encodes() -> None:
    # two literal matches (one nested) force the re-encode
    raw = b'{"model": "auto", "seed": 123456789012345678901234567890, "metadata": {"model": "auto"}}'
    body = json.loads(raw)
    body["seed"] = float(body["seed"])  # what a fast parser may have made of it
    out = rewrite_model(raw, body, "llama-3")
    assert b"123456789012345678901234567890" in out and json.loads(out)["model"] == "llama-3"


def test_rewrite_escapes_the_upstream_name() -> None:
    assert json.loads(rewrite(b'{"model":"auto"}', 'we"ird\\name'))["model"] == 'we"ird\\name'


@given(
    virtual=st.text(min_size=1, max_size=12),
    upstream=st.text(min_size=1, max_size=12),
    other=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=4),
)
def test_rewrite_only_ever_changes_the_model(virtual: str, upstream: str, other: dict[str, str]) -> None:
    body = {**other, "model": virtual}
    out = rewrite_model(json.dumps(body).encode(), body, upstream)
    assert json.loads(out) == {**body, "model": upstream}


def test_read_usage_without_a_parse() -> None:
    raw = b'{"choices":[],"usage":{"prompt_tokens": 12,"completion_tokens":7,"total_tokens":19}}'
    assert read_usage(raw, None) == (12, 7)
    assert read_usage(raw, json.loads(raw)) == (12, 7)
    assert read_usage(b'{"choices":[]}', None) == (0, 0)


def test_request_ids_are_fresh_and_well_formed() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_request_ids_differ_between_processes() -> None:
    code = "from modelroute_sidecar.errors import new_request_id; print(new_request_id())"
    others = {subprocess.check_output([sys.executable, "-c", code], text=True).strip() for _ in range(2)}
    assert len(others | {new_request_id()}) == 3


def test_a_forked_child_draws_its_own_prefix() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert child[:16] != new_request_id()[:16]


def test_a_sane_client_request_id_is_kept() -> None:
    assert request_id_of({"x-request-id": "abc-123"}) == "abc-123"
    assert len(request_id_of({"x-request-id": "bad\nid"})) == 32
    assert len(request_id_of({"x-request-id": "x" * 129})) == 32


def with_usage(raw: bytes) -> bytes:
    out = ask_for_usage(raw, json.loads(raw))
    assert out is not None
    return out


def test_asking_for_usage_splices_the_option_after_the_opening_brace() -> None:
    raw = b'  {"model": "auto", "stream": true, "seed": 123456789012345678901234567890}'
    assert with_usage(raw) == b'  {"stream_options":{"include_usage":true},' + raw[3:]


def test_asking_for_usage_keeps_the_clients_other_stream_options() -> None:
    raw = b'{"model": "auto", "stream": true, "stream_options": {"include_usage": false, "x": 1}}'
    assert json.loads(with_usage(raw))["stream_options"] == {"include_usage": True, "x": 1}
    assert (
        ask_for_usage(b'{"model": "a", "stream_options": "odd"}', {"model": "a", "stream_options": "odd"})
        is None
    )


def test_asking_for_usage_re_encodes_what_it_cannot_splice() -> None:
    raw = '\ufeff{"model": "auto"}'.encode()  # a BOM before the brace: the lenient parser reads it
    assert json.loads(with_usage(raw).decode("utf-8-sig"))["stream_options"] == {"include_usage": True}


@given(
    body=st.dictionaries(st.text(max_size=8), st.text(max_size=12) | st.integers(), max_size=4),
    upstream=st.text(min_size=1, max_size=12),
)
def test_asking_for_usage_and_the_model_rewrite_change_nothing_else(
    body: dict[str, object], upstream: str
) -> None:
    body = {**body, "model": "auto", "stream": True}
    body.pop("stream_options", None)
    raw = json.dumps(body).encode()
    out = rewrite_model(with_usage(raw), body, upstream)
    assert json.loads(out) == {**body, "model": upstream, "stream_options": {"include_usage": True}}
