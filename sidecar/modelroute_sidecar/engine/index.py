"""The lookup index: a RouterConfig compiled, once per config load, into what a decision reads.

For every policy: its classifier and compiled rules; for every rule: its candidate replicas in stored
order (targets and canary endpoints, then the fallback chain, then the escalation chain), and for every
data class the policy can produce, a `RouteTable` with the request-independent filters already applied —
residency, active health and zero weight. A decision looks its table up by (rule, data class), so
residency is enforced by construction: a replica that may not take the class is in none of the table's
lists, and nothing downstream adds candidates, it only removes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from modelroute_contract import (
    EndpointConfig,
    Health,
    PolicyConfig,
    RuleConfig,
    SessionAffinity,
    ShadowTraffic,
)

from .bandit import BanditPlan
from .canary import CanaryPlan
from .candidates import EJECTED_DETAIL, Candidate, EndpointTraits, make_choice
from .classification import Classifier
from .filters import (
    PUBLIC,
    ListSummary,
    ResidencyRule,
    health_drop,
    residency_drop,
    weight_drop,
)
from .learned import PolicyModels, missing_models
from .model import Dropped, DropReason, Role
from .rules import CompiledRule, compile_match, static_match
from .scorers import locality_ranks, sort_key


@dataclass(frozen=True, slots=True)
class RouteTable:
    """One rule's candidates for one data class, after the request-independent filters."""

    residency: ResidencyRule
    primary: tuple[Candidate, ...]
    """The rule's targets (and canary endpoints), sorted by locality, weight, name."""
    fallback: tuple[Candidate, ...]
    """The fallback chain's replicas: chain order, then locality, weight, name."""
    escalation: tuple[Candidate, ...]
    """The escalation chain's replicas, ordered like the fallback."""
    static_drops: tuple[Dropped, ...]
    """Why the others were dropped (residency, unhealthy, zero weight)."""
    compliant: int
    """Replicas of the targets and fallback that pass residency (before health and weight)."""
    parked: tuple[Candidate, ...]
    """Compliant target and fallback replicas out for health or weight: they tell a temporary outage
    (503) from a request no endpoint can ever serve (400)."""
    plan_summary: ListSummary
    """Bounds over the targets and fallback, to skip filters every candidate passes."""
    escalation_summary: ListSummary
    shadow: tuple[Candidate, ...] = ()
    """The rule's shadow endpoint's replicas that pass residency, health and weight (locality order)."""
    shadow_compliant: int = 0
    """Replicas of the shadow endpoint that pass residency (0: a copy of this data may go nowhere)."""
    shadow_summary: ListSummary = field(default_factory=ListSummary)
    """Bounds over `shadow`, to skip the capability check of a copy."""


COMBINED_TABLES_MAX = 256
"""Tables of multi-class combinations kept per rule; beyond it a combination is built for each request
(a policy would need hundreds of detector/tenant combinations in live traffic to get there)."""


@dataclass(frozen=True, slots=True)
class RouteIndex:
    """A rule, compiled: its checks, its canary and its tables by data class."""

    rule: CompiledRule
    canary: CanaryPlan | None
    tables: Mapping[str, RouteTable]
    candidates: tuple[tuple[Candidate, ...], ...] = ((), (), (), ())
    """(primary, fallback, escalation, shadow) before any filter, to build combination tables from."""
    residencies: Mapping[str, ResidencyRule] = field(default_factory=dict)
    combined: dict[tuple[str, frozenset[str]], RouteTable] = field(default_factory=dict)
    """Memoized tables of multi-class combinations (reported class, every class), bounded."""
    affinity: SessionAffinity | None = None
    """The rule's session affinity, if any (`affinity.hold` applies it after the filters)."""
    shadow: ShadowTraffic | None = None
    """The rule's shadow traffic, if any (`shadow.pick_shadow` reads the table's shadow list)."""
    bandit: BanditPlan | None = None
    """The rule's bandit, when its strategy is `bandit` (`bandit.pick_bandit` replaces the weighted pick)."""

    def table_for(self, data_class: str, classes: frozenset[str]) -> RouteTable:
        """The table of a request whose signals gave `classes`, reported as `data_class`: the class's own
        table when it is the only one, else the conjunction of every class's rule (built once)."""
        if len(classes) <= 1:
            return self.tables[data_class]
        key = (data_class, classes)
        table = self.combined.get(key)
        if table is None:
            parts = [
                self.residencies.get(name) or ResidencyRule(name, defined=False) for name in sorted(classes)
            ]
            table = build_table(ResidencyRule.combine(data_class, parts), *self.candidates)
            if len(self.combined) < COMBINED_TABLES_MAX:
                self.combined[key] = table
        return table


