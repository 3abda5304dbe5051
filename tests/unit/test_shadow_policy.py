"""A rule's shadow traffic through the operator: compiled into the RouterConfig (schema 3), refused at the
field at fault (a missing endpoint, a target, bounds), left out for a schema-2 sidecar (it does
not mirror; its clients' answers are the same), and shown by `modelroute explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.manifests import endpoint, policy, to_yaml, with_change

from modelroute_contract import RouterConfig
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
from modelroute_sidecar.engine.shadow import shadow_bucket


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


def with_shadow(value: Any) -> dict[str, Any]:
    return with_change(policy(), "spec.rules.0.shadow", value)


# llama-next runs in us-east-1 only (no gdpr): EU-personal requests may never be copied there
NEXT = endpoint("llama-next", {"us-east-1": []})


def test_shadow_compiles_into_the_rule() -> None:
    result = compile_bodies(endpoint(), NEXT, with_shadow({"endpoint": "llama-next", "percent": 12.5}))
    assert result.config is not None, result.errors
    shadow = result.config.policies[0].rules[0].shadow
    assert shadow is not None
    assert (shadow.endpoint, shadow.percent, shadow.max_concurrent) == ("llama-next", 12.5, 8)
    document = json.loads(result.config.to_json())
    assert document["policies"][0]["rules"][0]["shadow"] == {
        "endpoint": "llama-next",
        "percent": 12.5,
        "maxConcurrent": 8,
    }


def test_a_rule_without_shadow_keeps_its_bytes() -> None:
    result = compile_bodies(endpoint(), policy())
    assert result.config is not None
    assert "shadow" not in result.config.to_json()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"endpoint": "nope", "percent": 5}, "ModelEndpoint 'nope' does not exist in namespace 'team-a'"),
        ({"endpoint": "llama", "percent": 5}, "is one of the rule's targets"),
    ],
)
def test_a_shadow_naming_a_missing_endpoint_or_a_target_is_refused_at_its_field(
    value: dict[str, Any], message: str
) -> None:
    result = compile_bodies(endpoint(), NEXT, with_shadow(value))
    assert result.config is None
    (error,) = result.errors
    assert (error.kind, error.name, error.field) == (
        "RoutingPolicy",
        "support",
        "spec.rules[0].shadow.endpoint",
    )
    assert message in error.message


def test_a_native_provider_shadow_compiles() -> None:
    native = with_change(
        with_change(NEXT, "spec.provider", "anthropic"), "spec.credentials", {"name": "k", "key": "apiKey"}
    )
    result = compile_bodies(endpoint(), native, with_shadow({"endpoint": "llama-next", "percent": 5}))
    assert result.config is not None, result.errors
    shadow = result.config.policies[0].rules[0].shadow
    assert shadow is not None and shadow.endpoint == "llama-next"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"percent": 5}, "spec.rules[0].shadow.endpoint"),
        ({"endpoint": "llama-next"}, "spec.rules[0].shadow.percent"),
        ({"endpoint": "llama-next", "percent": 100.5}, "spec.rules[0].shadow.percent"),
        ({"endpoint": "llama-next", "percent": -1}, "spec.rules[0].shadow.percent"),
        ({"endpoint": "llama-next", "percent": 5, "maxConcurrent": 0}, "spec.rules[0].shadow.maxConcurrent"),
        (
            {"endpoint": "llama-next", "percent": 5, "maxConcurrent": 257},
            "spec.rules[0].shadow.maxConcurrent",
        ),
    ],
)
def test_malformed_shadow_is_refused_at_its_field(value: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(with_shadow(value))
    assert {e.field for e in caught.value.errors} == {field}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"percent": 101.0}, "shadow.percent 101.0 is outside 0-100"),
        ({"maxConcurrent": 1000}, "shadow.maxConcurrent 1000 is outside 1-256"),
    ],
)
def test_the_contract_bounds_a_shadow_too(change: dict[str, Any], message: str) -> None:
    result = compile_bodies(endpoint(), NEXT, with_shadow({"endpoint": "llama-next", "percent": 5}))
    assert result.config is not None
    document = json.loads(result.config.to_json())
    document["policies"][0]["rules"][0]["shadow"].update(change)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        RouterConfig.model_validate(document)


def test_a_schema_2_sidecar_gets_the_config_without_shadow() -> None:
    result = compile_bodies(endpoint(), NEXT, with_shadow({"endpoint": "llama-next", "percent": 50}))
    assert result.config is not None
    document = json.loads(result.config.to_json())
    rendering = render_document(document, 2)
    assert isinstance(rendering, Rendering), rendering
    assert "shadow" not in rendering.text
    assert rendering.dropped == ("policies[0].rules[0].shadow",)
    # and the rendering is the config compiled without the shadow, byte for byte (same routing)
    plain = compile_bodies(endpoint(), NEXT, policy())
    assert plain.config is not None
    plain_rendering = render_document(json.loads(plain.config.to_json()), 2)
    assert isinstance(plain_rendering, Rendering)
    assert rendering.text == plain_rendering.text


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], headers: dict[str, str]) -> Any:
    manifests = tmp_path / "objects.yaml"
    manifests.write_text(to_yaml(endpoint(), NEXT, with_shadow({"endpoint": "llama-next", "percent": 40})))
    request = tmp_path / "request.json"
    body = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
    request.write_text(json.dumps({"headers": headers, "body": body}))
    code = cli.main(["explain", "-q", "-f", str(manifests), "--request", str(request)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


def test_explain_shows_the_rule_s_shadow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = [f"r{n}" for n in range(40)]
    mirrored = next(i for i in ids if shadow_bucket("support", "default", i) < 40)
    passed = next(i for i in ids if shadow_bucket("support", "default", i) >= 40)
    sent = explain(tmp_path, capsys, {"x-request-id": mirrored})["shadow"]
    assert sent == {
        "endpoint": "llama-next",
        "percent": 40.0,
        "maxConcurrent": 8,
        "mirrored": True,
        "replica": "us-east-1",
        "region": "us-east-1",
        "skipped": None,
    }
    assert explain(tmp_path, capsys, {"x-request-id": passed})["shadow"]["mirrored"] is False
    eu = {"x-request-id": mirrored, "x-modelroute-data-class": "eu-personal"}
    refused = explain(tmp_path, capsys, eu)
    assert refused["plan"][0]["replica"] == "eu-west-1"
    assert refused["shadow"] | {} == {**sent, "replica": None, "region": None, "skipped": "residency"}
