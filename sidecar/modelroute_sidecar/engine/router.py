"""The Router: decide(features, health) → Decision, the pure core of the data plane.

The pipeline, each stage in its own module:

1. virtual model → policy (unknown: 404 `model_not_found`);
2. data class (`classification`; an undefined declared class: 400 `invalid_data_class`);
3. first matching rule (`rules`; none: 400 `no_matching_rule`), with the complexity score (`complexity`)
   computed only if a rule it reaches has a complexity condition (else reported as -1, `NOT_SCORED`);
4. the rule's table for the data class (`index`): candidates already filtered for residency, active
   health and weight;
5. request filters (`filters`): capabilities and context window, then passive ejection and the cost and
   latency budgets, which are soft (they never empty the plan on their own);
6. the canary split (`canary`), which falls back to the other side rather than fail;
7. ordering (`scorers`): weighted pick among the best-ranked targets (or, for a `bandit` rule, Thompson
   sampling over them: `bandit`), then retries, then fallbacks.

Nothing is built per request beyond the lists a decision returns: the index is built here, once, when a
config loads. With no candidate left the decision fails closed: 503 `no_compliant_endpoint` when
residency excludes every replica, 503 `no_healthy_endpoint` when the compliant ones are down or drained,
400 `unsupported_request` when none of the endpoints can serve this request at all.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from collections.abc import Callable, Mapping, Sequence

from modelroute_contract import RouterConfig

from .affinity import SessionView, hold, session_key, session_seed
from .bandit import BanditView, pick_bandit
from .canary import CanaryPlan, Side, choose_side
from .candidates import Candidate, EndpointTraits
from .classification import Classification
from .complexity import LazyComplexity
from .filters import (
    Groups,
    ListSummary,
    apply_cost_budget,
    apply_latency_budget,
    capability_drop,
    drop_ejected,
)
from .index import PolicyIndex, RouteIndex, RouteTable, build_policy
from .learned import PolicyModels
from .model import (
    BanditDecision,
    Decision,
    DecisionError,
    Dropped,
    HealthView,
    RequestFeatures,
)
from .rules import describe_request, first_match
from .scorers import build_plan, plan_from
from .shadow import ShadowPick, pick_shadow, sampled

_RANDOM = random.Random()
"""Picks for unseeded decisions; seeded ones (tests) get their own generator."""
os.register_at_fork(after_in_child=_RANDOM.seed)  # forked workers must not all draw the same picks


def keep_capable(
    candidates: Sequence[Candidate], features: RequestFeatures, dropped: list[Dropped]
) -> Sequence[Candidate]:
    """The candidates whose endpoint can serve the request; the others are recorded as dropped."""
    kept = []
    for candidate in candidates:
        drop = capability_drop(candidate, features)
        if drop is None:
            kept.append(candidate)
        else:
            dropped.append(drop)
    return kept


def apply_soft_filters(
    groups: Groups,
    summary: ListSummary,
    policy: PolicyIndex,
    features: RequestFeatures,
    health: HealthView,
    dropped: list[Dropped],
    notes: list[str],
) -> Groups:
    """Passive ejection, then the cost and latency budgets (skipped when the list's bounds show every
    candidate within them); each keeps something when it would keep nothing, and says so in `notes`."""
    groups, note = drop_ejected(groups, health, dropped)
    if note:
        notes.append(note)
    max_cost = policy.max_cost
    if max_cost is not None and summary.cost_ceiling(features) > max_cost:
        groups, note = apply_cost_budget(groups, features, max_cost, dropped)
        if note:
            notes.append(note)
    max_latency = policy.max_latency_ms
    if max_latency is not None and summary.any_slower(health, max_latency):
        groups, note = apply_latency_budget(groups, health, max_latency, dropped)
        if note:
            notes.append(note)
    return groups


def split_canary(
    canary: CanaryPlan,
    primary: Sequence[Candidate],
    features: RequestFeatures,
    dropped: list[Dropped],
    notes: list[str],
) -> tuple[Sequence[Candidate], Side]:
    """Keep one side of the canary: the one the request's stickiness key hashes to, or the other one when
    the hashed side has no replica left (noted). Returns the targets left and the side served."""
    side = choose_side(canary, features)
    if canary.stable == canary.candidate:
        return primary, side  # nothing to split (the compiler refuses this; the engine stays safe)
    chosen, other = canary.candidate, canary.stable
    if side == "stable":
        chosen, other = other, chosen
    # A set comprehension is inlined (PEP 709); `any()` over a generator costs a frame per candidate.
    present = {c.endpoint.name for c in primary}
    if chosen not in present:
        if other in present:
            served: Side = "stable" if side == "candidate" else "candidate"
            notes.append(f"canary {canary.name}: no available replica of {chosen} ({side}); serving {other}")
            return primary, served
        return primary, side
    kept = []
    for candidate in primary:
        if candidate.endpoint.name == other:
            dropped.append(
                canary.other_side_drop(candidate.endpoint.name, candidate.replica, candidate.region, side)
            )
        else:
            kept.append(candidate)
    return kept, side


def explain_unavailable(
    route: RouteIndex, table: RouteTable, classification: Classification, features: RequestFeatures
) -> DecisionError:
    """Why no target or fallback replica is left (called only when none is)."""
    rule = route.rule.name
    if table.compliant == 0:
        source = f" (from {classification.source})" if classification.source else ""
        return DecisionError(
            503,
            "no_compliant_endpoint",
            f"no replica of rule '{rule}' may process {table.residency.describe()}{source}; "
            "refusing to send the request elsewhere",
        )
    if not (table.primary or table.fallback):
        return DecisionError(
            503,
            "no_healthy_endpoint",
            f"all {table.compliant} replicas of rule '{rule}' allowed for data class "
            f"'{classification.data_class}' are unhealthy or drained",
        )
    # Every available replica lacks a capability: a temporary outage if one that is down has it.
    if any(capability_drop(c, features) is None for c in table.parked):
        return DecisionError(
            503,
            "no_healthy_endpoint",
            f"the replicas of rule '{rule}' that could serve this request are unhealthy or drained",
        )
    reasons = sorted(
        {
            drop.detail
            for c in table.primary + table.fallback
            if (drop := capability_drop(c, features)) is not None
        }
    )
    return DecisionError(
        400,
        "unsupported_request",
        f"no endpoint of rule '{rule}' can serve this request: {'; '.join(reasons)}",
    )


def filter_escalation(
    table: RouteTable,
    policy: PolicyIndex,
    features: RequestFeatures,
    health: HealthView,
    dropped: list[Dropped],
    notes: list[str],
) -> Sequence[Candidate]:
    """The request filters on the escalation list, on their own: it is tried only after the plan, so its
    soft filters judge it alone. A replica also in the fallback chain is reported dropped once."""
    own_drops: list[Dropped] = []
    own_notes: list[str] = []
    escalation: Sequence[Candidate] = table.escalation
    if not table.escalation_summary.all_capable(features):
        escalation = keep_capable(escalation, features, own_drops)
    if escalation:
        (escalation,) = apply_soft_filters(
            (escalation,), table.escalation_summary, policy, features, health, own_drops, own_notes
        )
    if own_drops:
        seen = {(d.endpoint, d.replica) for d in dropped}
        dropped.extend(d for d in own_drops if (d.endpoint, d.replica) not in seen)
    notes.extend(f"escalation: {note}" for note in own_notes)
    return escalation


class Router:
    """Decides where each request goes, for one RouterConfig (build a new Router for a new config)."""

    def __init__(
        self, config: RouterConfig, local_region: str = "", models: Mapping[str, PolicyModels] | None = None
    ) -> None:
        """`models`: by policy name, the learned models of policies whose rules use them (the sidecar's
        `embeddings.load_models`); ValueError when a rule names one that is not given."""
        self._config = config
        self._local_region = local_region
        endpoints = {e.name: e for e in config.endpoints}
        traits = {e.name: EndpointTraits.from_config(e) for e in config.endpoints}
        self._policies: dict[str, PolicyIndex] = {}
        for policy in config.policies:
            index = build_policy(policy, endpoints, traits, local_region, (models or {}).get(policy.name))
            for model in policy.virtual_models:
                self._policies[model] = index
        self._virtual_models = tuple(sorted(self._policies))
        available = ", ".join(self._virtual_models) or "none"
        self._available = f"available models: {available}"

    @property
    def virtual_models(self) -> tuple[str, ...]:
        """The model names clients may request, sorted."""
        return self._virtual_models

    @property
    def config(self) -> RouterConfig:
        """The config this router decides by."""
        return self._config

    @property
    def local_region(self) -> str:
        """The sidecar's own region, preferred by locality."""
        return self._local_region

    def decide(
        self,
        features: RequestFeatures,
        health: HealthView,
        seed: int | None = None,
        sessions: SessionView | None = None,
        bandits: BanditView | None = None,
    ) -> Decision:
        """Decide where a request goes (see the module docstring). Never raises for a request: a request
        that cannot be routed gets a Decision with `error` set. `sessions`: the table session affinity
        reads (rules with `affinity` route without it when it is not given). `bandits`: the posteriors
        bandit rules sample (without it every arm is at its prior)."""
        policy = self._policies.get(features.model)
        if policy is None:
            return Decision(
                error=DecisionError(
                    404, "model_not_found", f"model '{features.model}' does not exist; {self._available}"
                )
            )
        classification = policy.classifier.classify(features)
        if isinstance(classification, DecisionError):
            return Decision(policy=policy.name, error=classification)
        data_class = classification.data_class
        complexity = LazyComplexity(features.prompt_text, features.prompt_tokens, policy.models)
        index = first_match(policy.rules_for(features.model, data_class), features, complexity)
        if index < 0:
            return Decision(
                policy=policy.name,
                data_class=data_class,
                data_class_source=classification.source,
                data_classes=tuple(sorted(classification.classes)),
                signals=classification.signals,
                notes=classification.notes,
                complexity=complexity.value,
                error=DecisionError(
                    400,
                    "no_matching_rule",
                    f"no rule of policy '{policy.name}' matches this request "
                    f"({describe_request(features, complexity.value, data_class)})",
                ),
            )
        route = policy.routes[index]
        table = route.table_for(data_class, classification.classes)
        affinity = route.affinity
        session = None
        if affinity is not None and sessions is not None:
            session = session_key(affinity, policy.name, route.rule.name, features)
            if session is not None and seed is None:
                seed = session_seed(session)  # a new session starts on the same replica in every worker
        rng = _RANDOM if seed is None else random.Random(seed)
        reported = complexity.reported
        shadow_pick = None
        shadow = route.shadow
        if shadow is not None and sampled(shadow, policy.name, route.rule.name, features.request_id):
            # its own generator when seeded, so a mirrored request's primary pick is the unmirrored one's
            shadow_rng = _RANDOM if seed is None else random.Random(~seed)
            shadow_pick = pick_shadow(shadow, table, features, health, shadow_rng)
        decision = self._route(
            policy, route, table, classification, reported, features, health, rng, bandits, shadow_pick
        )
        if session is not None and sessions is not None and decision.error is None:
            decision = hold(decision, session, sessions.pinned(session))
        if policy.models is None:
            return decision
        semantic_route, similarity = complexity.semantic_reported
        return dataclasses.replace(
            decision,
            complexity_scorer=complexity.scorer,
            semantic_route=semantic_route,
            semantic_similarity=round(similarity, 4),
        )

    def _route(
        self,
        policy: PolicyIndex,
        route: RouteIndex,
        table: RouteTable,
        classification: Classification,
        complexity: int,
        features: RequestFeatures,
        health: HealthView,
        rng: random.Random,
        bandits: BanditView | None = None,
        shadow: ShadowPick | None = None,
    ) -> Decision:
        """Stages 5-7 for the matched rule's table; `shadow`: the request's copy, kept when it is routed."""
        dropped = list(table.static_drops)
        notes: list[str] = list(classification.notes)
        primary: Sequence[Candidate] = table.primary
        fallback: Sequence[Candidate] = table.fallback
        if not table.plan_summary.all_capable(features):
            primary = keep_capable(table.primary, features, dropped)
            fallback = keep_capable(table.fallback, features, dropped)
        if not (primary or fallback):
            return Decision(
                policy=policy.name,
                rule=route.rule.name,
                data_class=classification.data_class,
                data_class_source=classification.source,
                data_classes=tuple(sorted(classification.classes)),
                signals=classification.signals,
                complexity=complexity,
                dropped=tuple(dropped),
                notes=tuple(notes),
                error=explain_unavailable(route, table, classification, features),
            )
        primary, fallback = apply_soft_filters(
            (primary, fallback), table.plan_summary, policy, features, health, dropped, notes
        )
        side: Side | None = None
        if route.canary is not None:
            primary, side = split_canary(route.canary, primary, features, dropped, notes)
        escalation: Sequence[Candidate] = table.escalation
        if escalation:
            escalation = filter_escalation(table, policy, features, health, dropped, notes)
        bandit = route.bandit
        make: Callable[..., Decision] = Decision  # a weighted rule's decision is the plain one, as before
        if bandit is None or not primary:
            plan = build_plan(primary, fallback, rng)
        else:
            posteriors = bandits.arms(policy.name, route.rule.name) if bandits is not None else {}
            on_candidate = route.canary.candidate if route.canary is not None and side == "candidate" else ""
            first, pick = pick_bandit(primary, bandit, posteriors, rng, on_candidate)
            plan = plan_from(primary, fallback, first)
            make = functools.partial(BanditDecision, bandit=pick)
        return make(
            policy=policy.name,
            rule=route.rule.name,
            data_class=classification.data_class,
            data_class_source=classification.source,
            data_classes=tuple(sorted(classification.classes)),
            signals=classification.signals,
            complexity=complexity,
            plan=plan,
            escalation=tuple([c.choice for c in escalation]),
            dropped=tuple(dropped),
            canary=route.canary.name if route.canary is not None else "",
            canary_side=side or "",
            notes=tuple(notes),
            shadow=shadow,
        )
