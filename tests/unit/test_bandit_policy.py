"""A rule's bandit strategy through the operator: compiled into the RouterConfig (schema 3), refused at the
field at fault when malformed (settings without `strategy: bandit`, fewer than two targets, values out of
range), left out for a schema-2 sidecar (it routes by weight instead), and shown by `modelroute explain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tests.manifests import endpoint, policy, to_yaml, with_change

from modelroute_contract import BanditSettings, RuleConfig, Target
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

TWO_TARGETS = [{"endpoint": "llama", "weight": 100}, {"endpoint": "mistral", "weight": 50}]


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


def bandit_policy(bandit: Any = None, strategy: str | None = "bandit", targets: Any = None) -> dict[str, Any]:
    body = with_change(policy(), "spec.rules.0.targets", targets or TWO_TARGETS)
    if strategy is not None:
        body = with_change(body, "spec.rules.0.strategy", strategy)
    if bandit is not None:
        body = with_change(body, "spec.rules.0.bandit", bandit)
    return body


def test_a_bandit_rule_compiles_with_its_settings() -> None:
    result = compile_bodies(
        endpoint(), endpoint("mistral"), bandit_policy({"costWeight": 0.3, "explore": 0.1})
    )
    assert result.config is not None, result
    rule = result.config.policies[0].rules[0]
    assert rule.strategy == "bandit"
    assert rule.bandit == BanditSettings(cost_weight=0.3, explore=0.1)


def test_strategy_bandit_alone_gets_the_default_settings() -> None:
    result = compile_bodies(endpoint(), endpoint("mistral"), bandit_policy())
    assert result.config is not None, result
    assert result.config.policies[0].rules[0].bandit == BanditSettings(cost_weight=0.0, explore=0.05)


def test_a_weighted_rule_keeps_its_bytes() -> None:
    result = compile_bodies(endpoint(), policy())
    assert result.config is not None
    text = result.config.to_json()
    assert "strategy" not in text and "bandit" not in text
    explicit = compile_bodies(endpoint(), with_change(policy(), "spec.rules.0.strategy", "weighted"))
    assert explicit.config is not None and explicit.config.version == result.config.version


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (bandit_policy({"explore": 0.1}, strategy=None), "spec.rules[0].bandit", "strategy: bandit"),
        (bandit_policy({"explore": 0.1}, strategy="weighted"), "spec.rules[0].bandit", "strategy: bandit"),
        (bandit_policy(targets=[{"endpoint": "llama"}]), "spec.rules[0].strategy", "at least two targets"),
        (
            bandit_policy(targets=[{"endpoint": "llama"}, {"endpoint": "mistral", "weight": 0}]),
            "spec.rules[0].strategy",
            "at least two targets with a weight above 0",
        ),
        (bandit_policy({"costWeight": 1.5}), "spec.rules[0].bandit.costWeight", "1"),
        (bandit_policy({"costWeight": -0.1}), "spec.rules[0].bandit.costWeight", "0"),
        (bandit_policy({"explore": 0.6}), "spec.rules[0].bandit.explore", "0.5"),
        (bandit_policy({"greed": 1}), "spec.rules[0].bandit.greed", "unknown field"),
        (bandit_policy(strategy="greedy"), "spec.rules[0].strategy", "bandit"),
    ],
)
def test_a_malformed_bandit_is_refused_at_its_field(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(body)
    assert {e.field for e in caught.value.errors} == {field}
    assert any(words in e.message for e in caught.value.errors), caught.value.errors


def test_the_contract_refuses_settings_that_do_not_match_the_strategy() -> None:
    targets = (Target(endpoint="a", weight=1), Target(endpoint="b", weight=1))
    with pytest.raises(ValidationError, match="exactly when strategy is bandit"):
        RuleConfig(name="r", targets=targets, strategy="bandit")
    with pytest.raises(ValidationError, match="exactly when strategy is bandit"):
        RuleConfig(name="r", targets=targets, bandit=BanditSettings())
    with pytest.raises(ValidationError, match=r"bandit.explore 0.9 is outside 0-0.5"):
        BanditSettings(explore=0.9)


def test_a_schema_2_sidecar_gets_the_config_without_the_bandit() -> None:
    result = compile_bodies(endpoint(), endpoint("mistral"), bandit_policy({"costWeight": 0.2}))
    assert result.config is not None
    rendering = render_document(json.loads(result.config.to_json()), 2)
    assert isinstance(rendering, Rendering), rendering
    assert "bandit" not in rendering.text and "strategy" not in rendering.text
    assert {"strategy", "bandit"} <= {field.rsplit(".", 1)[-1] for field in rendering.dropped}, (
        rendering.dropped
    )


def explain(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: dict[str, Any]) -> Any:
    manifests = tmp_path / "objects.yaml"
    manifests.write_text(to_yaml(endpoint(), endpoint("mistral"), body))
    request = tmp_path / "request.json"
    chat = {"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}
    request.write_text(json.dumps({"headers": {}, "body": chat}))
    code = cli.main(["explain", "-q", "-f", str(manifests), "--request", str(request), "--seed", "3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    return out


def test_explain_shows_the_strategy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weighted = explain(tmp_path, capsys, policy())
    assert (weighted["strategy"], weighted["bandit"]) == ("weighted", None)
    out = explain(tmp_path, capsys, bandit_policy())
    assert out["strategy"] == "bandit"
    assert out["bandit"]["arm"] == out["plan"][0]["endpoint"]
    assert out["bandit"]["mode"] in {"sampled", "explored"}
    assert 0.0 <= out["bandit"]["sampled"] <= 1.0
