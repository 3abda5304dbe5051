"""The compiler and `parse_object` on invalid input: every problem is reported on the right object, at the
exact field, with a message that says why — and a namespace with any error yields no config at all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from modelroute_operator.logic.compiler import (
    CompileError,
    NamespaceObjects,
    ObjectInvalid,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.resources import Canary, ModelEndpoint, RoutingPolicy

NS = "team-a"
Body = dict[str, Any]

EU_PERSONAL = {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]}


def valid() -> dict[str, Body]:
    """A small valid namespace each case breaks in one place: EU endpoint `eu`, US endpoint `us`, policy
    `p` with rules main -> spare, and Canary `c` shifting main from `eu` to `eu-next`."""
    return {
        "eu": _endpoint("eu", _replica("r1", "eu-west-1", "gdpr")),
        "eu-next": _endpoint("eu-next", _replica("r1", "eu-west-1", "gdpr")),
        "us": _endpoint("us", _replica("r1", "us-east-1")),
        "p": {
            "kind": "RoutingPolicy",
            "metadata": {"name": "p"},
            "spec": {
                "virtualModels": ["auto"],
                "residency": {"dataClasses": [copy.deepcopy(EU_PERSONAL)]},
                "rules": [
                    {
                        "name": "main",
                        "match": {"dataClasses": ["eu-personal"]},
                        "targets": [{"endpoint": "eu"}],
                        "fallbackTo": "spare",
                    },
                    {"name": "spare", "targets": [{"endpoint": "us"}]},
                ],
            },
        },
        "c": {
            "apiVersion": "modelroute.dev/v1alpha1",
            "kind": "Canary",
            "metadata": {"name": "c"},
            "spec": {
                "target": {"policy": "p", "rule": "main"},
                "stable": "eu",
                "candidate": "eu-next",
                "steps": [{"weight": 10}, {"weight": 50}],
            },
        },
    }


def _endpoint(name: str, *replicas: Body) -> Body:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": name},
        "spec": {"model": f"org/{name}", "replicas": list(replicas)},
    }


def _replica(name: str, region: str, *compliance: str) -> Body:
    return {
        "name": name,
        "region": region,
        "url": f"https://{region}.llm.example.internal/v1",
        "compliance": list(compliance),
    }


def _compile(bodies: Mapping[str, Body]) -> tuple[CompileError, ...]:
    parsed = [parse_object(b) for b in bodies.values()]
    result = compile_namespace(
        NamespaceObjects(
            namespace=NS,
            endpoints=[o for o in parsed if isinstance(o, ModelEndpoint)],
            policies=[o for o in parsed if isinstance(o, RoutingPolicy)],
            canaries=[o for o in parsed if isinstance(o, Canary)],
        )
    )
    assert (result.config is None) == bool(result.errors)
    return result.errors


def test_the_base_namespace_is_valid() -> None:
    assert _compile(valid()) == ()


Mutation = Callable[[dict[str, Body]], object]


def _spec(name: str) -> Callable[[dict[str, Body]], Body]:
    return lambda ns: ns[name]["spec"]


def _rules(ns: dict[str, Body]) -> list[Body]:
    rules: list[Body] = ns["p"]["spec"]["rules"]
    return rules


def _second_policy(ns: dict[str, Body]) -> None:
    ns["q"] = copy.deepcopy(ns["p"])
    ns["q"]["metadata"]["name"] = "q"


def _second_canary(ns: dict[str, Body]) -> None:
    ns["d"] = copy.deepcopy(ns["c"])
    ns["d"]["metadata"]["name"] = "d"


def _set(path: str, value: Any) -> Mutation:
    """Set `value` at a dotted path (list indexes as numbers) in the namespace's bodies."""

    def mutate(ns: dict[str, Body]) -> None:
        *parents, last = path.split(".")
        node: Any = ns
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(ns: dict[str, Body]) -> None:
        for m in mutations:
            m(ns)

    return mutate


