"""A RoutingPolicy's learned routing as the operator sees it: a user's head in a ConfigMap, pinned by
version and sha256, is carried in the RouterConfig; a missing, malformed, oversized, tampered or
unknown model is an error on the policy's field, and the admission webhook refuses the policy."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from typing import Any

import pytest
import yaml
from tests.kube_harness import REPO

from modelroute_contract import BUILTIN_DIFFICULTY_HEADS, BUILTIN_DIFFICULTY_SHA256
from modelroute_contract.schemas import canonical_json
from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object
from modelroute_operator.logic.learned import FORBIDDEN_KEY, referenced_config_maps
from modelroute_operator.logic.review import parse_review
from modelroute_operator.logic.validation import validate
from modelroute_sidecar.configstore import build_snapshot
from modelroute_sidecar.embeddings import load_models

EXAMPLE = REPO / "examples" / "learned-routing"
FIXTURE_HEAD = REPO / "tests" / "contract" / "fixtures" / "v3" / "learned-routing-configmap-head.json"


@cache
def small_head() -> str:
    # The head the v3 fixture carries (trained on 40 GSM8K prompts): small, real.
    document = json.loads(FIXTURE_HEAD.read_text())
    return canonical_json(document["policies"][0]["difficultyModels"][0]["head"])


def bodies(models: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    docs = [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in docs:
        doc.setdefault("metadata", {})["namespace"] = "ns"
        if doc["kind"] == "RoutingPolicy" and models is not None:
            doc["spec"]["difficultyModels"] = models
    return docs


def user_model(**overrides: Any) -> dict[str, Any]:
    sha = hashlib.sha256(small_head().encode()).hexdigest()
    return {
        "name": "difficulty",
        "version": "3",
        "configMap": {"name": "head-v3"},
        "sha256": sha,
        **overrides,
    }


def compile_with(models: list[dict[str, Any]], config_maps: dict[str, dict[str, str]]) -> Any:
    parsed = [parse_object(b) for b in bodies(models)]
    objects = NamespaceObjects(
        "ns",
        [o for o in parsed if o.kind == "ModelEndpoint"],  # type: ignore[misc]
        [o for o in parsed if o.kind == "RoutingPolicy"],  # type: ignore[misc]
        [],
        config_maps,
    )
    return compile_namespace(objects)


def test_a_head_in_a_configmap_is_carried_and_loads_in_the_sidecar() -> None:
    result = compile_with([user_model()], {"head-v3": {"head.json": small_head()}})
    assert not result.errors
    (model,) = result.config.policies[0].difficulty_models
    assert (model.name, model.version) == ("difficulty", "3") and model.head is not None
    snapshot = build_snapshot(result.config.to_json(), source="file", region="")
    assert snapshot.version == result.config.version


def test_the_builtin_model_is_named_by_version() -> None:
    result = compile_with([{"name": "difficulty", "builtin": True}], {})
    (model,) = result.config.policies[0].difficulty_models
    assert model.head is None and model.sha256 == BUILTIN_DIFFICULTY_SHA256
    result = compile_with([{"name": "difficulty", "builtin": True, "version": "1999.1"}], {})
    assert [e.field for e in result.errors] == ["spec.difficultyModels[0].version"]
    # A policy that pinned the builtin of before keeps it (its routing does not change on upgrade), and
    # a sidecar scores with it.
    result = compile_with([{"name": "difficulty", "builtin": True, "version": "2026.12.1"}], {})
    assert not result.errors
    (model,) = result.config.policies[0].difficulty_models
    assert model.sha256 == BUILTIN_DIFFICULTY_HEADS["2026.12.1"] != BUILTIN_DIFFICULTY_SHA256
    models = load_models(result.config)
    assert {head.version for policy in models.values() for head in policy.heads.values()} == {"2026.12.1"}


def oversized() -> str:
    document = json.loads(small_head())
    document["padding"] = "x" * (600 * 1024)
    return canonical_json(document)


@pytest.mark.parametrize(
    ("model", "maps", "field", "reason"),
    [
        (user_model(), {}, "configMap.name", "ConfigMap 'head-v3' does not exist"),
        (user_model(), {"head-v3": {}}, "configMap.key", "has no key 'head.json'"),
        (
            user_model(),
            {"head-v3": {FORBIDDEN_KEY: ""}},
            "configMap.name",
            "rbac.difficultyHeads.configMapNames",
        ),
        (user_model(), {"head-v3": {"head.json": "{"}}, "configMap", "is not JSON"),
        (user_model(), {"head-v3": {"head.json": "[]"}}, "configMap", "is not a head document"),
        (user_model(), {"head-v3": {"head.json": '{"format": "x"}'}}, "configMap", "head.format must be"),
        (user_model(), {"head-v3": {"head.json": oversized()}}, "configMap", "at most 524288"),
        (user_model(sha256="0" * 64), {"head-v3": {"head.json": small_head()}}, "sha256", "the policy pins"),
        (
            user_model(version="4"),
            {"head-v3": {"head.json": small_head()}},
            "version",
            "the policy names '4'",
        ),
    ],
)
def test_a_bad_head_is_an_error_on_the_policy_field(
    model: dict[str, Any], maps: dict[str, dict[str, str]], field: str, reason: str
) -> None:
    result = compile_with([model], maps)
    assert result.config is None
    assert [(e.field, reason in e.message) for e in result.errors] == [
        (f"spec.difficultyModels[0].{field}", True)
    ], result.errors


def test_a_rule_naming_an_unknown_scorer_or_route_is_an_error() -> None:
    docs = bodies([{"name": "difficulty", "builtin": True}])
    policy = next(d for d in docs if d["kind"] == "RoutingPolicy")
    policy["spec"]["rules"][2]["match"]["complexity"]["scorer"] = "nope"
    policy["spec"]["rules"][0]["match"]["semantic"]["route"] = "nope"
    parsed = [parse_object(b) for b in docs]
    objects = NamespaceObjects(
        "ns",
        [o for o in parsed if o.kind == "ModelEndpoint"],  # type: ignore[misc]
        [o for o in parsed if o.kind == "RoutingPolicy"],  # type: ignore[misc]
        [],
    )
    fields = [e.field for e in compile_namespace(objects).errors]
    assert fields == ["spec.rules[0].match.semantic.route", "spec.rules[2].match.complexity.scorer"]


def test_builtin_and_configmap_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="give either builtin: true, or configMap and sha256"):
        parse_object(the_policy([{**user_model(), "builtin": True}]))
    with pytest.raises(ValueError, match="give either builtin: true, or configMap and sha256"):
        parse_object(the_policy([{"name": "difficulty"}]))


def the_policy(models: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in bodies(models) if d["kind"] == "RoutingPolicy")


def admission(policy: dict[str, Any], maps: dict[str, dict[str, str]]) -> Any:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "modelroute.dev", "version": "v1alpha1", "kind": "RoutingPolicy"},
            "operation": "CREATE",
            "namespace": "ns",
            "name": policy["metadata"]["name"],
            "object": policy,
        },
    }
    endpoints = [d for d in bodies() if d["kind"] == "ModelEndpoint"]
    return validate(parse_review(body), endpoints, config_maps=maps)


def test_admission_refuses_a_policy_whose_head_is_missing_or_tampered() -> None:
    policy = next(d for d in bodies([user_model()]) if d["kind"] == "RoutingPolicy")
    assert referenced_config_maps([policy]) == {"head-v3"}
    assert admission(policy, {"head-v3": {"head.json": small_head()}}).allowed
    missing = admission(policy, {})
    assert not missing.allowed and "ConfigMap 'head-v3' does not exist" in missing.message
    tampered = copy.deepcopy(json.loads(small_head()))
    tampered["groups"][0]["weakFails"]["bias"] = 9.0
    refused = admission(policy, {"head-v3": {"head.json": canonical_json(tampered)}})
    assert not refused.allowed and "spec.difficultyModels[0].sha256" in refused.message