@dataclass(frozen=True, slots=True)
class PolicyIndex:
    """A policy, compiled."""

    name: str
    classifier: Classifier
    routes: tuple[RouteIndex, ...]
    """By rule position."""
    chains: Mapping[tuple[str, str], tuple[CompiledRule, ...]]
    """(virtual model, data class) → the rules whose model and data-class conditions admit it, in order."""
    max_cost: float | None
    max_latency_ms: float | None
    models: PolicyModels | None = None
    """The learned models its rules name (None when they name none)."""

    def rules_for(self, model: str, data_class: str) -> tuple[CompiledRule, ...]:
        """The rules to evaluate for a request's model and data class."""
        return self.chains.get((model, data_class), ())


@dataclass(frozen=True, slots=True)
class _Member:
    """An endpoint in one of a rule's lists, with the weight the rule gives it."""

    endpoint: str
    weight: int


def rule_members(rule: RuleConfig) -> tuple[list[_Member], list[str], list[str]]:
    """The endpoints of a rule's targets (canary endpoints included), fallback and escalation lists.

    A canary's candidate takes the stable target's weight (it receives the stable's share of the route
    while it is on the candidate side); an endpoint already among the targets is not repeated in the
    fallback."""
    targets = [_Member(t.endpoint, t.weight) for t in rule.targets]
    if rule.canary is not None:
        weights = {m.endpoint: m.weight for m in targets}
        stable_weight = weights.get(rule.canary.stable, 100)
        for name in (rule.canary.stable, rule.canary.candidate):
            if name not in weights:
                targets.append(_Member(name, stable_weight))
                weights[name] = stable_weight
    in_targets = {m.endpoint for m in targets}
    fallback = [name for name in dict.fromkeys(rule.fallback) if name not in in_targets]
    escalation = list(dict.fromkeys(rule.escalation))
    return targets, fallback, escalation


class _CandidateFactory:
    """Builds the candidates of a policy's rules (shared endpoint traits, locality ranks)."""

    def __init__(
        self,
        endpoints: Mapping[str, EndpointConfig],
        traits: Mapping[str, EndpointTraits],
        ranks: Mapping[str, int],
        other_rank: int,
    ) -> None:
        self._endpoints = endpoints
        self._traits = traits
        self._ranks = ranks
        self._other_rank = other_rank

    def replicas(self, name: str, target_weight: int, role: Role, where: str) -> list[Candidate]:
        """Candidates for every replica of endpoint `name`, playing `role`."""
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            raise ValueError(f"{where} refers to endpoint '{name}', which the config does not define")
        traits = self._traits[name]
        candidates = []
        for replica in endpoint.replicas:
            choice = make_choice(traits, replica.name, replica.region, replica.url, role)
            first = make_choice(traits, replica.name, replica.region, replica.url, Role.PRIMARY)
            candidates.append(
                Candidate(
                    endpoint=traits,
                    replica=replica.name,
                    region=replica.region,
                    compliance=frozenset(replica.compliance),
                    unhealthy=replica.health == Health.UNHEALTHY,
                    target_weight=target_weight,
                    replica_weight=replica.weight,
                    weight=max(0, target_weight) * max(0, replica.weight),
                    rank=self._ranks.get(replica.region, self._other_rank),
                    choice=choice,
                    first_choice=first if role == Role.RETRY else choice,
                    ejected_drop=Dropped(
                        name, replica.name, replica.region, DropReason.EJECTED, EJECTED_DETAIL
                    ),
                )
            )
        return candidates

    def chain(self, names: Sequence[str], role: Role, where: str) -> list[Candidate]:
        """Candidates of a fallback or escalation chain: chain order, then locality within an endpoint."""
        candidates = []
        for name in names:
            candidates.extend(sorted(self.replicas(name, 1, role, where), key=sort_key))
        return candidates


