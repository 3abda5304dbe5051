"""Filters: each decides whether a candidate replica stays, and says why when it does not.

Hard filters drop for good: residency (region and compliance labels), active health, zero weight,
capabilities and the context window. Residency, health and weight do not depend on the request, so
`index` applies them once per (rule, data class) when a config loads; the request-dependent ones run per
decision. Soft filters never leave a list empty on their own: passive ejection (an outage of the local
health view must not become an outage of the service) and the cost and latency budgets (a budget picks
the cheaper or faster candidates, it does not refuse service).

Filters work on "groups": the lists of one plan (the targets, then the fallback) are filtered together
when a soft filter must know whether anything at all would remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelroute_contract import (
    PROVIDER_APIS,
    PROVIDER_JSON_MODE,
    PUBLIC_CLASS,
    DataClassRule,
    residency_violation,
)

from .candidates import Candidate, EndpointTraits
from .model import Dropped, DropReason, HealthView, RequestFeatures

PUBLIC = PUBLIC_CLASS
"""The data class of requests carrying no restricted data; any replica may take them."""

Groups = Sequence[Sequence[Candidate]]
"""The lists of one plan (targets, fallback), filtered together; filters return new lists, never mutate."""


@dataclass(frozen=True, slots=True)
class ResidencyRule:
    """Where data of one class (or of several at once) may be processed: every condition must hold."""

    name: str
    """The class reported (the strictest of a combination)."""
    regions: frozenset[str] = frozenset()
    """Allowed regions; empty allows any (for a combination: the intersection, see `members`)."""
    labels: frozenset[str] = frozenset()
    """Compliance labels a replica must all carry (for a combination: the union)."""
    defined: bool = True
    """False for a class the policy names (tenant default, detector, default class) but never defines:
    with no rule saying where it may go, it may go nowhere (fail closed)."""
    members: tuple[DataClassRule, ...] = ()
    """The contract rules of every class in a combination; empty for a single class (derived from the
    fields above)."""
    undefined: tuple[str, ...] = ()
    """Classes of a combination that have no rule (any one makes every replica fail)."""

    @classmethod
    def from_config(cls, rule: DataClassRule) -> ResidencyRule:
        """Compile a contract data class."""
        return cls(
            rule.name, frozenset(rule.allowed_regions), frozenset(rule.required_compliance), members=(rule,)
        )

    @classmethod
    def combine(cls, name: str, rules: Sequence[ResidencyRule]) -> ResidencyRule:
        """The conjunction of several classes' rules, reported as `name` (the strictest)."""
        members = tuple(m for r in rules for m in r.contract_rules())
        undefined = tuple(n for r in rules for n in r.undefined_names())
        regions: frozenset[str] = frozenset()
        for member in members:
            if member.allowed_regions:
                allowed = frozenset(member.allowed_regions)
                regions = allowed if not regions else regions & allowed
        labels = frozenset(label for m in members for label in m.required_compliance)
        return cls(name, regions, labels, not undefined, members, undefined)

    def contract_rules(self) -> tuple[DataClassRule, ...]:
        """The contract rules this one enforces, for `contract.residency_violation`."""
        if self.members:
            return self.members
        if not (self.regions or self.labels):
            return ()
        return (
            DataClassRule(
                name=self.name,
                allowed_regions=tuple(sorted(self.regions)),
                required_compliance=tuple(sorted(self.labels)),
            ),
        )

    def undefined_names(self) -> tuple[str, ...]:
        """The classes without a rule among those this one stands for."""
        if self.undefined:
            return self.undefined
        return () if self.defined else (self.name,)

    def describe(self) -> str:
        """Where this class may go, for error messages."""
        undefined = self.undefined_names()
        if undefined:
            return f"data class '{undefined[0]}' has no residency rule, so no replica may process it"
        names = sorted({m.name for m in self.members}) if len(self.members) > 1 else []
        parts = []
        if self.members and len(self.members) > 1 and any(m.allowed_regions for m in self.members):
            parts.append(f"allowed regions: {', '.join(sorted(self.regions)) or 'none'}")
        elif self.regions:
            parts.append(f"allowed regions: {', '.join(sorted(self.regions))}")
        if self.labels:
            parts.append(f"required compliance: {', '.join(sorted(self.labels))}")
        also = f", with {', '.join(n for n in names if n != self.name)}" if names else ""
        return f"data class '{self.name}'{also} ({'; '.join(parts) or 'unrestricted'})"


def residency_drop(candidate: Candidate, rule: ResidencyRule) -> Dropped | None:
    """Drop a replica where data of the class (every class of a combination) may not be processed; the
    judgement is the contract's `residency_violation`, shared with the compiler and admission."""
    violation = residency_violation(
        candidate.region, candidate.compliance, rule.contract_rules(), rule.undefined_names()
    )
    if violation is None:
        return None
    kind, reason = violation
    return candidate.dropped(
        DropReason.RESIDENCY_REGION if kind == "region" else DropReason.RESIDENCY_COMPLIANCE, reason
    )