CASES = [
    # ---- native providers: the contract's rule, at the field
    pytest.param(
        _set("us.spec.provider", "azure-openai"),
        ("ModelEndpoint", "us", "spec.credentials"),
        "provider azure-openai needs credentials",
        id="native-provider-without-credentials",
    ),
    pytest.param(
        lambda ns: ns["us"]["spec"].update(provider="azure-openai", credentials={"name": "k", "key": "apiKey"}),
        ("ModelEndpoint", "us", "spec.providerSettings.apiVersion"),
        "is required for provider azure-openai",
        id="azure-without-api-version",
    ),
    pytest.param(
        lambda ns: ns["us"]["spec"].update(provider="bedrock", credentials={"name": "k", "key": "keys.json"},
                                           replicas=[_replica("r1", "us-east")]),
        ("ModelEndpoint", "us", "spec.replicas[0].region"),
        "'us-east' is not an AWS region",
        id="bedrock-region-not-aws",
    ),
    pytest.param(
        lambda ns: ns["us"]["spec"].update(
            provider="gemini", credentials={"name": "k", "key": "sa.json"}, providerSettings={"auth": "service-account"}
        ),
        ("ModelEndpoint", "us", "spec.providerSettings.project"),
        "is required with auth service-account",
        id="vertex-without-project",
    ),
    pytest.param(
        _set("us.spec.providerSettings", {"apiVersion": "2024-10-21"}),
        ("ModelEndpoint", "us", "spec.providerSettings"),
        "provider openai takes none",
        id="settings-on-openai",
    ),
    # ---- references
    pytest.param(
        _set("p.spec.rules.1.targets.0.endpoint", "gpt-5"),
        ("RoutingPolicy", "p", "spec.rules[1].targets[0].endpoint"),
        "ModelEndpoint 'gpt-5' does not exist in namespace 'team-a'",
        id="unknown-target-endpoint",
    ),
    pytest.param(
        _set("p.spec.rules.0.fallbackTo", "nowhere"),
        ("RoutingPolicy", "p", "spec.rules[0].fallbackTo"),
        "rule 'nowhere' does not exist in this policy",
        id="unknown-fallback-rule",
    ),
    pytest.param(
        _set("p.spec.rules.1.escalateTo", "nowhere"),
        ("RoutingPolicy", "p", "spec.rules[1].escalateTo"),
        "rule 'nowhere' does not exist in this policy",
        id="unknown-escalate-rule",
    ),
    pytest.param(
        _set("p.spec.rules.1.fallbackTo", "main"),
        ("RoutingPolicy", "p", "spec.rules[0].fallbackTo"),
        "fallbackTo chain forms a cycle: main → spare → main",
        id="fallback-cycle",
    ),
    pytest.param(
        _set("p.spec.rules.0.fallbackTo", "main"),
        ("RoutingPolicy", "p", "spec.rules[0].fallbackTo"),
        "fallbackTo chain forms a cycle: main → main",
        id="fallback-to-itself",
    ),
    pytest.param(
        _both(_set("p.spec.rules.0.escalateTo", "spare"), _set("p.spec.rules.1.escalateTo", "main")),
        ("RoutingPolicy", "p", "spec.rules[0].escalateTo"),
        "escalateTo chain forms a cycle: main → spare → main",
        id="escalate-cycle",
    ),
    # ---- virtual models
    pytest.param(
        _second_policy,
        ("RoutingPolicy", "q", "spec.virtualModels[0]"),
        "virtual model 'auto' is already served by RoutingPolicy 'p'",
        id="virtual-model-in-two-policies",
    ),
    pytest.param(
        _set("p.spec.rules.0.match.models", ["auto", "chat"]),
        ("RoutingPolicy", "p", "spec.rules[0].match.models[1]"),
        "virtual model 'chat' is not served by this policy (auto)",
        id="match-model-not-served",
    ),
    pytest.param(
        _set("p.spec.virtualModels", ["auto", "chat", "auto"]),
        ("RoutingPolicy", "p", "spec.virtualModels[2]"),
        "'auto' is listed twice (first at index 0)",
        id="virtual-model-twice-in-policy",
    ),
    # ---- data classes
    pytest.param(
        _set("p.spec.rules.1.match", {"dataClasses": ["secret"]}),
        ("RoutingPolicy", "p", "spec.rules[1].match.dataClasses[0]"),
        "data class 'secret' is not declared in spec.residency (eu-personal, public)",
        id="unknown-class-in-match",
    ),
    pytest.param(
        _set("p.spec.residency.tenantDefaults", {"acme": "eu-personal", "globex": "us-personal"}),
        ("RoutingPolicy", "p", "spec.residency.tenantDefaults[globex]"),
        "data class 'us-personal' is not declared",
        id="unknown-class-in-tenant-defaults",
    ),
    pytest.param(
        _set("p.spec.residency.defaultClass", "confidential"),
        ("RoutingPolicy", "p", "spec.residency.defaultClass"),
        "data class 'confidential' is not declared",
        id="unknown-default-class",
    ),
    pytest.param(
        _set("p.spec.residency.detectors", [{"kind": "email", "dataClass": "pii"}]),
        ("RoutingPolicy", "p", "spec.residency.detectors[0].dataClass"),
        "data class 'pii' is not declared",
        id="unknown-class-in-detector",
    ),
    pytest.param(
        _set(
            "p.spec.residency.detectors",
            [
                {"kind": "email", "dataClass": "eu-personal"},
                {
                    "kind": "pattern",
                    "name": "employee-id",
                    "pattern": r"EMP-\d{6}",
                    "dataClass": "eu-personal",
                },
                {"kind": "pattern", "name": "badge", "pattern": r"(B-\d+", "dataClass": "eu-personal"},
            ],
        ),
        ("RoutingPolicy", "p", "spec.residency.detectors[2].pattern"),
        "pattern is not a valid RE2 regular expression: missing ): (B-\\d+",
        id="pattern-detector-invalid-re2",
    ),
    pytest.param(
        _set(
            "p.spec.residency.detectors",
            [{"kind": "pattern", "name": "twin", "pattern": r"(x)\1", "dataClass": "eu-personal"}],
        ),
        ("RoutingPolicy", "p", "spec.residency.detectors[0].pattern"),
        "not a valid RE2 regular expression: invalid escape sequence: \\1",
        id="pattern-detector-backreference",
    ),
    pytest.param(
        _set("p.spec.residency.detectors", [{"kind": "pattern", "pattern": "x", "dataClass": "eu-personal"}]),
        ("RoutingPolicy", "p", "spec.residency.detectors[0].name"),
        "name is required with kind 'pattern'",
        id="pattern-detector-without-name",
    ),
    pytest.param(
        _set("p.spec.residency.detectors", [{"kind": "pattern", "name": "n", "dataClass": "eu-personal"}]),
        ("RoutingPolicy", "p", "spec.residency.detectors[0].pattern"),
        "pattern is required with kind 'pattern'",
        id="pattern-detector-without-pattern",
    ),
    pytest.param(
        _set("p.spec.residency.detectors", [{"kind": "email", "pattern": "x", "dataClass": "eu-personal"}]),
        ("RoutingPolicy", "p", "spec.residency.detectors[0].pattern"),
        "pattern is only allowed with kind 'pattern' (kind is 'email')",
        id="pattern-on-a-builtin-detector",
    ),
    pytest.param(
        _set(
            "p.spec.residency.detectors",
            [
                {"kind": "pattern", "name": "same", "pattern": p, "dataClass": "eu-personal"}
                for p in ("a", "b")
            ],
        ),
        ("RoutingPolicy", "p", "spec.residency.detectors[1].name"),
        "'same' is listed twice (first at index 0)",
        id="pattern-detector-name-twice",
    ),
    pytest.param(
        _set(
            "p.spec.residency.detectors",
            [
                {"kind": "pattern", "name": f"p{i}", "pattern": f"x{i}", "dataClass": "eu-personal"}
                for i in range(33)
            ],
        ),
        ("RoutingPolicy", "p", "spec.residency.detectors"),
        "33 detectors of kind 'pattern', at most 32",
        id="too-many-pattern-detectors",
    ),
    pytest.param(
        _set(
            "p.spec.residency.dataClasses", [EU_PERSONAL, {"name": "public", "allowedRegions": ["eu-west-1"]}]
        ),
        ("RoutingPolicy", "p", "spec.residency.dataClasses[1].name"),
        "'public' is reserved for unrestricted data",
        id="public-class-redefined",
    ),
    pytest.param(
        _set("p.spec.residency.dataClasses", [EU_PERSONAL, EU_PERSONAL]),
        ("RoutingPolicy", "p", "spec.residency.dataClasses[1].name"),
        "'eu-personal' is listed twice",
        id="data-class-twice",
    ),
    pytest.param(
        _set("p.spec.residency.dataClasses", [EU_PERSONAL, {"name": "loose"}]),
        ("RoutingPolicy", "p", "spec.residency.dataClasses[1]"),
        "a data class must restrict regions or require compliance labels",
        id="data-class-restricting-nothing",
    ),
    # ---- residency and locality
    pytest.param(
        _set("p.spec.rules.0.targets.0.endpoint", "us"),
        ("RoutingPolicy", "p", "spec.rules[0].match.dataClasses[0]"),
        "residency rules leave no possible endpoint for data class 'eu-personal': no replica of us "
        "runs in an allowed region (eu-west-1) and carries gdpr",
        id="residency-no-endpoint-region",
    ),
    pytest.param(
        _set("eu.spec.replicas.0.compliance", ["iso27001"]),
        ("RoutingPolicy", "p", "spec.rules[0].match.dataClasses[0]"),
        "residency rules leave no possible endpoint for data class 'eu-personal': no replica of eu, us",
        id="residency-no-endpoint-compliance",
    ),
    pytest.param(
        _set("p.spec.locality", {"failoverOrder": ["eu-west-1", "us-east-1", "eu-west-1"]}),
        ("RoutingPolicy", "p", "spec.locality.failoverOrder[2]"),
        "'eu-west-1' is listed twice (first at index 0)",
        id="failover-order-duplicate",
    ),
    # ---- canaries
    pytest.param(
        _set("c.spec.target.policy", "support"),
        ("Canary", "c", "spec.target.policy"),
        "RoutingPolicy 'support' does not exist in namespace 'team-a'",
        id="canary-unknown-policy",
    ),
    pytest.param(
        _set("c.spec.target.rule", "default"),
        ("Canary", "c", "spec.target.rule"),
        "rule 'default' does not exist in RoutingPolicy 'p' (main, spare)",
        id="canary-unknown-rule",
    ),
    pytest.param(
        _set("c.spec.stable", "us"),
        ("Canary", "c", "spec.stable"),
        "ModelEndpoint 'us' is not a target of rule 'main' in RoutingPolicy 'p' (targets: eu)",
        id="canary-stable-not-in-rule",
    ),
    pytest.param(
        _set("c.spec.candidate", "eu-v3"),
        ("Canary", "c", "spec.candidate"),
        "ModelEndpoint 'eu-v3' does not exist in namespace 'team-a'",
        id="canary-unknown-candidate",
    ),
    pytest.param(
        _second_canary,
        ("Canary", "d", "spec.target.rule"),
        "rule 'main' of RoutingPolicy 'p' already has Canary 'c'",
        id="two-canaries-on-one-rule",
    ),
    pytest.param(
        _set("c.spec.candidate", "us"),
        ("Canary", "c", "spec.candidate"),
        "residency rules leave no possible replica of candidate 'us' for data class 'eu-personal' that rule "
        "'main' matches",
        id="canary-candidate-breaks-residency",
    ),
    pytest.param(
        _set("c.spec.candidate", "eu"),
        ("Canary", "c", "spec.candidate"),
        "candidate must differ from stable",
        id="canary-candidate-is-stable",
    ),
    pytest.param(
        _set("c.spec.steps", [{"weight": 20}, {"weight": 20}, {"weight": 50}]),
        ("Canary", "c", "spec.steps[1].weight"),
        "step weights must strictly increase",
        id="canary-steps-not-increasing",
    ),
    pytest.param(
        _both(_set("c.spec.abort", True), _set("c.spec.promote", True)),
        ("Canary", "c", "spec.promote"),
        "abort and promote cannot both be set",
        id="canary-abort-and-promote",
    ),
    pytest.param(
        _set("c.spec.stickiness", {"header": "x-user-id", "metadata": "tenant"}),
        ("Canary", "c", "spec.stickiness"),
        "set exactly one of header or metadata",
        id="canary-two-stickiness-keys",
    ),
    # ---- invariants the CRD checks with CEL, repeated for manifests that never met the API server
    pytest.param(
        _set("p.spec.rules.1.name", "main"),
        ("RoutingPolicy", "p", "spec.rules[1].name"),
        "'main' is listed twice",
        id="rule-name-twice",
    ),
    pytest.param(
        _set("p.spec.rules.1.targets", [{"endpoint": "us"}, {"endpoint": "us", "weight": 5}]),
        ("RoutingPolicy", "p", "spec.rules[1].targets[1].endpoint"),
        "'us' is listed twice",
        id="target-twice",
    ),
    pytest.param(
        _set("p.spec.rules.1.targets.0.weight", 0),
        ("RoutingPolicy", "p", "spec.rules[1].targets"),
        "at least one target must have a weight above 0",
        id="targets-all-weight-zero",
    ),
    pytest.param(
        _set("p.spec.rules.1.match", {"complexity": {"min": 80, "max": 20}}),
        ("RoutingPolicy", "p", "spec.rules[1].match.complexity.min"),
        "min must not exceed max",
        id="complexity-range-inverted",
    ),
    pytest.param(
        _set("p.spec.resilience", {"perTryTimeout": "2m", "deadline": "60s"}),
        ("RoutingPolicy", "p", "spec.resilience.perTryTimeout"),
        "perTryTimeout must not exceed deadline",
        id="per-try-timeout-over-deadline",
    ),
    pytest.param(
        _set("p.spec.tenantLimits", [{"tenantTier": "free", "requestsPerMinute": 5}, {"tenantTier": "free"}]),
        ("RoutingPolicy", "p", "spec.tenantLimits[1].tenantTier"),
        "'free' is listed twice",
        id="tenant-limit-twice",
    ),
    pytest.param(
        _set("us.spec.replicas", [_replica("r1", "us-east-1"), _replica("r1", "us-west-2")]),
        ("ModelEndpoint", "us", "spec.replicas[1].name"),
        "'r1' is listed twice",
        id="replica-name-twice",
    ),
    pytest.param(
        _set("us.spec.replicas.0.weight", 0),
        ("ModelEndpoint", "us", "spec.replicas"),
        "at least one replica must have a weight above 0",
        id="replicas-all-weight-zero",
    ),
    pytest.param(
        _set("us.spec.capabilities", {"contextWindow": 4096, "maxOutputTokens": 8192}),
        ("ModelEndpoint", "us", "spec.capabilities.maxOutputTokens"),
        "maxOutputTokens must not exceed contextWindow",
        id="output-over-context-window",
    ),
    pytest.param(
        _set("us.spec.healthCheck", {"interval": "5s", "timeout": "5s"}),
        ("ModelEndpoint", "us", "spec.healthCheck.timeout"),
        "timeout must be shorter than interval",
        id="probe-timeout-not-below-interval",
    ),
    # ---- residency precedence and tenant names
    pytest.param(
        _set("p.spec.residency.precedence", ["eu-personal", "secret"]),
        ("RoutingPolicy", "p", "spec.residency.precedence[1]"),
        "data class 'secret' is not declared in spec.residency.dataClasses",
        id="precedence-unknown-class",
    ),
    pytest.param(
        _set("p.spec.residency.precedence", ["eu-personal", "eu-personal"]),
        ("RoutingPolicy", "p", "spec.residency.precedence[1]"),
        "eu-personal",
        id="precedence-repeats-a-class",
    ),
    pytest.param(
        _set("p.spec.residency.tenantDefaults", {"Acme": "eu-personal", "acme": "eu-personal"}),
        ("RoutingPolicy", "p", "spec.residency.tenantDefaults[acme]"),
        "tenants are matched case-insensitively",
        id="tenant-keys-collide-after-casefold",
    ),
]


