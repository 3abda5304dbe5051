"""The API server itself refuses invalid objects (structural schema and CEL), naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube_harness import Kubectl, new_namespace, resource_name
from tests.manifests import canary, endpoint, policy, to_yaml, with_change

pytestmark = pytest.mark.integration

EP, POL, CAN = endpoint(), policy(), canary()

INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("replica-url-not-http", with_change(EP, "spec.replicas.0.url", "ftp://x"), ["spec.replicas[0].url"]),
    ("replica-name-not-dns", with_change(EP, "spec.replicas.0.name", "EU_1"), ["spec.replicas[0].name"]),
    (
        "duplicate-replica-names",
        with_change(EP, "spec.replicas.1.name", "eu-west-1"),
        ["spec.replicas", "replica names must be unique"],
    ),
    ("no-replicas", with_change(EP, "spec.replicas", []), ["spec.replicas"]),
    ("replica-weight-negative", with_change(EP, "spec.replicas.0.weight", -1), ["spec.replicas[0].weight"]),
    (
        "all-replica-weights-zero",
        with_change(with_change(EP, "spec.replicas.0.weight", 0), "spec.replicas.1.weight", 0),
        ["spec.replicas", "weight above 0"],
    ),
    (
        "health-timeout-not-below-interval",
        with_change(EP, "spec.healthCheck.timeout", "20s"),
        ["spec.healthCheck.timeout", "shorter than interval"],
    ),
    (
        "health-interval-bad-duration",
        with_change(EP, "spec.healthCheck.interval", "ten seconds"),
        ["spec.healthCheck.interval"],
    ),
    (
        "max-output-above-context",
        with_change(EP, "spec.capabilities", {"contextWindow": 4096, "maxOutputTokens": 8192}),
        ["spec.capabilities.maxOutputTokens", "contextWindow"],
    ),
    (
        "unknown-provider",
        with_change(EP, "spec.provider", "carrier-pigeon"),
        ["spec.provider", "Unsupported value"],
    ),
    ("missing-model", with_change(EP, "spec.model", ...), ["spec.model", "Required"]),
    (
        "negative-price",
        with_change(EP, "spec.pricing", {"inputPerMillion": -1}),
        ["spec.pricing.inputPerMillion"],
    ),
    (
        "inline-credential-field",
        with_change(EP, "spec.credentials", {"name": "s"}),
        ["spec.credentials.key", "Required"],
    ),
    (
        "duplicate-rule-names",
        with_change(POL, "spec.rules", POL["spec"]["rules"] * 2),
        ["spec.rules", "rule names must be unique"],
    ),
    (
        "fallback-to-self",
        with_change(POL, "spec.rules.0.fallbackTo", "default"),
        ["spec.rules[0].fallbackTo", "itself"],
    ),
    (
        "fallback-to-unknown-rule",
        with_change(POL, "spec.rules.0.fallbackTo", "nowhere"),
        ["spec.rules", "fallbackTo must name a rule"],
    ),
    ("no-virtual-models", with_change(POL, "spec.virtualModels", []), ["spec.virtualModels"]),
    (
        "duplicate-virtual-models",
        with_change(POL, "spec.virtualModels", ["a", "a"]),
        ["spec.virtualModels", "unique"],
    ),
    (
        "target-weights-all-zero",
        with_change(POL, "spec.rules.0.targets.0.weight", 0),
        ["spec.rules[0].targets", "weight above 0"],
    ),
    (
        "data-class-without-restriction",
        with_change(POL, "spec.residency.dataClasses.0", {"name": "x"}),
        ["spec.residency.dataClasses[0]", "restrict regions"],
    ),
    (
        "data-class-named-public",
        with_change(POL, "spec.residency.dataClasses.0.name", "public"),
        ["spec.residency.dataClasses", "reserved"],
    ),
    (
        "complexity-min-above-max",
        with_change(POL, "spec.rules.0.match", {"complexity": {"min": 80, "max": 20}}),
        ["spec.rules[0].match.complexity.min", "min must not exceed max"],
    ),
    (
        "per-try-above-deadline",
        with_change(POL, "spec.resilience", {"perTryTimeout": "5m", "deadline": "1m"}),
        ["spec.resilience.perTryTimeout", "deadline"],
    ),
    (
        "unknown-detector",
        with_change(POL, "spec.residency.detectors", [{"kind": "ssn", "dataClass": "eu-personal"}]),
        ["spec.residency.detectors[0].kind", "Unsupported value"],
    ),
    (
        "pattern-detector-without-name",
        with_change(
            POL, "spec.residency.detectors", [{"kind": "pattern", "pattern": "x", "dataClass": "eu-personal"}]
        ),
        ["spec.residency.detectors[0]", "name and pattern are required with kind 'pattern'"],
    ),
    (
        "pattern-on-an-email-detector",
        with_change(
            POL, "spec.residency.detectors", [{"kind": "email", "pattern": "x", "dataClass": "eu-personal"}]
        ),
        ["spec.residency.detectors[0]", "not allowed with other kinds"],
    ),
    (
        "pattern-too-long",
        with_change(
            POL,
            "spec.residency.detectors",
            [{"kind": "pattern", "name": "long", "pattern": "a" * 1025, "dataClass": "eu-personal"}],
        ),
        ["spec.residency.detectors[0].pattern", "1024"],
    ),
    (
        "unknown-spec-field",
        with_change(POL, "spec.routes", []),
        ["spec.routes", "field not declared in schema"],
    ),
    (
        "canary-candidate-equals-stable",
        with_change(CAN, "spec.candidate", "llama"),
        ["spec.candidate", "differ from stable"],
    ),
    (
        "canary-steps-not-increasing",
        with_change(CAN, "spec.steps", [{"weight": 50}, {"weight": 10}]),
        ["spec.steps", "strictly increase"],
    ),
    ("canary-step-weight-over-100", with_change(CAN, "spec.steps.1.weight", 150), ["spec.steps[1].weight"]),
    (
        "canary-abort-and-promote",
        with_change(with_change(CAN, "spec.abort", True), "spec.promote", True),
        ["spec.promote", "cannot both"],
    ),
    (
        "canary-stickiness-both",
        with_change(CAN, "spec.stickiness", {"header": "x-user", "metadata": "tenant"}),
        ["spec.stickiness", "exactly one"],
    ),
    # ---- issue 12: no credentials in URLs, no hop-by-hop matches, bounded scores and names
    (
        "replica-url-with-user-info",
        with_change(EP, "spec.replicas.0.url", "https://svc:hunter2@eu.example/v1"),
        ["spec.replicas[0].url", "user-info"],
    ),
    (
        "header-match-on-hop-by-hop",
        with_change(POL, "spec.rules.0.match", {"headers": [{"name": "Transfer-Encoding", "values": ["x"]}]}),
        ["spec.rules[0].match.headers[0].name", "hop-by-hop"],
    ),
    (
        "residency-header-hop-by-hop",
        with_change(POL, "spec.residency.header", "connection"),
        ["spec.residency.header", "hop-by-hop"],
    ),
    (
        "stickiness-header-hop-by-hop",
        with_change(CAN, "spec.stickiness", {"header": "Upgrade"}),
        ["spec.stickiness.header", "hop-by-hop"],
    ),
    (
        "complexity-above-100",
        with_change(POL, "spec.rules.0.match", {"complexity": {"max": 101}}),
        ["spec.rules[0].match.complexity.max"],
    ),
    (
        "metadata-key-not-a-header-token",
        with_change(POL, "spec.rules.0.match", {"metadata": {"Tenant Name": ["a"]}}),
        ["spec.rules[0].match.metadata", "header tokens"],
    ),
    (
        "tenant-tokens-per-minute-zero",
        with_change(POL, "spec.tenantLimits", [{"tokensPerMinute": 0}]),
        ["spec.tenantLimits[0].tokensPerMinute"],
    ),
    (
        "max-output-tokens-negative",
        with_change(EP, "spec.capabilities", {"maxOutputTokens": -1}),
        ["spec.capabilities.maxOutputTokens"],
    ),
    (
        "name-longer-than-a-reference",
        with_change(EP, "metadata.name", "a" * 64),
        ["metadata.name", "DNS label of at most 63"],
    ),
    (
        "name-with-a-dot",
        with_change(POL, "metadata.name", "support.v2"),
        ["metadata.name", "DNS label of at most 63"],
    ),
]


@pytest.fixture(scope="module")
def admission_ns(kubectl: Kubectl) -> str:
    return new_namespace(kubectl, "admission")


def test_valid_bases_are_accepted(kubectl: Kubectl, admission_ns: str) -> None:
    kubectl.run("apply", "-n", admission_ns, "--dry-run=server", "-f", "-", stdin=to_yaml(EP, POL, CAN))


@pytest.mark.parametrize(("case", "obj", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_object_is_refused_naming_the_field(
    kubectl: Kubectl, admission_ns: str, case: str, obj: dict[str, Any], expected: list[str]
) -> None:
    proc = kubectl.run(
        "apply", "-n", admission_ns, "--server-side", "-f", "-", stdin=to_yaml(obj), check=False
    )
    assert proc.returncode != 0, f"{case}: the API server accepted an invalid object"
    for fragment in expected:
        assert fragment in proc.stderr, f"{case}: {fragment!r} not in error:\n{proc.stderr}"
    assert kubectl.get(resource_name(obj["kind"]), obj["metadata"]["name"], admission_ns) is None


def test_at_least_fifteen_invalid_cases() -> None:
    assert len(INVALID) >= 15
