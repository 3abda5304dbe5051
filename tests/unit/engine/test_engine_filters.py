"""Filters, one table each: residency, health, weight, capabilities, ejection, cost and latency budgets."""

from __future__ import annotations

from typing import Any

import pytest
from engine_builders import FakeHealth, candidate, features, traits

from modelroute_sidecar.engine.filters import (
    ListSummary,
    ResidencyRule,
    apply_cost_budget,
    apply_latency_budget,
    capability_drop,
    drop_ejected,
    estimate_cost,
    health_drop,
    residency_drop,
    weight_drop,
)
from modelroute_sidecar.engine.model import Dropped, DropReason

EU_GDPR = ResidencyRule("eu-personal", frozenset({"eu-west", "eu-central"}), frozenset({"gdpr"}))
PCI = ResidencyRule("pci", frozenset(), frozenset({"pci", "soc2"}))


@pytest.mark.parametrize(
    ("rule", "region", "labels", "reason"),
    [
        (ResidencyRule("public"), "us-east", (), None),
        (EU_GDPR, "eu-west", ("gdpr",), None),
        (EU_GDPR, "eu-west", ("gdpr", "pci"), None),
        (EU_GDPR, "us-east", ("gdpr",), DropReason.RESIDENCY_REGION),
        (EU_GDPR, "eu-west", (), DropReason.RESIDENCY_COMPLIANCE),
        (EU_GDPR, "us-east", (), DropReason.RESIDENCY_REGION),  # region is reported first
        (PCI, "anywhere", ("pci", "soc2"), None),
        (PCI, "anywhere", ("pci",), DropReason.RESIDENCY_COMPLIANCE),
        (ResidencyRule("ghost", defined=False), "eu-west", ("gdpr",), DropReason.RESIDENCY_COMPLIANCE),
    ],
)
def test_residency(
    rule: ResidencyRule, region: str, labels: tuple[str, ...], reason: DropReason | None
) -> None:
    drop = residency_drop(candidate(region=region, labels=labels), rule)
    assert (drop.reason if drop else None) == reason


def test_residency_details_name_the_rule() -> None:
    region = residency_drop(candidate(region="us-east", labels=("gdpr",)), EU_GDPR)
    labels = residency_drop(candidate(labels=()), PCI)
    assert region is not None and labels is not None
    assert (
        region.detail
        == "region 'us-east' not allowed for data class 'eu-personal' (allowed: eu-central, eu-west)"
    )
    assert labels.detail == "missing compliance pci, soc2 required for data class 'pci'"


@pytest.mark.parametrize(
    ("rule", "described"),
    [
        (
            EU_GDPR,
            "data class 'eu-personal' (allowed regions: eu-central, eu-west; required compliance: gdpr)",
        ),
        (PCI, "data class 'pci' (required compliance: pci, soc2)"),
        (
            ResidencyRule("ghost", defined=False),
            "data class 'ghost' has no residency rule, so no replica may",
        ),
    ],
)
def test_residency_description(rule: ResidencyRule, described: str) -> None:
    assert rule.describe().startswith(described)


@pytest.mark.parametrize(("unhealthy", "dropped"), [(False, False), (True, True)])
def test_health(unhealthy: bool, dropped: bool) -> None:
    drop = health_drop(candidate(unhealthy=unhealthy))
    assert (drop is not None) is dropped
    assert drop is None or drop.reason == DropReason.UNHEALTHY


@pytest.mark.parametrize(
    ("target_weight", "replica_weight", "detail"),
    [(100, 100, None), (1, 1, None), (100, 0, "replica weight 0"), (0, 100, "target weight 0")],
)
def test_weight(target_weight: int, replica_weight: int, detail: str | None) -> None:
    drop = weight_drop(candidate(target_weight=target_weight, replica_weight=replica_weight))
    assert (drop.detail if drop else None) == detail