@pytest.mark.parametrize(("mutate", "where", "phrase"), CASES)
def test_invalid_namespace_is_rejected_at_the_field(
    mutate: Mutation, where: tuple[str, str, str], phrase: str
) -> None:
    bodies = valid()
    mutate(bodies)
    errors = _compile(bodies)
    at_field = [e for e in errors if (e.kind, e.name, e.field) == where]
    assert at_field, f"no error at {where}; got {[str(e) for e in errors]}"
    assert any(phrase in e.message for e in at_field), [e.message for e in at_field]


def test_duplicate_object_names_are_rejected() -> None:
    bodies = valid()
    parsed = [parse_object(b) for b in bodies.values()]
    endpoints = [o for o in parsed if isinstance(o, ModelEndpoint)]
    twice = [*endpoints, *(o for o in endpoints if o.metadata.name == "us")]
    result = compile_namespace(
        NamespaceObjects(NS, twice, [o for o in parsed if isinstance(o, RoutingPolicy)], [])
    )
    assert result.config is None
    assert [str(e) for e in result.errors] == [
        "ModelEndpoint/us metadata.name: ModelEndpoint 'us' is defined more than once"
    ]


def test_every_error_is_collected_and_sorted() -> None:
    bodies = valid()
    _set("p.spec.rules.1.targets.0.endpoint", "nope")(bodies)
    _set("p.spec.rules.1.fallbackTo", "nowhere")(bodies)
    _set("c.spec.candidate", "ghost")(bodies)
    _set("us.spec.replicas.0.weight", 0)(bodies)
    errors = _compile(bodies)
    assert [(e.kind, e.name, e.field) for e in errors] == [
        ("Canary", "c", "spec.candidate"),
        ("ModelEndpoint", "us", "spec.replicas"),
        ("RoutingPolicy", "p", "spec.rules[1].fallbackTo"),
        ("RoutingPolicy", "p", "spec.rules[1].targets[0].endpoint"),
    ]