def build_table(
    residency: ResidencyRule,
    primary: Sequence[Candidate],
    fallback: Sequence[Candidate],
    escalation: Sequence[Candidate],
    shadow: Sequence[Candidate] = (),
) -> RouteTable:
    """Apply the request-independent filters (residency, then health, then weight) for one data class.
    The shadow endpoint's replicas go through the same filters, kept apart: they are never in the plan,
    and their drops are not the request's."""
    drops: dict[tuple[str, str, str], Dropped] = {}
    parked: list[Candidate] = []
    compliant = 0

    def keep(candidates: Iterable[Candidate], in_plan: bool) -> tuple[Candidate, ...]:
        nonlocal compliant
        kept = []
        for candidate in candidates:
            drop = residency_drop(candidate, residency)
            if drop is None:
                if in_plan:
                    compliant += 1
                drop = health_drop(candidate) or weight_drop(candidate)
                if drop is not None and in_plan:
                    parked.append(candidate)
            if drop is None:
                kept.append(candidate)
            else:
                # A replica in two lists (fallback and escalation) is reported once.
                drops.setdefault((drop.endpoint, drop.replica, drop.reason), drop)
        return tuple(kept)

    kept_primary, kept_fallback = keep(primary, True), keep(fallback, True)
    kept_escalation = keep(escalation, False)
    kept_shadow = []
    shadow_compliant = 0
    for candidate in shadow:
        if residency_drop(candidate, residency) is None:
            shadow_compliant += 1
            if health_drop(candidate) is None and weight_drop(candidate) is None:
                kept_shadow.append(candidate)
    return RouteTable(
        residency=residency,
        primary=kept_primary,
        fallback=kept_fallback,
        escalation=kept_escalation,
        static_drops=tuple(drops.values()),
        compliant=compliant,
        parked=tuple(parked),
        plan_summary=ListSummary.of(kept_primary + kept_fallback),
        escalation_summary=ListSummary.of(kept_escalation),
        shadow=tuple(kept_shadow),
        shadow_compliant=shadow_compliant,
        shadow_summary=ListSummary.of(kept_shadow),
    )


def residency_rules(policy: PolicyConfig) -> dict[str, ResidencyRule]:
    """A residency rule for every data class the policy can give a request: its defined classes,
    `public`, and any class its tenant defaults, detectors or default name without defining (those fail
    closed)."""
    residency = policy.residency
    rules = {c.name: ResidencyRule.from_config(c) for c in residency.data_classes}
    rules.setdefault(PUBLIC, ResidencyRule(PUBLIC))
    named = [*residency.tenant_defaults.values(), *(d.data_class for d in residency.detectors)]
    if residency.default_class:
        named.append(residency.default_class)
    for name in named:
        rules.setdefault(name, ResidencyRule(name, defined=False))
    return rules


def build_route(
    policy: PolicyConfig,
    position: int,
    factory: _CandidateFactory,
    classes: Mapping[str, ResidencyRule],
    traits: Mapping[str, EndpointTraits],
) -> RouteIndex:
    """Compile one rule: candidates once, then a table per data class."""
    rule = policy.rules[position]
    where = f"rule '{rule.name}' of policy '{policy.name}'"
    targets, fallback_names, escalation_names = rule_members(rule)
    primary = sorted(
        (c for m in targets for c in factory.replicas(m.endpoint, m.weight, Role.RETRY, where)),
        key=sort_key,
    )
    fallback = factory.chain(fallback_names, Role.FALLBACK, where)
    escalation = factory.chain(escalation_names, Role.ESCALATION, where)
    shadow = factory.chain([rule.shadow.endpoint], Role.SHADOW, where) if rule.shadow is not None else []
    return RouteIndex(
        rule=CompiledRule(position, rule.name, compile_match(rule.match)),
        canary=CanaryPlan.from_config(rule.canary) if rule.canary is not None else None,
        tables={
            name: build_table(residency, primary, fallback, escalation, shadow)
            for name, residency in classes.items()
        },
        candidates=(tuple(primary), tuple(fallback), tuple(escalation), tuple(shadow)),
        residencies=classes,
        affinity=rule.affinity,
        shadow=rule.shadow,
        bandit=BanditPlan.build(policy.name, rule.name, rule.bandit, [m.endpoint for m in targets], traits)
        if rule.bandit is not None
        else None,
    )


def build_policy(
    policy: PolicyConfig,
    endpoints: Mapping[str, EndpointConfig],
    traits: Mapping[str, EndpointTraits],
    local_region: str,
    models: PolicyModels | None = None,
) -> PolicyIndex:
    """Compile one policy for a sidecar in `local_region`; `models` are its learned models, if any
    (ValueError when its rules name one that is not there)."""
    missing = missing_models(policy, models)
    if missing:
        raise ValueError(missing)
    ranks, other_rank = locality_ranks(local_region, policy.locality)
    factory = _CandidateFactory(endpoints, traits, ranks, other_rank)
    classes = residency_rules(policy)
    routes = tuple(build_route(policy, i, factory, classes, traits) for i in range(len(policy.rules)))
    chains = {
        (model, data_class): tuple(
            route.rule
            for route, rule in zip(routes, policy.rules, strict=True)
            if static_match(rule.match, model, data_class)
        )
        for model in policy.virtual_models
        for data_class in classes
    }
    budgets = policy.budgets
    return PolicyIndex(
        name=policy.name,
        classifier=Classifier.from_config(policy.residency),
        routes=routes,
        chains=chains,
        max_cost=budgets.max_cost_per_request_usd,
        max_latency_ms=budgets.max_latency_ms,
        models=models,
    )
