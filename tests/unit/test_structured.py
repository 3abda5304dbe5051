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
