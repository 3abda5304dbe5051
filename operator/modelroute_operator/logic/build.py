"""The compiler's build, pure: a checked namespace's objects turned into the contract's RouterConfig
(endpoints, policies with their canary splits), sorted so that input order never changes the hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import modelroute_contract as contract
from modelroute_operator.logic.resources import (
    BanditSpec,
    Canary,
    CanaryPhase,
    EndpointTls,
    FleetLimits,
    FleetQuota,
    IntRange,
    ModelEndpoint,
    ProviderSettings,
    Replica,
    RoutingPolicy,
    Rule,
    SpendBudget,
    seconds,
)

from .learned import ConfigMaps, build_models, build_semantic_routes
from .objects import NamespaceIndex, chain_endpoints


def _build_endpoint(endpoint: ModelEndpoint) -> contract.EndpointConfig:
    spec = endpoint.spec
    health = {(r.name, r.region): contract.Health(r.health.value) for r in endpoint.status.replicas}
    credentials, caps = spec.credentials, spec.capabilities
    return contract.EndpointConfig(
        name=endpoint.metadata.name,
        model=spec.model,
        provider=spec.provider,
        provider_settings=_build_provider_settings(spec.provider_settings),
        tier=spec.tier or "",
        capabilities=contract.Capabilities(
            context_window=caps.context_window,
            max_output_tokens=caps.max_output_tokens,
            streaming=caps.streaming,
            tools=caps.tools,
            json_mode=caps.json_mode,
            stream_usage=caps.stream_usage,
        ),
        pricing=contract.Pricing(
            input_per_million=spec.pricing.input_per_million,
            output_per_million=spec.pricing.output_per_million,
        ),
        credentials=contract.CredentialRef(secret=credentials.name, key=credentials.key)
        if credentials
        else None,
        tls=_build_tls(spec.tls) if spec.tls else None,
        connect_timeout_seconds=seconds(spec.timeouts.connect),
        request_timeout_seconds=seconds(spec.timeouts.request),
        max_requests_per_minute=spec.rate_limit.requests_per_minute if spec.rate_limit else None,
        allow_private_targets=spec.allow_private_targets,
        replicas=tuple(
            # Health recorded for a replica that has since moved region describes another deployment.
            _build_replica(r, health.get((r.name, r.region), contract.Health.UNKNOWN))
            for r in sorted(spec.replicas, key=lambda r: r.name)
        ),
    )


def _build_provider_settings(settings: ProviderSettings | None) -> contract.ProviderSettings | None:
    if settings is None:
        return None
    return contract.ProviderSettings(
        auth=settings.auth or "", api_version=settings.api_version or "", project=settings.project or ""
    )


def _build_tls(tls: EndpointTls) -> contract.TlsConfig:
    ca, client = tls.ca_bundle, tls.client_certificate
    return contract.TlsConfig(
        ca_bundle=contract.CredentialRef(secret=ca.name, key=ca.key) if ca else None,
        # the key names of a kubernetes.io/tls Secret are fixed by its type
        client_certificate=contract.CredentialRef(secret=client.name, key="tls.crt") if client else None,
        client_key=contract.CredentialRef(secret=client.name, key="tls.key") if client else None,
        server_name=tls.server_name or "",
    )


def _build_replica(replica: Replica, health: contract.Health) -> contract.ReplicaConfig:
    return contract.ReplicaConfig(
        name=replica.name,
        region=replica.region,
        zone=replica.zone or "",
        url=replica.url,
        weight=replica.weight,
        compliance=tuple(sorted(set(replica.compliance))),
        health=health,
    )


def _build_policy(
    policy: RoutingPolicy, splits: Mapping[str, _CanaryOnRule], config_maps: ConfigMaps
) -> contract.PolicyConfig:
    spec = policy.spec
    residency, locality, resilience, budgets = spec.residency, spec.locality, spec.resilience, spec.budgets
    return contract.PolicyConfig(
        name=policy.metadata.name,
        virtual_models=tuple(sorted(spec.virtual_models)),
        rules=tuple(_build_rule(policy, rule, splits.get(rule.name)) for rule in spec.rules),
        residency=contract.Residency(
            data_classes=tuple(
                contract.DataClassRule(
                    name=c.name,
                    allowed_regions=tuple(sorted(set(c.allowed_regions))),
                    required_compliance=tuple(sorted(set(c.required_compliance))),
                )
                for c in sorted(residency.data_classes, key=lambda c: c.name)
            ),
            header=residency.header.lower(),
            tenant_defaults=dict(sorted(residency.tenant_defaults.items())),
            detectors=tuple(
                contract.Detector(
                    kind=d.kind, data_class=d.data_class, name=d.name or "", pattern=d.pattern or ""
                )
                for d in residency.detectors
            ),
            default_class=residency.default_class or "",
            # explicit, because data_classes above are sorted by name: the written order is the default
            precedence=tuple(residency.precedence or [c.name for c in residency.data_classes]),
        ),
        locality=contract.Locality(
            prefer_local=locality.prefer_local, failover_order=tuple(locality.failover_order)
        ),
        resilience=contract.Resilience(
            max_attempts=resilience.max_attempts,
            retry_budget_percent=resilience.retry_budget_percent,
            per_try_timeout_seconds=seconds(resilience.per_try_timeout),
            deadline_seconds=seconds(resilience.deadline),
            eject_after_failures=resilience.eject_after_failures,
            base_ejection_seconds=seconds(resilience.base_ejection_time),
            max_ejection_seconds=seconds(resilience.max_ejection_time),
            escalate_on=tuple(resilience.escalate_on),
        ),
        budgets=contract.Budgets(
            max_cost_per_request_usd=budgets.max_cost_per_request_usd,
            max_latency_ms=round(seconds(budgets.max_latency) * 1000) if budgets.max_latency else None,
        ),
        tenant_limits=tuple(
            contract.TenantLimit(
                tenant_tier=limit.tenant_tier or "",
                requests_per_minute=limit.requests_per_minute,
                tokens_per_minute=limit.tokens_per_minute,
            )
            for limit in spec.tenant_limits
        ),
        difficulty_models=build_models(policy, config_maps),
        semantic_routes=build_semantic_routes(policy),
        fleet_limits=_build_fleet(spec.fleet_limits) if spec.fleet_limits is not None else None,
    )


def _build_quota(quota: FleetQuota) -> dict[str, Any]:
    def budget(b: SpendBudget | None) -> contract.SpendBudget | None:
        return None if b is None else contract.SpendBudget(hard_usd=b.hard_usd, soft_usd=b.soft_usd)

    return {
        "requests_per_minute": quota.requests_per_minute,
        "tokens_per_minute": quota.tokens_per_minute,
        "daily": budget(quota.daily),
        "monthly": budget(quota.monthly),
    }


def _build_fleet(limits: FleetLimits) -> contract.FleetLimits:
    return contract.FleetLimits(
        scope=limits.scope,
        fail_mode=limits.fail_mode,
        tenants=tuple(
            contract.FleetTenantLimit(tenant_tier=t.tenant_tier or "", **_build_quota(t))
            for t in limits.tenants
        ),
        policy=contract.FleetQuota(**_build_quota(limits.policy)) if limits.policy is not None else None,
    )


def _build_rule(policy: RoutingPolicy, rule: Rule, canary: _CanaryOnRule | None) -> contract.RuleConfig:
    match = rule.match
    split = canary.split if canary else None
    return contract.RuleConfig(
        name=rule.name,
        # Set-like lists are sorted so that reordering them in Git does not change the version.
        match=contract.RuleMatch(
            models=_sorted_set(match.models),
            headers=tuple(
                contract.HeaderMatch(name=h.name.lower(), values=_sorted_set(h.values)) for h in match.headers
            ),
            metadata={key: _sorted_set(values) for key, values in sorted(match.metadata.items())},
            prompt_tokens=_build_range(match.prompt_tokens),
            complexity=_build_range(match.complexity),
            data_classes=_sorted_set(match.data_classes),
            complexity_scorer=(match.complexity.scorer or "") if match.complexity else "",
            semantic=contract.SemanticMatch(
                route=match.semantic.route, min_similarity=match.semantic.min_similarity or 0.0
            )
            if match.semantic
            else None,
        ),
        targets=tuple(
            contract.Target(endpoint=t.endpoint, weight=t.weight)
            for t in sorted(rule.targets, key=lambda t: t.endpoint)
        ),
        fallback=chain_endpoints(policy, rule, "fallbackTo"),
        escalation=chain_endpoints(policy, rule, "escalateTo"),
        canary=split,
        affinity=contract.SessionAffinity(
            header=(rule.affinity.header or "").lower(),
            metadata=rule.affinity.metadata or "",
            ttl_seconds=rule.affinity.ttl_seconds,
            max_sessions=rule.affinity.max_sessions,
        )
        if rule.affinity
        else None,
        shadow=_build_shadow(rule, canary),
        strategy=rule.strategy,
        bandit=_build_bandit(rule.bandit) if rule.strategy == "bandit" else None,
    )


def _build_shadow(rule: Rule, canary: _CanaryOnRule | None) -> contract.ShadowTraffic | None:
    """The rule's shadow: its own, or the candidate of a canary in its mirror phase (the checks refuse
    a mirror on a rule that has a shadow of its own)."""
    if canary is not None and canary.mirror is not None:
        return canary.mirror
    if rule.shadow is None:
        return None
    return contract.ShadowTraffic(
        endpoint=rule.shadow.endpoint, percent=rule.shadow.percent, max_concurrent=rule.shadow.max_concurrent
    )


def _build_bandit(bandit: BanditSpec | None) -> contract.BanditSettings:
    """A bandit rule's settings, the defaults when it names none."""
    if bandit is None:
        return contract.BanditSettings()
    return contract.BanditSettings(cost_weight=bandit.cost_weight, explore=bandit.explore)


