"""Short builders of RouterConfig pieces, request features and health views for the engine tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelroute_contract import (
    Budgets,
    CanarySplit,
    Capabilities,
    DataClassRule,
    Detector,
    EndpointConfig,
    Health,
    Locality,
    PolicyConfig,
    Pricing,
    ReplicaConfig,
    Residency,
    RouterConfig,
    RuleConfig,
    RuleMatch,
    Target,
)
from modelroute_sidecar.engine.candidates import EJECTED_DETAIL, Candidate, EndpointTraits, make_choice
from modelroute_sidecar.engine.model import Dropped, DropReason, RequestFeatures, Role


def replica(
    name: str,
    region: str,
    *labels: str,
    weight: int = 100,
    health: Health = Health.HEALTHY,
) -> ReplicaConfig:
    """A replica named `name` in `region` carrying compliance `labels`."""
    return ReplicaConfig(
        name=name,
        region=region,
        url=f"http://{name}.test/v1",
        weight=weight,
        compliance=tuple(sorted(labels)),
        health=health,
    )


def endpoint(
    name: str,
    *replicas: ReplicaConfig,
    price: tuple[float, float] = (0.0, 0.0),
    **capabilities: Any,
) -> EndpointConfig:
    """An endpoint with `replicas` (one healthy replica in `eu` when none given). Tools and JSON mode are
    off unless given (the contract's defaults are on), so the capability tables read what they test."""
    capabilities.setdefault("tools", False)
    capabilities.setdefault("json_mode", False)
    return EndpointConfig(
        name=name,
        model=f"{name}-upstream",
        capabilities=Capabilities(**capabilities),
        pricing=Pricing(input_per_million=price[0], output_per_million=price[1]),
        replicas=replicas or (replica(f"{name}-eu", "eu"),),
    )


def rule(
    name: str,
    targets: Mapping[str, int] | Iterable[str],
    *,
    fallback: Iterable[str] = (),
    escalation: Iterable[str] = (),
    canary: CanarySplit | None = None,
    **match: Any,
) -> RuleConfig:
    """A rule sending to `targets` (names, or name → weight) when `match` holds."""
    weights = dict(targets) if isinstance(targets, Mapping) else dict.fromkeys(targets, 100)
    return RuleConfig(
        name=name,
        match=RuleMatch(**match),
        targets=tuple(Target(endpoint=e, weight=w) for e, w in sorted(weights.items())),
        fallback=tuple(fallback),
        escalation=tuple(escalation),
        canary=canary,
    )


def residency(
    classes: Mapping[str, tuple[Iterable[str], Iterable[str]]] | None = None,
    **fields: Any,
) -> Residency:
    """Residency with `classes`: name → (allowed regions, required labels)."""
    data_classes = tuple(
        DataClassRule(name=name, allowed_regions=tuple(regions), required_compliance=tuple(labels))
        for name, (regions, labels) in sorted((classes or {}).items())
    )
    detectors = fields.pop("detectors", ())
    return Residency(
        data_classes=data_classes,
        detectors=tuple(Detector(kind=k, data_class=c) for k, c in detectors),
        **fields,
    )


def policy(
    *rules: RuleConfig,
    name: str = "policy",
    models: Iterable[str] = ("auto",),
    residency: Residency | None = None,
    failover: Iterable[str] = (),
    prefer_local: bool = True,
    max_cost: float | None = None,
    max_latency_ms: int | None = None,
) -> PolicyConfig:
    """A policy serving `models` with `rules`."""
    return PolicyConfig(
        name=name,
        virtual_models=tuple(sorted(models)),
        rules=rules,
        residency=residency or Residency(),
        locality=Locality(prefer_local=prefer_local, failover_order=tuple(failover)),
        budgets=Budgets(max_cost_per_request_usd=max_cost, max_latency_ms=max_latency_ms),
    )


def config(endpoints: Iterable[EndpointConfig], *policies: PolicyConfig) -> RouterConfig:
    """A sealed RouterConfig."""
    return RouterConfig(
        namespace="test",
        endpoints=tuple(sorted(endpoints, key=lambda e: e.name)),
        policies=tuple(sorted(policies, key=lambda p: p.name)),
    ).seal()


def features(**overrides: Any) -> RequestFeatures:
    """Request features with harmless defaults: a short chat prompt for `auto`."""
    values: dict[str, Any] = {
        "request_id": "req-1",
        "api": "chat",
        "model": "auto",
        "headers": {},
        "metadata": {},
        "prompt_text": "Hello there",
        "prompt_tokens": 10,
    }
    values.update(overrides)
    return RequestFeatures(**values)


@dataclass
class FakeHealth:
    """A HealthView: a set of ejected (endpoint, replica) and p95 latency by endpoint."""

    ejected: set[tuple[str, str]] = field(default_factory=set)
    p95: dict[str, float] = field(default_factory=dict)

    def is_ejected(self, endpoint: str, replica: str) -> bool:
        return (endpoint, replica) in self.ejected

    def any_ejected(self) -> bool:
        return bool(self.ejected)

    def p95_latency_ms(self, endpoint: str) -> float | None:
        return self.p95.get(endpoint)


def traits(name: str = "ep", **overrides: Any) -> EndpointTraits:
    """Endpoint traits with the contract's default capabilities."""
    values: dict[str, Any] = {
        "name": name,
        "model": f"{name}-upstream",
        "context_window": 8192,
        "max_output_tokens": 4096,
        "streaming": True,
        "tools": False,
        "json_mode": False,
        "input_per_million": 0.0,
        "output_per_million": 0.0,
    }
    values.update(overrides)
    return EndpointTraits(**values)


def candidate(
    endpoint_name: str = "ep",
    replica_name: str = "r1",
    region: str = "eu",
    labels: Iterable[str] = (),
    *,
    unhealthy: bool = False,
    target_weight: int = 100,
    replica_weight: int = 100,
    rank: int = 0,
    role: Role = Role.RETRY,
    endpoint_traits: EndpointTraits | None = None,
) -> Candidate:
    """A candidate record, as the index builds them."""
    endpoint_traits = endpoint_traits or traits(endpoint_name)
    choice = make_choice(endpoint_traits, replica_name, region, f"http://{replica_name}.test/v1", role)
    first = make_choice(endpoint_traits, replica_name, region, f"http://{replica_name}.test/v1", Role.PRIMARY)
    return Candidate(
        endpoint=endpoint_traits,
        replica=replica_name,
        region=region,
        compliance=frozenset(labels),
        unhealthy=unhealthy,
        target_weight=target_weight,
        replica_weight=replica_weight,
        weight=target_weight * replica_weight,
        rank=rank,
        choice=choice,
        first_choice=first if role == Role.RETRY else choice,
        ejected_drop=Dropped(endpoint_traits.name, replica_name, region, DropReason.EJECTED, EJECTED_DETAIL),
    )
