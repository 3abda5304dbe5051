"""The structured-output checks on their own: tool-call arguments, refusals, the bounds a hostile schema
meets (depth, remote references also behind `$id`), and the time box on exponential references."""

from __future__ import annotations

from typing import Any

import pytest

from modelroute_sidecar import structured
from modelroute_sidecar.structured import (
    Expected,
    SchemaProblemError,
    check_answer,
    compile_schema,
    expected_output,
)

TOOLS = {
    "tools": [
        {"type": "function", "function": {"name": "get", "parameters": {
            "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}},
        {"type": "function", "function": {"name": "ping"}},
    ]
}  # fmt: skip


def answer(**message: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", **message}}]}


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_a_request_without_structured_output_expects_nothing() -> None:
    assert expected_output({"messages": [], "response_format": {"type": "json_object"}}) is None


def test_tool_calls_follow_their_functions_parameters() -> None:
    expected = expected_output(TOOLS)
    assert expected is not None
    assert check_answer(answer(tool_calls=[call("get", '{"x": 1}'), call("ping", "{}")]), expected) == "ok"
    assert check_answer(answer(tool_calls=[call("get", '{"y": 1}')]), expected) == "mismatch"
    assert check_answer(answer(tool_calls=[call("get", "{not json")]), expected) == "mismatch"
    assert check_answer(answer(tool_calls=[call("nope", "{}")]), expected) == "mismatch"  # not declared
    assert check_answer(answer(content="plain text"), expected) == "ok"  # no tool called: nothing to check


def test_a_refusal_stands() -> None:
    expected = Expected(content=compile_schema({"type": "object"}, "f"))
    assert check_answer(answer(content=None, refusal="I can't help with that"), expected) == "ok"
    assert check_answer(answer(content="[]"), expected) == "mismatch"


def test_depth_is_bounded_without_recursion() -> None:
    schema: dict[str, Any] = {}
    node = schema
    for _ in range(10_000):  # far deeper than Python's recursion limit
        node["items"] = {}
        node = node["items"]
    with pytest.raises(SchemaProblemError, match="nested deeper than 32"):
        compile_schema(schema, "f")


def test_a_local_looking_reference_cannot_reach_out_through_an_id() -> None:
    with pytest.raises(SchemaProblemError, match=r"f\.\$defs\.a\.\$ref: 'other.json' is not a local"):
        compile_schema(
            {"$id": "https://evil.example/s", "$ref": "#/$defs/a", "$defs": {"a": {"$ref": "other.json"}}},
            "f",
        )
    # resolved inside the schema only: the registry retrieves nothing
    validator = compile_schema(
        {"$id": "https://evil.example/s", "$ref": "#/$defs/a", "$defs": {"a": {"type": "integer"}}}, "f"
    )
    assert check_answer(answer(content="3"), Expected(content=validator)) == "ok"


def test_exponential_references_end_in_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structured, "CHECK_SECONDS", 0.0)  # the box is closed at once: no timed test
    defs = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)}
    defs["d30"] = {"type": "integer"}
    validator = compile_schema({"$ref": "#/$defs/d0", "$defs": defs}, "f")
    assert check_answer(answer(content='"text"'), Expected(content=validator)) == "timeout"


def test_decision_headers_name_the_score_the_semantic_route_and_the_escalation() -> None:
    from modelroute_sidecar.engine.model import Decision
    from modelroute_sidecar.proxy import Exchange, decision_headers

    plain = decision_headers(Exchange("r1", "chat", decision=Decision(rule="easy")))
    assert not {"x-modelroute-complexity", "x-modelroute-semantic-route", "x-modelroute-escalated"} & set(
        plain
    )
    decision = Decision(
        rule="hard",
        complexity=73,
        complexity_scorer="difficulty",
        semantic_route="code",
        semantic_similarity=0.81234,
    )
    exchange = Exchange("r2", "chat", decision=decision, escalated="schemaMismatch")
    headers = decision_headers(exchange)
    assert headers["x-modelroute-complexity"] == "73;scorer=difficulty"
    assert headers["x-modelroute-semantic-route"] == "code;similarity=0.812"
    assert headers["x-modelroute-escalated"] == "schemaMismatch"


@pytest.mark.parametrize(
    "parsed",
    [
        {"choices": "not a list"},
        {"choices": {"0": {}}},
        {"choices": [{"message": {"tool_calls": [{"function": {"name": ["get"], "arguments": "{}"}}]}}]},
        {"choices": [{"message": {"tool_calls": [{"function": {"name": {"x": 1}}}]}}]},
    ],
)
def test_an_answer_of_odd_shape_is_a_mismatch_not_a_crash(parsed: dict[str, Any]) -> None:
    expected = expected_output(TOOLS)
    assert expected is not None
    assert check_answer(parsed, expected) == "mismatch"


class SteppedTime:
    """A clock that moves 1 ms at every read: a check reads it ~50 times before its box closes."""

    def __init__(self) -> None:
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return self.reads / 1000


def content_check(schema: dict[str, Any], content: str) -> str:
    return check_answer(answer(content=content), Expected(content=compile_schema(schema, "f")))


@pytest.mark.parametrize(
    ("schema", "items"),
    [
        ({"uniqueItems": True}, [{"n": n} for n in range(200_000)]),  # jsonschema: pairwise, for minutes
        ({"uniqueItems": True}, list(range(200_000))),
        ({"enum": [[0, 1], "a"]}, [[n] for n in range(200_000)]),
        ({"additionalProperties": False}, {f"k{n}": n for n in range(200_000)}),
    ],
)
def test_one_keyword_over_a_huge_answer_reads_the_clock_and_ends_in_timeout(
    monkeypatch: pytest.MonkeyPatch, schema: dict[str, Any], items: Any
) -> None:
    import orjson

    content = orjson.dumps(items).decode()
    clock = SteppedTime()
    monkeypatch.setattr(structured, "time", clock)
    assert content_check(schema, content) == "timeout"
    assert clock.reads > 10  # read inside the keyword, not only as it began


def test_the_linear_keywords_keep_json_schema_equality() -> None:
    unique = {"uniqueItems": True}
    assert content_check(unique, "[1, 1.0]") == "mismatch"  # one number
    assert content_check(unique, '[{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]') == "mismatch"
    assert content_check(unique, "[1, true, 0, false, null, [1], [true], {}, []]") == "ok"  # true is not 1
    assert content_check(unique, '["1", 1, {"a": 1}, {"a": true}]') == "ok"
    members = {"enum": [1, "a", {"x": [1]}, None]}
    for instance, result in [("1.0", "ok"), ("true", "mismatch"), ('{"x": [1.0]}', "ok"), ('{"x": [true]}', "mismatch"),
                             ("null", "ok"), ('"b"', "mismatch")]:  # fmt: skip
        assert content_check(members, instance) == result, instance
    assert content_check({"const": {"a": [1]}}, '{"a": [1.0]}') == "ok"
    assert content_check({"const": {"a": [1]}}, '{"a": [true]}') == "mismatch"
    closed = {
        "properties": {"a": {}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert content_check(closed, '{"a": 1, "x-b": 2}') == "ok"
    assert content_check(closed, '{"a": 1, "x-b": "no"}') == "mismatch"
    assert content_check(closed, '{"a": 1, "b": 2}') == "mismatch"
    assert content_check({"additionalProperties": {"type": "string"}}, '{"a": "s", "b": 1}') == "mismatch"
    items = {"prefixItems": [{}], "unevaluatedItems": False}
    assert (content_check(items, "[1]"), content_check(items, "[1, 2]")) == ("ok", "mismatch")
    props = {"properties": {"a": {}}, "unevaluatedProperties": {"type": "integer"}}
    assert (content_check(props, '{"a": "s", "b": 2}'), content_check(props, '{"b": "s"}')) == (
        "ok",
        "mismatch",
    )


def test_additional_properties_match_pattern_properties_on_re2() -> None:
    # Python's re backtracks on this pattern for 2**40 steps; RE2 answers at once
    schema = {"patternProperties": {"^(a+)+$": {}}, "additionalProperties": False}
    assert content_check(schema, '{"' + "a" * 40 + 'b": 1}') == "mismatch"
    assert content_check(schema, '{"' + "a" * 40 + '": 1}') == "ok"


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    # jsonschema matches the patterns of unevaluatedProperties with Python's re: refused, not run
    schema = {"allOf": [{"patternProperties": {"^(a+)+$": {}}}], "unevaluatedProperties": False}
    with pytest.raises(
        SchemaProblemError, match=r"f\.unevaluatedProperties: .*f\.allOf\[0\]\.patternProperties"
    ):
        compile_schema(schema, "f")


def test_an_answer_too_deep_to_walk_stands_unchecked() -> None:
    deep = "[" * 1000 + "]" * 1000  # orjson parses it; walking it overflows Python's stack
    assert content_check({"uniqueItems": True}, "[" + deep + ", 1]") == "timeout"
    assert content_check({"items": {"$ref": "#"}}, deep) == "timeout"
