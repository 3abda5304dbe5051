"""values.yaml and values.schema.json: every value documented, every value constrained, bad values refused.

The schema is strict (no unknown keys), so a misspelt value fails `helm install` instead of being
silently ignored. The tests keep values.yaml, its comments and the schema in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, render_error

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

BAD_VALUES: list[tuple[str, list[str], str]] = [
    ("replicas-not-a-number", ["replicaCount=two"], "/replicaCount"),
    ("replicas-negative", ["replicaCount=-1"], "/replicaCount"),
    ("unknown-top-level-key", ["replicas=2"], "replicas"),
    ("unknown-nested-key", ["webhook.validating.failurePolicyy=Fail"], "failurePolicyy"),
    ("failure-policy-enum", ["webhook.validating.failurePolicy=Maybe"], "/webhook/validating/failurePolicy"),
    ("webhook-timeout-over-30", ["webhook.mutating.timeoutSeconds=60"], "/webhook/mutating/timeoutSeconds"),
    (
        "reinvocation-enum",
        ["webhook.mutating.reinvocationPolicy=Always"],
        "/webhook/mutating/reinvocationPolicy",
    ),
    ("pull-policy-enum", ["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    ("digest-format", ["image.digest=latest"], "/image/digest"),
    ("privileged-webhook-port", ["webhook.port=443"], "/webhook/port"),
    ("namespace-not-dns", ["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    ("port-name-too-long", ["sidecar.adminPortName=modelroute-admin-port"], "/sidecar/adminPortName"),
    (
        "enforcement-enum",
        ["webhook.validating.referencedDeletes=Ignore"],
        "/webhook/validating/referencedDeletes",
    ),
    ("same-sidecar-ports", ["sidecar.adminPort=15080"], "must differ"),
    ("sidecar-log-level", ["sidecar.logLevel=LOUD"], "/sidecar/logLevel"),
    ("anti-affinity-enum", ["podAntiAffinityPreset=medium"], "/podAntiAffinityPreset"),
    ("ratio-above-one", ["monitoring.prometheusRule.alerts.upstreamErrors.ratio=5"], "ratio"),
    ("alert-for-not-duration", ["monitoring.prometheusRule.alerts.noHealthyEndpoint.for=soon"], "/for"),
    ("cert-duration-format", ["webhook.certManager.duration=1year"], "/webhook/certManager/duration"),
    ("issuer-kind-enum", ["webhook.certManager.issuerRef.kind=Vault"], "/webhook/certManager/issuerRef"),
    ("lease-too-short", ["leaderElection.leaseSeconds=1"], "/leaderElection/leaseSeconds"),
    (
        "pdb-min-available-format",
        ["podDisruptionBudget.minAvailable=half"],
        "/podDisruptionBudget/minAvailable",
    ),
    ("same-health-and-webhook-port", ["health.enabled=true", "health.port=9443"], "must differ"),
    ("fleet-store-url-with-password", ["fleetStore.url=redis://:hunter2@redis:6379/0"], "/fleetStore/url"),
    ("fleet-store-url-scheme", ["fleetStore.url=http://redis:6379"], "/fleetStore/url"),
]


@pytest.mark.parametrize(("case", "sets", "fragment"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_is_refused_naming_it(case: str, sets: list[str], fragment: str) -> None:
    error = render_error(sets=sets)
    assert fragment in error, f"{case}: {fragment!r} not in:\n{error}"


def test_schema_is_strict_at_every_level() -> None:
    def objects(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if "properties" in node:
            yield path, node
            for key, child in node["properties"].items():
                yield from objects(child, f"{path}.{key}")

    for path, node in objects(SCHEMA, "<root>"):
        assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


def leaves(schema: dict[str, Any], values: Any, path: str = "") -> Iterator[str]:
    """Dotted paths of the values declared one by one (an empty map such as issuerRef counts as one)."""
    for key, child in schema.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        if (
            "properties" in child
            and isinstance(values, dict)
            and values.get(key)
            and isinstance(values[key], dict)
        ):
            yield from leaves(child, values[key], here)
        else:
            yield here


def declared_keys(
    schema: dict[str, Any], values: Any, path: str = ""
) -> Iterator[tuple[str, set[str], set[str]]]:
    """(path, keys in values.yaml, properties in the schema) for every object the schema details."""
    if "properties" in schema and isinstance(values, dict):
        yield path, set(values), set(schema["properties"])
        for key, child in schema["properties"].items():
            if key in values:
                yield from declared_keys(child, values[key], f"{path}.{key}" if path else key)


def test_schema_and_values_declare_the_same_keys() -> None:
    for path, in_values, in_schema in declared_keys(SCHEMA, VALUES):
        if path == "webhook.certManager.issuerRef":
            continue  # an empty map by default; the schema lists what it may hold
        extra = in_schema - in_values - {"maxUnavailable"}  # null defaults vanish from parsed YAML
        assert not in_values - in_schema, f"{path}: values without schema: {in_values - in_schema}"
        assert not extra, f"{path}: schema properties missing from values.yaml: {extra}"


def comment_above(lines: list[str], path: str) -> str:
    """The `# --` comment block right above the line declaring `path` in values.yaml."""
    parts = path.split(".")
    index, indent = -1, 0
    for depth, part in enumerate(parts):
        pattern = re.compile(rf"^{' ' * (2 * depth)}{re.escape(part)}:")
        index = next(i for i in range(index + 1, len(lines)) if pattern.match(lines[i]))
        indent = 2 * depth
    block: list[str] = []
    i = index - 1
    while i >= 0 and lines[i].startswith(" " * indent + "#"):
        block.insert(0, lines[i].strip())
        i -= 1
    return " ".join(block)


def test_every_value_is_documented_in_values_yaml() -> None:
    lines = VALUES_TEXT.splitlines()
    undocumented = [
        path for path in leaves(SCHEMA, VALUES) if not comment_above(lines, path).startswith("# --")
    ]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_every_schema_leaf_has_a_description() -> None:
    def undescribed(node: dict[str, Any], path: str) -> Iterator[str]:
        for key, child in node.get("properties", {}).items():
            here = f"{path}.{key}" if path else key
            if "properties" in child:
                yield from undescribed(child, here)
            elif not child.get("description"):
                yield here

    assert not list(undescribed(SCHEMA, ""))


def test_schema_descriptions_follow_values_yaml() -> None:
    """The schema's descriptions were taken from the values.yaml comments; they must not drift apart."""
    lines = VALUES_TEXT.splitlines()
    for path in leaves(SCHEMA, VALUES):
        node = SCHEMA
        for part in path.split("."):
            node = node["properties"][part]
        comment = " ".join(
            line.removeprefix("# --").removeprefix("#").strip()
            for line in comment_above(lines, path).split(" # ")
        )
        first_words = " ".join(node["description"].split()[:6])
        assert first_words in " ".join(comment.split()), f"{path}: schema says {node['description']!r}"