def health_drop(candidate: Candidate) -> Dropped | None:
    """Drop a replica the operator's active health check found unhealthy."""
    if candidate.unhealthy:
        return candidate.dropped(DropReason.UNHEALTHY, "active health check: Unhealthy")
    return None


def weight_drop(candidate: Candidate) -> Dropped | None:
    """Drop a replica with no share of traffic (drained replica, or a target weighted 0)."""
    if candidate.replica_weight <= 0:
        return candidate.dropped(DropReason.ZERO_WEIGHT, "replica weight 0")
    if candidate.target_weight <= 0:
        return candidate.dropped(DropReason.ZERO_WEIGHT, "target weight 0")
    return None


def capability_drop(candidate: Candidate, features: RequestFeatures) -> Dropped | None:
    """Drop a replica whose endpoint cannot serve the request: streaming, tools, JSON mode, the requested
    completion size, or prompt plus completion beyond the context window."""
    endpoint = candidate.endpoint
    if features.api not in endpoint.apis:
        return candidate.dropped(
            DropReason.CAPABILITY, f"provider {endpoint.provider} does not serve the {features.api} API"
        )
    missing = []
    if features.stream and not endpoint.streaming:
        missing.append("streaming")
    if features.needs_tools and not endpoint.tools:
        missing.append("tools")
    if features.needs_json and not endpoint.json_mode:
        missing.append(
            "JSON mode"
            if endpoint.provider in PROVIDER_JSON_MODE
            else f"JSON mode (provider {endpoint.provider} has none)"
        )
    if missing:
        return candidate.dropped(DropReason.CAPABILITY, f"endpoint lacks {', '.join(missing)}")
    requested = features.max_output_tokens or 0
    if requested > endpoint.max_output_tokens:
        return candidate.dropped(
            DropReason.CAPABILITY,
            f"max output {requested} tokens > endpoint limit {endpoint.max_output_tokens}",
        )
    if features.prompt_tokens + requested > endpoint.context_window:
        return candidate.dropped(
            DropReason.CONTEXT_WINDOW,
            f"~{features.prompt_tokens} prompt + {requested} output tokens > context window "
            f"{endpoint.context_window}",
        )
    return None


@dataclass(frozen=True, slots=True)
class ListSummary:
    """Bounds over a candidate list, computed when the config loads, that let a decision skip a filter:
    when every candidate passes, the per-candidate work is not done."""

    streaming: bool = True
    """Every endpoint streams."""
    tools: bool = True
    json_mode: bool = True
    max_output_floor: int = 2**62
    """The smallest completion limit."""
    context_floor: int = 2**62
    """The smallest context window."""
    input_price_ceiling: float = 0.0
    output_price_ceiling: float = 0.0
    max_output_ceiling: int = 0
    """The largest completion limit (for the cost bound)."""
    endpoints: tuple[str, ...] = ()
    """Distinct endpoint names, for latency checks."""
    apis: frozenset[str] = PROVIDER_APIS["openai"]
    """The APIs every endpoint serves."""

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> ListSummary:
        """The summary of `candidates`."""
        endpoints = list({c.endpoint.name: c.endpoint for c in candidates}.values())
        if not endpoints:
            return cls()
        return cls(
            streaming=all(e.streaming for e in endpoints),
            tools=all(e.tools for e in endpoints),
            json_mode=all(e.json_mode for e in endpoints),
            max_output_floor=min(e.max_output_tokens for e in endpoints),
            context_floor=min(e.context_window for e in endpoints),
            input_price_ceiling=max(e.input_per_million for e in endpoints),
            output_price_ceiling=max(e.output_per_million for e in endpoints),
            max_output_ceiling=max(e.max_output_tokens for e in endpoints),
            endpoints=tuple(e.name for e in endpoints),
            apis=frozenset.intersection(*(e.apis for e in endpoints)),
        )

    def all_capable(self, features: RequestFeatures) -> bool:
        """Whether every candidate passes `capability_drop` for this request."""
        requested = features.max_output_tokens or 0
        return (
            features.api in self.apis
            and (self.streaming or not features.stream)
            and (self.tools or not features.needs_tools)
            and (self.json_mode or not features.needs_json)
            and requested <= self.max_output_floor
            and features.prompt_tokens + requested <= self.context_floor
        )

    def cost_ceiling(self, features: RequestFeatures) -> float:
        """An upper bound of `estimate_cost` over the candidates."""
        return request_cost(
            features, self.max_output_ceiling, self.input_price_ceiling, self.output_price_ceiling
        )

    def any_slower(self, health: HealthView, max_latency_ms: float) -> bool:
        """Whether any endpoint's observed p95 exceeds the budget."""
        for name in self.endpoints:
            p95 = health.p95_latency_ms(name)
            if p95 is not None and p95 > max_latency_ms:
                return True
        return False


