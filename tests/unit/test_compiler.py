"""The compiler on valid input: examples against golden configs, determinism, versions, health, canaries,
chains and the mapping of every API field onto the RouterConfig contract.

`UPDATE_GOLDEN=1 pytest tests/unit/test_compiler.py` rewrites tests/unit/golden/ from the examples.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from modelroute_contract import Health, RouterConfig
from modelroute_operator.logic.compiler import (
    CompileResult,
    NamespaceObjects,
    ObjectInvalid,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.manifests import load_manifests
from modelroute_operator.logic.resources import Canary, ModelEndpoint, RoutingPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir())
NS = "team-a"


# ------------------------------------------------------------------------------------------- builders


def endpoint(name: str, *replicas: dict[str, Any], status: dict[str, Any] | None = None, **spec: Any) -> Any:
    replicas = replicas or (replica("r1", "eu-west-1"),)
    body: dict[str, Any] = {
        "kind": "ModelEndpoint",
        "metadata": {"name": name},
        "spec": {"model": f"org/{name}", **spec, "replicas": list(replicas)},
    }
    if status is not None:
        body["status"] = status
    return body


def replica(name: str, region: str, *compliance: str, **extra: Any) -> dict[str, Any]:
    url = f"https://{region}.{name}.llm.example.internal/v1"
    return {"name": name, "region": region, "url": url, "compliance": list(compliance), **extra}


def rule(name: str, *targets: str | tuple[str, int], **extra: Any) -> dict[str, Any]:
    parsed = [
        {"endpoint": t, "weight": 100} if isinstance(t, str) else {"endpoint": t[0], "weight": t[1]}
        for t in targets
    ]
    return {"name": name, "targets": parsed, **extra}


def policy(name: str, *rules: dict[str, Any], models: tuple[str, ...] = ("auto",), **spec: Any) -> Any:
    return {
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": {"virtualModels": list(models), "rules": list(rules), **spec},
    }


def canary(
    name: str, stable: str, candidate: str, *, status: dict[str, Any] | None = None, **spec: Any
) -> Any:
    body: dict[str, Any] = {
        "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "target": {"policy": "p", "rule": "main"},
            "stable": stable,
            "candidate": candidate,
            "steps": [{"weight": 10}, {"weight": 50}],
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def objects(*bodies: Mapping[str, Any], namespace: str = NS) -> NamespaceObjects:
    parsed = [parse_object(b) for b in bodies]
    return NamespaceObjects(
        namespace=namespace,
        endpoints=[o for o in parsed if isinstance(o, ModelEndpoint)],
        policies=[o for o in parsed if isinstance(o, RoutingPolicy)],
        canaries=[o for o in parsed if isinstance(o, Canary)],
    )


def compiled(*bodies: Mapping[str, Any]) -> RouterConfig:
    result = compile_namespace(objects(*bodies))
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    return result.config


def example(name: str) -> NamespaceObjects:
    manifests = load_manifests(EXAMPLES / name, namespace=name)
    assert manifests.errors == ()
    return manifests.for_namespace(name)


def pretty(config: RouterConfig) -> str:
    return json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True) + "\n"


# -------------------------------------------------------------------------------------------- golden


def test_every_example_has_a_readme_and_a_golden_config() -> None:
    assert EXAMPLE_NAMES, "examples/ is empty"
    for name in EXAMPLE_NAMES:
        assert (EXAMPLES / name / "README.md").is_file(), name
    if not os.environ.get("UPDATE_GOLDEN"):
        assert sorted(p.stem for p in GOLDEN.glob("*.json")) == EXAMPLE_NAMES


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_compiles_to_its_golden_config(name: str) -> None:
    result = compile_namespace(example(name))
    assert result.errors == (), [str(e) for e in result.errors]
    assert result.config is not None
    golden = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(pretty(result.config))
    assert pretty(result.config) == golden.read_text()
    assert RouterConfig.from_json(result.config.to_json()) == result.config


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_input_order_does_not_change_a_byte(name: str) -> None:
    source = example(name)
    expected = compile_namespace(source).config
    assert expected is not None
    rng = random.Random(name)
    for _ in range(5):
        shuffled = NamespaceObjects(
            namespace=name,
            endpoints=rng.sample(list(source.endpoints), len(source.endpoints)),
            policies=rng.sample(list(source.policies), len(source.policies)),
            canaries=rng.sample(list(source.canaries), len(source.canaries)),
        )
        config = compile_namespace(shuffled).config
        assert config is not None
        assert config.to_json() == expected.to_json()


def test_replica_and_set_order_inside_a_spec_does_not_change_the_version() -> None:
    one = compiled(
        endpoint("a", replica("x", "eu-west-1", "gdpr", "iso"), replica("y", "us-east-1")),
        policy("p", rule("main", "a", match={"metadata": {"tier": ["gold", "free"]}}), models=("m1", "m2")),
    )
    two = compiled(
        endpoint("a", replica("y", "us-east-1"), replica("x", "eu-west-1", "iso", "gdpr")),
        policy("p", rule("main", "a", match={"metadata": {"tier": ["free", "gold"]}}), models=("m2", "m1")),
    )
    assert one.version == two.version
    assert [r.name for r in one.endpoints[0].replicas] == ["x", "y"]
    assert one.endpoints[0].replicas[0].compliance == ("gdpr", "iso")


def test_version_changes_with_content_and_only_with_content() -> None:
    base = compiled(endpoint("a"), policy("p", rule("main", "a")))
    again = compiled(endpoint("a"), policy("p", rule("main", "a")))
    conditions = {"conditions": [_condition()], "observedGeneration": 3}
    status_only = compiled(endpoint("a", status=conditions), policy("p", rule("main", "a")))
    heavier = compiled(endpoint("a", replica("r1", "eu-west-1", weight=50)), policy("p", rule("main", "a")))
    renamed = compiled(endpoint("a"), policy("p", rule("main", "a"), models=("chat",)))
    assert base.version == again.version == status_only.version
    assert len({base.version, heavier.version, renamed.version}) == 3
    assert base.version.startswith("sha256:")
    base.verify()


def test_rule_order_is_kept_while_endpoints_and_policies_are_sorted() -> None:
    config = compiled(
        endpoint("zeta"),
        endpoint("alpha"),
        policy("second", rule("z-first", "zeta"), rule("a-second", "alpha"), models=("b",)),
        policy("first", rule("only", "alpha"), models=("a",)),
    )
    assert [e.name for e in config.endpoints] == ["alpha", "zeta"]
    assert [p.name for p in config.policies] == ["first", "second"]
    assert [r.name for r in config.policies[1].rules] == ["z-first", "a-second"]


def test_endpoints_no_rule_uses_are_still_compiled() -> None:
    config = compiled(endpoint("a"), endpoint("spare"), policy("p", rule("main", "a")))
    assert [e.name for e in config.endpoints] == ["a", "spare"]


# -------------------------------------------------------------------------------------------- health


def _condition() -> dict[str, Any]:
    return {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z", "reason": "Ok"}


def _health(name: str, region: str, health: str) -> dict[str, Any]:
    return {"name": name, "region": region, "health": health}


def test_replica_health_comes_from_the_endpoint_status() -> None:
    status = {
        "replicas": [
            _health("up", "eu-west-1", "Healthy"),
            _health("down", "eu-west-1", "Unhealthy"),
            _health("moved", "us-east-1", "Healthy"),  # recorded before the replica moved region
            _health("gone", "eu-west-1", "Healthy"),  # no longer in the spec
        ]
    }
    config = compiled(
        endpoint(
            "a",
            replica("up", "eu-west-1"),
            replica("down", "eu-west-1"),
            replica("moved", "eu-central-1"),
            replica("new", "eu-west-1"),
            status=status,
        ),
        policy("p", rule("main", "a")),
    )
    health = {r.name: r.health for r in config.endpoints[0].replicas}
    assert health == {
        "down": Health.UNHEALTHY,
        "moved": Health.UNKNOWN,
        "new": Health.UNKNOWN,
        "up": Health.HEALTHY,
    }


def test_a_health_change_changes_the_version() -> None:
    def with_health(value: str) -> RouterConfig:
        status = {"replicas": [_health("r1", "eu-west-1", value)]}
        return compiled(endpoint("a", status=status), policy("p", rule("main", "a")))

    assert with_health("Healthy").version != with_health("Unhealthy").version


# ------------------------------------------------------------------------------------------ canaries


@pytest.mark.parametrize(
    ("status", "weight"),
    [
        pytest.param(None, 0.0, id="no-status"),
        pytest.param({"phase": "Pending"}, 0.0, id="pending"),
        pytest.param({"phase": "Progressing", "currentWeight": 25}, 25.0, id="progressing"),
        pytest.param({"phase": "Paused", "currentWeight": 10}, 10.0, id="paused-holds"),
        pytest.param({"phase": "Promoted", "currentWeight": 50}, 100.0, id="promoted-all-in"),
        pytest.param({"phase": "RolledBack", "currentWeight": 50}, 0.0, id="rolled-back"),
    ],
)
def test_canary_weight_follows_the_phase(status: dict[str, Any] | None, weight: float) -> None:
    config = compiled(
        endpoint("v1"),
        endpoint("v2"),
        policy("p", rule("main", "v1"), rule("other", "v1")),
        canary("c", "v1", "v2", status=status, stickiness={"header": "X-User-Id"}),
    )
    main, other = config.policies[0].rules
    assert main.canary is not None
    assert main.canary.model_dump() == {
        "name": "c",
        "stable": "v1",
        "candidate": "v2",
        "candidate_weight": weight,
        "stickiness_header": "x-user-id",
        "stickiness_metadata": "",
    }
    assert [t.endpoint for t in main.targets] == ["v1"]  # the split routes to the candidate, not targets
    assert other.canary is None


def test_canary_stickiness_by_metadata() -> None:
    config = compiled(
        endpoint("v1"),
        endpoint("v2"),
        policy("p", rule("main", "v1")),
        canary("c", "v1", "v2", stickiness={"metadata": "tenant"}),
    )
    split = config.policies[0].rules[0].canary
    assert split is not None
    assert (split.stickiness_header, split.stickiness_metadata) == ("", "tenant")


def test_promoted_canary_stops_splitting_once_git_names_the_candidate() -> None:
    promoted = {"phase": "Promoted", "currentWeight": 100}
    result = compile_namespace(
        objects(
            endpoint("v1"),
            endpoint("v2"),
            policy("p", rule("main", "v2")),
            canary("c", "v1", "v2", status=promoted),
        )
    )
    assert result.errors == ()
    assert result.config is not None
    assert result.config.policies[0].rules[0].canary is None


@pytest.mark.parametrize(
    ("phase", "mirrored"),
    [
        ("Pending", False),
        ("Mirroring", True),
        ("Paused", False),
        ("Progressing", False),
        ("RolledBack", False),
    ],
)
def test_a_canary_mirrors_to_its_candidate_only_in_its_mirror_phase(phase: str, mirrored: bool) -> None:
    mirror = {"percent": 25, "pause": "5m", "maxConcurrent": 4}
    config = compiled(
        endpoint("v1"),
        endpoint("v2"),
        policy("p", rule("main", "v1"), rule("other", "v1")),
        canary("c", "v1", "v2", status={"phase": phase, "desiredWeight": 0}, mirror=mirror),
    )
    main, other = config.policies[0].rules
    assert other.shadow is None
    if mirrored:
        assert main.shadow is not None
        assert main.shadow.model_dump() == {"endpoint": "v2", "percent": 25.0, "max_concurrent": 4}
        assert main.canary is not None and main.canary.candidate_weight == 0.0
    else:
        assert main.shadow is None


@pytest.mark.parametrize(
    ("targets", "shadow", "message"),
    [
        (("v1",), {"endpoint": "v3", "percent": 5}, "already mirrors to 'v3' (spec.rules[0].shadow)"),
        (("v1", "v2"), None, "candidate 'v2' is already a target of rule 'main'"),
    ],
    ids=["rule-has-a-shadow", "candidate-is-a-target"],
)
def test_a_mirror_the_rule_cannot_take_is_refused_on_the_canary(
    targets: tuple[str, ...], shadow: dict[str, Any] | None, message: str
) -> None:
    extra = {"shadow": shadow} if shadow else {}
    result = compile_namespace(
        objects(
            endpoint("v1"),
            endpoint("v2"),
            endpoint("v3"),
            policy("p", rule("main", *targets, **extra)),
            canary("c", "v1", "v2", mirror={"percent": 50}),
        )
    )
    assert result.config is None
    assert [(e.kind, e.name, e.field) for e in result.errors] == [("Canary", "c", "spec.mirror")]
    assert message in result.errors[0].message


# ------------------------------------------------------------------------------------------- chains


def test_fallback_chain_is_flattened_in_chain_order_weight_then_name() -> None:
    config = compiled(
        *(endpoint(n) for n in ("a", "b", "c", "d", "e")),
        policy(
            "p",
            rule("main", "a", fallbackTo="second"),
            rule("second", ("c", 10), ("b", 50), ("d", 50), fallbackTo="third"),
            rule("third", "a", "e", "b"),
        ),
    )
    main, second, third = config.policies[0].rules
    assert main.fallback == ("b", "d", "c", "e")  # a is a target already, b appears once
    assert second.fallback == ("a", "e")
    assert third.fallback == ()


def test_escalation_chain_is_flattened_and_independent_of_fallback() -> None:
    config = compiled(
        *(endpoint(n) for n in ("fast", "mid", "big", "spare")),
        policy(
            "p",
            rule("simple", "fast", escalateTo="standard", fallbackTo="spare"),
            rule("standard", "mid", escalateTo="hard"),
            rule("hard", "big", fallbackTo="standard"),
            rule("spare", "spare"),
        ),
    )
    simple, standard, hard, _ = config.policies[0].rules
    assert (simple.escalation, simple.fallback) == (("mid", "big"), ("spare",))
    assert (standard.escalation, standard.fallback) == (("big",), ())
    assert (hard.escalation, hard.fallback) == ((), ("mid",))


# ------------------------------------------------------------------------------------------- mapping


def test_endpoint_fields_map_onto_the_contract() -> None:
    config = compiled(
        endpoint(
            "a",
            replica("r1", "eu-west-1", "gdpr", zone="eu-west-1a", weight=0),
            replica("r2", "eu-west-1"),
            tier="fast",
            capabilities={
                "contextWindow": 32768,
                "maxOutputTokens": 2048,
                "tools": True,
                "jsonMode": True,
                "streamUsage": False,
            },
            pricing={"inputPerMillion": 0.5, "outputPerMillion": 1.5},
            credentials={"name": "keys", "key": "provider-a"},
            timeouts={"connect": "500ms", "request": "1m30s"},
            rateLimit={"requestsPerMinute": 600},
        ),
        policy("p", rule("main", "a")),
    )
    got = config.endpoints[0].model_dump(mode="json", by_alias=True)
    assert got["credentials"] == {"secret": "keys", "key": "provider-a"}
    assert (got["connectTimeoutSeconds"], got["requestTimeoutSeconds"]) == (0.5, 90.0)
    assert got["maxRequestsPerMinute"] == 600
    assert got["capabilities"] == {
        "contextWindow": 32768,
        "maxOutputTokens": 2048,
        "streaming": True,
        "tools": True,
        "jsonMode": True,
        "streamUsage": False,
    }
    assert got["pricing"] == {"inputPerMillion": 0.5, "outputPerMillion": 1.5}
    assert (got["tier"], got["model"], got["provider"]) == ("fast", "org/a", "openai")
    assert got["replicas"][0] == {
        "name": "r1",
        "region": "eu-west-1",
        "zone": "eu-west-1a",
        "url": "https://eu-west-1.r1.llm.example.internal/v1",
        "weight": 0,
        "compliance": ["gdpr"],
        "health": "Unknown",
    }


def test_endpoint_defaults_map_onto_the_contract() -> None:
    config = compiled(endpoint("a"), policy("p", rule("main", "a")))
    got = config.endpoints[0]
    assert (got.tier, got.credentials, got.max_requests_per_minute) == ("", None, None)
    assert (got.connect_timeout_seconds, got.request_timeout_seconds) == (2.0, 60.0)


def test_policy_fields_map_onto_the_contract() -> None:
    config = compiled(
        endpoint("a", replica("r1", "eu-west-1", "gdpr")),
        policy(
            "p",
            rule(
                "main",
                "a",
                match={
                    "models": ["auto"],
                    "headers": [{"name": "X-Team", "values": ["b", "a"]}],
                    "promptTokens": {"min": 10},
                    "complexity": {"min": 20, "max": 80},
                    "dataClasses": ["eu-personal", "public"],
                },
            ),
            residency={
                "dataClasses": [
                    {"name": "pii", "requiredCompliance": ["gdpr"]},
                    {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]},
                ],
                "header": "X-Data-Class",
                "tenantDefaults": {"acme": "eu-personal"},
                "detectors": [
                    {"kind": "iban", "dataClass": "eu-personal"},
                    {"kind": "email", "dataClass": "pii"},
                ],
                "defaultClass": "pii",
            },
            locality={"preferLocal": False, "failoverOrder": ["us-east-1", "eu-west-1"]},
            resilience={
                "maxAttempts": 2,
                "retryBudgetPercent": 10,
                "perTryTimeout": "250ms",
                "deadline": "1m",
                "ejectAfterFailures": 5,
                "baseEjectionTime": "2s",
                "maxEjectionTime": "1h",
                "escalateOn": ["length"],
            },
            budgets={"maxCostPerRequestUsd": 0.02, "maxLatency": "1.5s"},
            tenantLimits=[{"tenantTier": "free", "requestsPerMinute": 5}, {"tokensPerMinute": 1000}],
        ),
    )
    got = config.policies[0].model_dump(mode="json", by_alias=True)
    assert got["rules"][0]["match"] == {
        "models": ["auto"],
        "headers": [{"name": "x-team", "values": ["a", "b"]}],
        "metadata": {},
        "promptTokens": {"min": 10, "max": None},
        "complexity": {"min": 20, "max": 80},
        "dataClasses": ["eu-personal", "public"],
    }
    assert got["residency"] == {
        "dataClasses": [
            {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]},
            {"name": "pii", "allowedRegions": [], "requiredCompliance": ["gdpr"]},
        ],
        "header": "x-data-class",
        "tenantDefaults": {"acme": "eu-personal"},
        "detectors": [{"kind": "iban", "dataClass": "eu-personal"}, {"kind": "email", "dataClass": "pii"}],
        "defaultClass": "pii",
        # the written order of dataClasses, made explicit (the contract sorts the classes by name)
        "precedence": ["pii", "eu-personal"],
    }
    assert got["locality"] == {"preferLocal": False, "failoverOrder": ["us-east-1", "eu-west-1"]}
    assert got["resilience"] == {
        "maxAttempts": 2,
        "retryBudgetPercent": 10.0,
        "perTryTimeoutSeconds": 0.25,
        "deadlineSeconds": 60.0,
        "ejectAfterFailures": 5,
        "baseEjectionSeconds": 2.0,
        "maxEjectionSeconds": 3600.0,
        "escalateOn": ["length"],
    }
    assert got["budgets"] == {"maxCostPerRequestUsd": 0.02, "maxLatencyMs": 1500}
    assert got["tenantLimits"] == [
        {"tenantTier": "free", "requestsPerMinute": 5, "tokensPerMinute": None},
        {"tenantTier": "", "requestsPerMinute": None, "tokensPerMinute": 1000},
    ]


def test_policy_defaults_map_onto_the_contract() -> None:
    got = compiled(endpoint("a"), policy("p", rule("main", "a"))).policies[0]
    assert got.resilience.escalate_on == ("error", "timeout")
    assert (got.resilience.per_try_timeout_seconds, got.resilience.deadline_seconds) == (30.0, 120.0)
    assert (got.residency.default_class, got.residency.header) == ("", "x-modelroute-data-class")
    assert (got.budgets.max_cost_per_request_usd, got.budgets.max_latency_ms) == (None, None)


def test_residency_is_satisfied_by_the_fallback_chain() -> None:
    # The target has no EU replica, but its fallback does: the rule can still serve eu-personal data.
    result = compile_namespace(
        objects(
            endpoint("us", replica("r1", "us-east-1")),
            endpoint("eu", replica("r1", "eu-west-1", "gdpr")),
            policy(
                "p",
                rule("main", "us", match={"dataClasses": ["eu-personal"]}, fallbackTo="eu"),
                rule("eu", "eu"),
                residency={
                    "dataClasses": [
                        {
                            "name": "eu-personal",
                            "allowedRegions": ["eu-west-1"],
                            "requiredCompliance": ["gdpr"],
                        }
                    ]
                },
            ),
        )
    )
    assert result.errors == ()


def test_errors_for_one_object_and_no_config_on_any_error() -> None:
    result: CompileResult = compile_namespace(
        objects(
            endpoint("a"),
            policy("good", rule("main", "a"), models=("good",)),
            policy("bad", rule("main", "missing"), rule("other", "gone"), models=("bad",)),
        )
    )
    assert result.config is None
    assert [e.field for e in result.errors_for("RoutingPolicy", "bad")] == [
        "spec.rules[0].targets[0].endpoint",
        "spec.rules[1].targets[0].endpoint",
    ]
    assert result.errors_for("RoutingPolicy", "good") == ()
    assert str(result.errors[0]) == (
        "RoutingPolicy/bad spec.rules[0].targets[0].endpoint: ModelEndpoint 'missing' does not exist in "
        "namespace 'team-a'"
    )


def test_endpoint_tls_maps_onto_the_contract() -> None:
    tls = {
        "caBundle": {"name": "llm-ca", "key": "ca.crt"},
        "clientCertificate": {"name": "llm-client"},
        "serverName": "llm.example.internal",
    }
    config = compiled(endpoint("a", tls=tls), policy("p", rule("main", "a")))
    got = config.endpoints[0].model_dump(mode="json", by_alias=True)
    assert got["tls"] == {
        "caBundle": {"secret": "llm-ca", "key": "ca.crt"},
        "clientCertificate": {"secret": "llm-client", "key": "tls.crt"},
        "clientKey": {"secret": "llm-client", "key": "tls.key"},
        "serverName": "llm.example.internal",
    }
    assert compiled(endpoint("a"), policy("p", rule("main", "a"))).endpoints[0].tls is None


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (
            {"tls": {"caBundle": {"name": "ca", "key": ".."}}},
            "spec.tls.caBundle.key",
            "'..' is not a Secret key",
        ),
        ({"credentials": {"name": "keys", "key": "."}}, "spec.credentials.key", "'.' is not a Secret key"),
        ({"tls": {}}, "spec.tls", "set caBundle, clientCertificate or serverName"),
        (
            {"tls": {"serverName": "llm.internal"}, "replicas": [{"name": "r1", "region": "eu-west-1",
                                                                 "url": "http://llm.internal/v1"}]},
            "spec.replicas[0].url",
            "spec.tls applies to https replicas only",
        ),
    ],
)  # fmt: skip
def test_endpoint_tls_and_secret_refs_are_checked(spec: dict[str, Any], field: str, message: str) -> None:
    body = endpoint("a", **{k: v for k, v in spec.items() if k != "replicas"})
    if "replicas" in spec:
        body["spec"]["replicas"] = spec["replicas"]
    result = compile_namespace(objects(body, policy("p", rule("main", "a"))))
    assert result.config is None
    errors = result.errors_for("ModelEndpoint", "a")
    assert [e.field for e in errors] == [field]
    assert message in errors[0].message


@pytest.mark.parametrize(
    ("tls", "field"),
    [
        ({"serverName": "Not A Name"}, "spec.tls.serverName"),
        ({"clientCertificate": {"name": "Bad_Name"}}, "spec.tls.clientCertificate.name"),
        ({"caBundle": {"name": "ca", "key": "a/b"}}, "spec.tls.caBundle.key"),
    ],
)
def test_malformed_tls_references_are_refused_with_the_field(tls: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(endpoint("a", tls=tls))
    assert [e.field for e in caught.value.errors] == [field]
