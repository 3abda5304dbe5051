"""A rule's session affinity through the operator: compiled into the RouterConfig (schema 3), refused at
the field at fault when malformed, and left out for a schema-2 sidecar (it only routes colder)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.manifests import endpoint, policy, with_change

from modelroute_contract.schemas import Rendering, render_document
from modelroute_operator.logic.compiler import (
    CompileResult,
    NamespaceObjects,
    ObjectInvalid,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.resources import ModelEndpoint, RoutingPolicy


def compile_bodies(*bodies: dict[str, Any]) -> CompileResult:
    parsed = [parse_object(b) for b in bodies]
    return compile_namespace(
        NamespaceObjects(
            "team-a",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [],
        )
    )


def with_affinity(value: Any) -> dict[str, Any]:
    return with_change(policy(), "spec.rules.0.affinity", value)


def test_affinity_compiles_into_the_rule() -> None:
    result = compile_bodies(endpoint(), with_affinity({"header": "X-Session-Id", "ttlSeconds": 120}))
    assert result.config is not None
    affinity = result.config.policies[0].rules[0].affinity
    assert affinity is not None
    assert (affinity.header, affinity.metadata, affinity.ttl_seconds, affinity.max_sessions) == (
        "x-session-id",
        "",
        120,
        10000,
    )


def test_a_rule_without_affinity_keeps_its_bytes() -> None:
    result = compile_bodies(endpoint(), policy())
    assert result.config is not None
    assert "affinity" not in result.config.to_json()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({}, "spec.rules[0].affinity"),
        ({"header": "x-a", "metadata": "a"}, "spec.rules[0].affinity"),
        ({"header": "connection"}, "spec.rules[0].affinity.header"),
        ({"metadata": "Bad Key"}, "spec.rules[0].affinity.metadata"),
        ({"header": "x-a", "ttlSeconds": 0}, "spec.rules[0].affinity.ttlSeconds"),
        ({"header": "x-a", "maxSessions": 10_000_000}, "spec.rules[0].affinity.maxSessions"),
    ],
)
def test_malformed_affinity_is_refused_at_its_field(value: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(with_affinity(value))
    assert {e.field for e in caught.value.errors} == {field}


def test_a_schema_2_sidecar_gets_the_config_without_affinity() -> None:
    result = compile_bodies(endpoint(), with_affinity({"metadata": "session"}))
    assert result.config is not None
    document = json.loads(result.config.to_json())
    rendering = render_document(document, 2)
    assert isinstance(rendering, Rendering), rendering
    assert "affinity" not in rendering.text
    assert any("affinity" in field for field in rendering.dropped)
