"""Cascades that check the answer: a non-streamed chat answer that does not follow the request's JSON
schema escalates (`escalateOn: [schemaMismatch]`), a broken or hostile schema is the client's 400 before
any upstream call, and the decision headers and metrics say what happened."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.component.conftest import Running, SidecarFactory, build_config
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "pattern": "^[A-Z]"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}


def asking(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema, "strict": True}}


@pytest.fixture
async def checking(start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]) -> Running:
    escalate_on = ["error", "timeout", "length", "invalidJson", "schemaMismatch"]
    config = build_config({n: f.url for n, f in upstreams.items()}, resilience={"escalateOn": escalate_on})
    return await start_sidecar(config)


async def test_an_answer_off_its_schema_escalates_and_says_so(
    checking: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["small"].set(content='{"city": "paris", "days": 3}')  # valid JSON, breaks the pattern
    upstreams["big"].set(content='{"city": "Paris", "days": 3}')
    raw = await checking.client().chat.completions.with_raw_response.create(
        model="cascade", messages=HI, response_format=asking(SCHEMA)
    )
    assert raw.parse().choices[0].message.content == '{"city": "Paris", "days": 3}'
    assert raw.headers["x-modelroute-endpoint"] == "big"
    assert raw.headers["x-modelroute-escalated"] == "schemaMismatch"
    metrics = checking.sidecar.metrics
    assert metrics.escalations.value("small", "schemaMismatch") == 1
    assert metrics.schema_checks.value("mismatch") == 1 and metrics.schema_checks.value("ok") == 1


async def test_an_answer_on_its_schema_stands(checking: Running, upstreams: dict[str, FakeUpstream]) -> None:
    upstreams["small"].set(content='{"city": "Oslo", "days": 2}')
    raw = await checking.client().chat.completions.with_raw_response.create(
        model="cascade", messages=HI, response_format=asking(SCHEMA)
    )
    assert raw.headers["x-modelroute-endpoint"] == "small"
    assert "x-modelroute-escalated" not in raw.headers
    assert upstreams["big"].requests == []


@pytest.mark.parametrize(
    ("schema", "param", "why"),
    [
        ({"type": "frob"}, "response_format.json_schema.schema.type", "not a valid JSON Schema"),
        ({"$ref": "https://example.com/s.json"}, "response_format.json_schema.schema.$ref", "not a local"),
        ({"type": "string", "pattern": "(a+)+(?=b)"}, "response_format.json_schema.schema.pattern", "RE2"),
        ({"description": "x" * 70_000}, "response_format.json_schema.schema", "bytes of JSON"),
    ],
)
async def test_a_broken_or_hostile_schema_is_a_400_before_any_upstream_call(
    checking: Running, upstreams: dict[str, FakeUpstream], schema: Any, param: str, why: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await checking.client().chat.completions.create(
            model="cascade", messages=HI, response_format=asking(schema)
        )
    error = caught.value.response.json()["error"]
    assert error["code"] == "invalid_json_schema" and error["param"] == param and why in error["message"]
    assert upstreams["small"].requests == [] and upstreams["big"].requests == []


async def test_without_the_opt_in_schemas_are_left_to_the_upstream(
    sidecar: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["small"].set(content='{"city": "paris"}')
    raw = await sidecar.client().chat.completions.with_raw_response.create(
        model="cascade", messages=HI, response_format=asking({"type": "frob"})
    )
    assert raw.headers["x-modelroute-endpoint"] == "small"  # not checked, not refused: as before


async def test_a_streamed_answer_is_not_checked(
    checking: Running, upstreams: dict[str, FakeUpstream]
) -> None:
    upstreams["small"].set(content='{"city": "paris"}')
    stream = await checking.client().chat.completions.create(
        model="cascade", messages=HI, response_format=asking(SCHEMA), stream=True
    )
    async for _chunk in stream:
        pass
    assert upstreams["big"].requests == []
