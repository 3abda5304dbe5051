"""A rule's session affinity through the operator: compiled into the RouterConfig (schema 3), refused at
the field at fault when malformed, and left out for a schema-2 sidecar (it only routes colder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.manifests import endpoint, policy, to_yaml, with_change

from modelroute_contract.schemas import Rendering, render_document
from modelroute_operator.logic.compiler import (
    CompileResult,
    NamespaceObjects,
    ObjectInvalid,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.resources import ModelEndpoint, RoutingPolicy
from modelroute_operator.runtime import cli


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


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], headers: dict[str, str], *flags: str) -> Any:
    manifests = tmp_path / "objects.yaml"
    manifests.write_text(to_yaml(endpoint(), with_affinity({"header": "x-session-id"})))
    request = tmp_path / "request.json"
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
    request.write_text(json.dumps({"headers": headers, "body": body}))
    code = cli.main(["explain", "-q", "-f", str(manifests), "--request", str(request), *flags])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


def test_explain_says_what_affinity_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = {"x-session-id": "conversation-7"}
    assert explain(tmp_path, capsys, {})["affinity"] is None
    assert explain(tmp_path, capsys, session)["affinity"] == {"outcome": "new", "reason": ""}
    kept = explain(tmp_path, capsys, session, "--pinned", "llama/us-east-1")
    assert kept["affinity"] == {"outcome": "kept", "reason": ""}
    assert kept["plan"][0]["replica"] == "us-east-1"
    eu = {**session, "x-modelroute-data-class": "eu-personal"}
    broken = explain(tmp_path, capsys, eu, "--pinned", "llama/us-east-1")
    assert broken["affinity"] == {"outcome": "broken", "reason": "residency-region"}
    assert [c["replica"] for c in broken["plan"]] == ["eu-west-1"]