def drop_ejected(groups: Groups, health: HealthView, dropped: list[Dropped]) -> tuple[Groups, str]:
    """Drop replicas this sidecar has passively ejected, unless every remaining one is ejected: then keep
    them all (a last resort, returned as a note), so local ejection alone never causes an outage."""
    if not health.any_ejected():
        return groups, ""
    ejected = [c for group in groups for c in group if health.is_ejected(c.endpoint.name, c.replica)]
    if not ejected:
        return groups, ""
    out = {id(c) for c in ejected}
    kept = [[c for c in group if id(c) not in out] for group in groups]
    if not any(kept):
        names = ", ".join(f"{c.endpoint.name}/{c.replica}" for c in ejected)
        return groups, f"every available replica is passively ejected; trying them anyway: {names}"
    dropped.extend(c.ejected_drop for c in ejected)
    return kept, ""


def estimate_cost(endpoint: EndpointTraits, features: RequestFeatures) -> float:
    """Estimated USD cost of the request on an endpoint: the prompt estimate plus the requested completion
    size (or the endpoint's largest completion) at the endpoint's prices. Embeddings have no completion."""
    return request_cost(
        features, endpoint.max_output_tokens, endpoint.input_per_million, endpoint.output_per_million
    )


def request_cost(
    features: RequestFeatures, max_output: int, input_per_million: float, output_per_million: float
) -> float:
    """USD for the prompt estimate plus the completion (requested, capped at `max_output`)."""
    output = 0 if features.api == "embeddings" else min(features.max_output_tokens or max_output, max_output)
    return (features.prompt_tokens * input_per_million + output * output_per_million) / 1_000_000


def apply_cost_budget(
    groups: Groups, features: RequestFeatures, max_cost: float, dropped: list[Dropped]
) -> tuple[Groups, str]:
    """Drop candidates whose estimated cost exceeds `max_cost`; if that would drop all, keep the cheapest
    (and say so in the returned note)."""
    costs = {c.endpoint.name: estimate_cost(c.endpoint, features) for group in groups for c in group}
    if not costs or all(cost <= max_cost for cost in costs.values()):
        return groups, ""
    cheapest = min(costs.values())
    limit = max(max_cost, cheapest)
    over = [c for group in groups for c in group if costs[c.endpoint.name] > limit]
    dropped.extend(
        c.dropped(
            DropReason.COST_BUDGET,
            f"estimated ${costs[c.endpoint.name]:.6f} > budget ${max_cost:.6f}",
        )
        for c in over
    )
    kept = [[c for c in group if costs[c.endpoint.name] <= limit] for group in groups]
    if cheapest > max_cost:
        names = ", ".join(sorted({c.endpoint.name for group in kept for c in group}))
        return kept, f"cost budget ${max_cost:.6f} exceeded by every endpoint; kept the cheapest: {names}"
    return kept, ""


def apply_latency_budget(
    groups: Groups, health: HealthView, max_latency_ms: float, dropped: list[Dropped]
) -> tuple[Groups, str]:
    """Drop candidates whose endpoint's observed p95 latency exceeds the budget; endpoints without
    observations stay. If every candidate would go, keep the fastest (and say so)."""
    p95: dict[str, float | None] = {}
    for group in groups:
        for c in group:
            if c.endpoint.name not in p95:
                p95[c.endpoint.name] = health.p95_latency_ms(c.endpoint.name)
    observed = [v for v in p95.values() if v is not None]
    if not observed or all(v <= max_latency_ms for v in observed):
        return groups, ""
    fastest = min(v if v is not None else 0.0 for v in p95.values())
    limit = max(max_latency_ms, fastest)

    def too_slow(c: Candidate) -> bool:
        value = p95[c.endpoint.name]
        return value is not None and value > limit

    dropped.extend(
        c.dropped(
            DropReason.LATENCY_BUDGET,
            f"p95 {p95[c.endpoint.name]:.0f} ms > budget {max_latency_ms:.0f} ms",
        )
        for group in groups
        for c in group
        if too_slow(c)
    )
    kept = [[c for c in group if not too_slow(c)] for group in groups]
    if fastest > max_latency_ms:
        names = ", ".join(sorted({c.endpoint.name for group in kept for c in group}))
        note = f"latency budget {max_latency_ms:.0f} ms exceeded by every endpoint; kept the fastest: {names}"
        return kept, note
    return kept, ""