@pytest.mark.parametrize(
    ("endpoint", "request_fields", "reason", "detail"),
    [
        ({}, {}, None, ""),
        ({"streaming": False}, {"stream": True}, DropReason.CAPABILITY, "endpoint lacks streaming"),
        ({"streaming": False}, {"stream": False}, None, ""),
        ({}, {"needs_tools": True}, DropReason.CAPABILITY, "endpoint lacks tools"),
        ({"tools": True}, {"needs_tools": True}, None, ""),
        (
            {},
            {"needs_json": True, "needs_tools": True},
            DropReason.CAPABILITY,
            "endpoint lacks tools, JSON mode",
        ),
        ({"json_mode": True}, {"needs_json": True}, None, ""),
        (
            {},
            {"max_output_tokens": 5000},
            DropReason.CAPABILITY,
            "max output 5000 tokens > endpoint limit 4096",
        ),
        ({}, {"prompt_tokens": 8000, "max_output_tokens": 192}, None, ""),  # exactly the window
        (
            {},
            {"prompt_tokens": 8000, "max_output_tokens": 193},
            DropReason.CONTEXT_WINDOW,
            "~8000 prompt + 193 output tokens > context window 8192",
        ),
        (
            {},
            {"prompt_tokens": 9000},
            DropReason.CONTEXT_WINDOW,
            "~9000 prompt + 0 output tokens > context window 8192",
        ),
    ],
)
def test_capabilities(
    endpoint: dict[str, Any], request_fields: dict[str, Any], reason: DropReason | None, detail: str
) -> None:
    drop = capability_drop(candidate(endpoint_traits=traits(**endpoint)), features(**request_fields))
    assert (drop.reason if drop else None, drop.detail if drop else "") == (reason, detail)


@pytest.mark.parametrize(
    "request_fields",
    [
        {},
        {"stream": True},
        {"needs_tools": True},
        {"needs_json": True},
        {"max_output_tokens": 5000},
        {"prompt_tokens": 8000, "max_output_tokens": 193},
        {"prompt_tokens": 100_000},
    ],
)
def test_summary_all_capable_agrees_with_the_filter(request_fields: dict[str, Any]) -> None:
    candidates = [
        candidate("a", endpoint_traits=traits("a", tools=True, context_window=128_000)),
        candidate("b", endpoint_traits=traits("b", json_mode=True, max_output_tokens=16_000)),
    ]
    request = features(**request_fields)
    expected = all(capability_drop(c, request) is None for c in candidates)
    assert ListSummary.of(candidates).all_capable(request) is expected


@pytest.mark.parametrize(
    ("endpoint", "request_fields", "cost"),
    [
        (
            {"input_per_million": 1.0, "output_per_million": 2.0},
            {"prompt_tokens": 1000},
            (1000 + 2 * 4096) / 1e6,
        ),
        (
            {"input_per_million": 1.0, "output_per_million": 2.0},
            {"prompt_tokens": 1000, "max_output_tokens": 100},
            (1000 + 200) / 1e6,
        ),
        (
            {"input_per_million": 1.0, "output_per_million": 2.0},
            {"prompt_tokens": 1000, "max_output_tokens": 10_000},
            (1000 + 2 * 4096) / 1e6,
        ),
        (
            {"input_per_million": 1.0, "output_per_million": 2.0},
            {"prompt_tokens": 1000, "api": "embeddings"},
            1e-3,
        ),
        ({}, {"prompt_tokens": 1000}, 0.0),
    ],
)
def test_estimate_cost(endpoint: dict[str, Any], request_fields: dict[str, Any], cost: float) -> None:
    assert estimate_cost(traits(**endpoint), features(**request_fields)) == pytest.approx(cost)


@pytest.mark.parametrize(
    "request_fields", [{"prompt_tokens": 10}, {"prompt_tokens": 5000, "max_output_tokens": 7}]
)
def test_cost_ceiling_bounds_every_candidate(request_fields: dict[str, Any]) -> None:
    candidates = [
        candidate("a", endpoint_traits=traits("a", input_per_million=5.0, output_per_million=1.0)),
        candidate(
            "b",
            endpoint_traits=traits("b", input_per_million=1.0, output_per_million=9.0, max_output_tokens=9),
        ),
    ]
    request = features(**request_fields)
    ceiling = ListSummary.of(candidates).cost_ceiling(request)
    assert all(estimate_cost(c.endpoint, request) <= ceiling for c in candidates)