def test_a_cycle_is_reported_once_and_rules_leading_into_it_are_not_blamed() -> None:
    bodies = valid()
    _rules(bodies).insert(0, {"name": "entry", "targets": [{"endpoint": "us"}], "fallbackTo": "main"})
    _set("p.spec.rules.2.fallbackTo", "main")(bodies)  # main -> spare -> main
    errors = _compile(bodies)
    assert [(e.field, e.message) for e in errors] == [
        ("spec.rules[1].fallbackTo", "fallbackTo chain forms a cycle: main → spare → main")
    ]


# ------------------------------------------------------------------------------------- parse_object


def _with(body: Body, path: str, value: Any) -> Body:
    ns = {"x": copy.deepcopy(body)}
    _set(f"x.{path}", value)(ns)
    return ns["x"]


def _without(body: Body, path: str) -> Body:
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    del node[last]
    return changed


ENDPOINT, POLICY, CANARY = valid()["eu"], valid()["p"], valid()["c"]

PARSE_CASES = [
    pytest.param(
        _with(
            POLICY,
            "spec.residency.detectors",
            [{"kind": "pattern", "name": "long", "pattern": "a" * 1025, "dataClass": "eu-personal"}],
        ),
        "spec.residency.detectors[0].pattern",
        "at most 1024 characters",
        id="pattern-too-long",
    ),
    pytest.param(
        _with(ENDPOINT, "spec.replicas.0.url", "ftp://eu.example.internal"),
        "spec.replicas[0].url",
        "'ftp://eu.example.internal' is not an http(s) URL",
        id="bad-url",
    ),
    pytest.param(
        _with(POLICY, "spec.rules.0.targets.0.weight", -5),
        "spec.rules[0].targets[0].weight",
        "greater than or equal to 0",
        id="negative-weight",
    ),
    pytest.param(
        _with(POLICY, "spec.resilience", {"deadline": "5 minutes"}),
        "spec.resilience.deadline",
        "'5 minutes' is not a duration such as 500ms, 10s or 1m30s",
        id="bad-duration",
    ),
    pytest.param(
        _without(ENDPOINT, "spec.replicas"),
        "spec.replicas",
        "required field is missing",
        id="missing-replicas",
    ),
    pytest.param(
        _with(ENDPOINT, "spec.replicas", []), "spec.replicas", "at least 1 item", id="empty-replicas"
    ),
    pytest.param(_with(ENDPOINT, "spec.replica", []), "spec.replica", "unknown field", id="unknown-field"),
    pytest.param(
        _with(ENDPOINT, "spec.replicas.0.region", "EU-West"),
        "spec.replicas[0].region",
        "'EU-West' is not a valid name",
        id="bad-region-name",
    ),
    pytest.param(
        _with(ENDPOINT, "spec.credentials", {"name": "keys", "value": "sk-123"}),
        "spec.credentials.value",
        "unknown field",
        id="inline-credential",
    ),
    pytest.param(
        _with(ENDPOINT, "spec.provider", "cohere"),
        "spec.provider",
        "Input should be 'openai', 'azure-openai'",
        id="bad-provider",
    ),
    pytest.param(
        _with(POLICY, "spec.residency.detectors", [{"kind": "ssn", "dataClass": "eu-personal"}]),
        "spec.residency.detectors[0].kind",
        "'email', 'phone', 'card', 'iban' or 'pattern'",
        id="bad-detector-kind",
    ),
    pytest.param(_with(POLICY, "spec.rules", []), "spec.rules", "at least 1 item", id="no-rules"),
    pytest.param(
        _with(CANARY, "spec.steps.0.weight", 0),
        "spec.steps[0].weight",
        "greater than or equal to 1",
        id="canary-step-weight-zero",
    ),
    pytest.param(
        _with(CANARY, "spec.analysis", {"maxErrorRatePercent": 150}),
        "spec.analysis.maxErrorRatePercent",
        "less than or equal to 100",
        id="percent-over-100",
    ),
    pytest.param(
        _without(CANARY, "spec.target"), "spec.target", "required field is missing", id="canary-no-target"
    ),
    pytest.param(_with(CANARY, "kind", "Canery"), "kind", "kind must be one of", id="unknown-kind"),
    pytest.param(
        _with(CANARY, "apiVersion", "modelroute.dev/v1"),
        "apiVersion",
        "must be modelroute.dev/v1alpha1 (got 'modelroute.dev/v1')",
        id="wrong-api-version",
    ),
    pytest.param(
        _without(CANARY, "metadata.name"), "metadata.name", "required field is missing", id="no-name"
    ),
]


@pytest.mark.parametrize(("body", "field", "phrase"), PARSE_CASES)
def test_parse_object_names_the_field(body: Body, field: str, phrase: str) -> None:
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(body)
    at_field = [e for e in caught.value.errors if e.field == field]
    assert at_field, f"no error at {field}; got {[str(e) for e in caught.value.errors]}"
    assert any(phrase in e.message for e in at_field), [e.message for e in at_field]


def test_parse_object_reports_every_field_and_the_object() -> None:
    body = _with(ENDPOINT, "spec.replicas.0.url", "not a url")
    body = _with(body, "spec.timeouts", {"connect": "soon"})
    with pytest.raises(ObjectInvalid) as caught:
        parse_object(body)
    assert [str(e) for e in caught.value.errors] == [
        "ModelEndpoint/eu spec.timeouts.connect: 'soon' is not a duration such as 500ms, 10s or 1m30s",
        "ModelEndpoint/eu spec.replicas[0].url: 'not a url' is not an http(s) URL",
    ]
    assert "spec.timeouts.connect" in str(caught.value)


def test_distinct_invalid_inputs_are_many() -> None:
    assert len(CASES) + len(PARSE_CASES) >= 25