def _build_range(value_range: IntRange | None) -> contract.RangeMatch | None:
    return contract.RangeMatch(min=value_range.min, max=value_range.max) if value_range else None


def _sorted_set(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class _CanaryOnRule:
    """What a canary puts on its target rule: the split, and the shadow of its mirror phase."""

    split: contract.CanarySplit
    mirror: contract.ShadowTraffic | None


def _build_splits(ns: NamespaceIndex) -> dict[tuple[str, str], _CanaryOnRule]:
    splits = {}
    for canary in ns.canaries.values():
        spec = canary.spec
        rule = next(r for r in ns.policies[spec.target.policy].spec.rules if r.name == spec.target.rule)
        # GitOps: once Git names the candidate instead of the stable, the canary has nothing left to split.
        if spec.stable in {t.endpoint for t in rule.targets}:
            splits[(spec.target.policy, spec.target.rule)] = _CanaryOnRule(
                _build_split(canary), _build_mirror(canary)
            )
    return splits


def _build_mirror(canary: Canary) -> contract.ShadowTraffic | None:
    """The shadow to the candidate while the canary is in its mirror phase (only then: a pause, like
    any later phase, stops the copies)."""
    mirror = canary.spec.mirror
    if mirror is None or canary.status.phase != CanaryPhase.MIRRORING:
        return None
    return contract.ShadowTraffic(
        endpoint=canary.spec.candidate, percent=mirror.percent, max_concurrent=mirror.max_concurrent
    )


def _build_split(canary: Canary) -> contract.CanarySplit:
    stickiness = canary.spec.stickiness
    return contract.CanarySplit(
        name=canary.metadata.name,
        stable=canary.spec.stable,
        candidate=canary.spec.candidate,
        candidate_weight=float(candidate_weight(canary)),
        stickiness_header=(stickiness.header or "").lower() if stickiness else "",
        stickiness_metadata=(stickiness.metadata or "") if stickiness else "",
    )


def candidate_weight(canary: Canary) -> int:
    """Percentage of the route the compiled config sends to the candidate, from the canary's status.

    A promoted canary stays at 100 until Git names the candidate as stable (the operator never edits a
    user's spec); a rolled-back one stays at 0; otherwise the controller's decided weight holds.
    """
    phase = canary.status.phase
    if phase == CanaryPhase.PROMOTED:
        return 100
    if phase == CanaryPhase.ROLLED_BACK:
        return 0
    status = canary.status
    # `desiredWeight` is the decision; a status written before it existed has only `currentWeight`.
    return (status.desired_weight if status.desired_weight is not None else status.current_weight) or 0


# ----------------------------------------------------------------------------------------- assembly


def build_config(ns: NamespaceIndex) -> contract.RouterConfig:
    splits = _build_splits(ns)
    return contract.RouterConfig(
        namespace=ns.name,
        endpoints=tuple(_build_endpoint(e) for e in ns.endpoints.values()),
        policies=tuple(
            _build_policy(
                p, {rule: s for (policy, rule), s in splits.items() if policy == name}, ns.config_maps
            )
            for name, p in ns.policies.items()
        ),
    ).seal()