def keys(groups: Any) -> list[list[str]]:
    return [[f"{c.endpoint.name}/{c.replica}" for c in group] for group in groups]


@pytest.mark.parametrize(
    ("ejected", "kept", "dropped", "last_resort"),
    [
        (set(), [["a/1", "a/2"], ["b/1"]], [], False),
        ({("a", "1")}, [["a/2"], ["b/1"]], ["a/1"], False),
        ({("a", "1"), ("a", "2")}, [[], ["b/1"]], ["a/1", "a/2"], False),
        # everything ejected: keep all rather than fail
        ({("a", "1"), ("a", "2"), ("b", "1")}, [["a/1", "a/2"], ["b/1"]], [], True),
    ],
)
def test_ejection_is_soft(
    ejected: set[tuple[str, str]], kept: list[list[str]], dropped: list[str], last_resort: bool
) -> None:
    groups = [[candidate("a", "1"), candidate("a", "2")], [candidate("b", "1")]]
    drops: list[Dropped] = []
    result, note = drop_ejected(groups, FakeHealth(ejected=ejected), drops)
    assert keys(result) == kept
    assert [f"{d.endpoint}/{d.replica}" for d in drops] == dropped
    assert all(d.reason == DropReason.EJECTED for d in drops)
    assert bool(note) is last_resort


CHEAP = traits("cheap", input_per_million=1.0, output_per_million=1.0)
MID = traits("mid", input_per_million=10.0, output_per_million=10.0)
DEAR = traits("dear", input_per_million=100.0, output_per_million=100.0)


@pytest.mark.parametrize(
    ("budget", "kept", "dropped", "noted"),
    [
        (1.0, [["dear/1", "mid/1"], ["cheap/1"]], [], False),
        (0.1, [["mid/1"], ["cheap/1"]], ["dear/1"], False),
        (0.01, [[], ["cheap/1"]], ["dear/1", "mid/1"], False),
        # over budget everywhere: keep the cheapest
        (0.000001, [[], ["cheap/1"]], ["dear/1", "mid/1"], True),
    ],
)
def test_cost_budget_is_soft(budget: float, kept: list[list[str]], dropped: list[str], noted: bool) -> None:
    groups = [
        [candidate("dear", "1", endpoint_traits=DEAR), candidate("mid", "1", endpoint_traits=MID)],
        [candidate("cheap", "1", endpoint_traits=CHEAP)],
    ]
    drops: list[Dropped] = []
    result, note = apply_cost_budget(
        groups, features(prompt_tokens=1000, max_output_tokens=1000), budget, drops
    )
    assert keys(result) == kept
    assert [f"{d.endpoint}/{d.replica}" for d in drops] == dropped
    assert all(d.reason == DropReason.COST_BUDGET for d in drops)
    assert bool(note) is noted


@pytest.mark.parametrize(
    ("p95", "kept", "dropped", "noted"),
    [
        ({}, [["a/1", "b/1"], ["c/1"]], [], False),
        ({"a": 900.0, "b": 1000.0}, [["a/1", "b/1"], ["c/1"]], [], False),
        ({"a": 1500.0}, [["b/1"], ["c/1"]], ["a/1"], False),
        # unobserved endpoints are never dropped
        ({"a": 1500.0, "b": 2000.0}, [[], ["c/1"]], ["a/1", "b/1"], False),
        # everything observed and slow: keep the fastest
        ({"a": 1500.0, "b": 2000.0, "c": 3000.0}, [["a/1"], []], ["b/1", "c/1"], True),
    ],
)
def test_latency_budget_is_soft(
    p95: dict[str, float], kept: list[list[str]], dropped: list[str], noted: bool
) -> None:
    groups = [[candidate("a", "1"), candidate("b", "1")], [candidate("c", "1")]]
    drops: list[Dropped] = []
    health = FakeHealth(p95=p95)
    result, note = apply_latency_budget(groups, health, 1000, drops)
    assert keys(result) == kept
    assert [f"{d.endpoint}/{d.replica}" for d in drops] == dropped
    assert all(d.reason == DropReason.LATENCY_BUDGET for d in drops)
    assert bool(note) is noted
    assert ListSummary.of([c for g in groups for c in g]).any_slower(health, 1000) is bool(dropped)
