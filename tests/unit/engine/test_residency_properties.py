"""Residency as a property: for any config, precedence, health state and request (signals and encodings
drawn at random), the reported class is at least as strict as every signal, every replica the engine may
call satisfies *every* signalled class, and the engine fails closed (503) when no compliant replica is up.

The oracle below reads the RouterConfig directly (not the engine's index) and knows, for each prompt
fragment, which identifiers it holds however it is encoded (ground truth, not the detectors' answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine_builders import FakeHealth, features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from modelroute_sidecar.engine import Choice, Decision, DropReason, RequestFeatures, Router

REGIONS = ("r1", "r2", "r3", "r4")
LABELS = ("gdpr", "pci", "hipaa")
CLASS_NAMES = ("c0", "c1", "c2")
PROMPT_KINDS = {
    "hello there ": (),
    "mail jane@example.com ": ("email",),
    "card 4111 1111 1111 1111 ": ("card",),
    # a printed IBAN's tail ("0044 0532 0130 00") is also a national phone number: both detectors find it
    "IBAN DE89 3704 0044 0532 0130 00 ": ("iban", "phone"),
    "call +44 20 7946 0958 ": ("phone",),
    "order 123456789 ": (),
    "prove it step by step ": (),
    # what careless or evasive clients send
    "mail jane\uff20example.com ": ("email",),
    "mail jane%40example.com ": ("email",),
    "mail JANE@B\u00dcCHER.DE ": ("email",),
    "mail jane@ex\u0430mple.com ": ("email",),
    "mail ja\u200bne@example.com ": ("email",),
    "IBAN DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000 ": ("iban", "phone"),
    "iban de89-3704-0044-0532-0130-00 ": ("iban", "phone"),
    "card 4111\u20131111\u20131111\u20131111 ": ("card",),
    "not a card 4111 1111 1111 1112 ": (),
    "not an IBAN DE00370400440532013000 ": (),
    # the policy's `pattern` detector (EMPLOYEE_ID), through the same normalisation
    "staff EMP-123456 ": ("pattern",),
    "staff \uff25\uff2d\uff30\uff0d123456 ": ("pattern",),
    "staff emp\u2011123456 ": ("pattern",),
    "not staff EMP-12345 ": (),
}
EMPLOYEE_ID = r"(?i)\bemp-\d{6}\b"
PROMPTS = tuple(PROMPT_KINDS)

subsets = st.lists
rarely = st.sampled_from((False, False, False, True))


@st.composite
def replicas(draw: st.DrawFn, endpoint: str) -> tuple[ReplicaConfig, ...]:
    count = draw(st.integers(min_value=1, max_value=4))
    return tuple(
        ReplicaConfig(
            name=f"{endpoint}-{i}",
            region=draw(st.sampled_from(REGIONS)),
            url=f"http://{endpoint}-{i}.test/v1",
            weight=draw(st.sampled_from((0, 1, 50, 100, 100, 100))),
            compliance=tuple(sorted(draw(st.sets(st.sampled_from(LABELS))))),
            health=draw(st.sampled_from((Health.HEALTHY, Health.HEALTHY, Health.UNKNOWN, Health.UNHEALTHY))),
        )
        for i in range(count)
    )


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[EndpointConfig, ...]:
    count = draw(st.integers(min_value=1, max_value=4))
    return tuple(
        EndpointConfig(
            name=f"e{i}",
            model=f"m{i}",
            capabilities=Capabilities(
                context_window=draw(st.sampled_from((1000, 8192, 128_000, 128_000))),
                max_output_tokens=draw(st.sampled_from((256, 4096, 4096))),
                streaming=draw(st.sampled_from((True, True, True, False))),
                tools=draw(st.booleans()),
                json_mode=draw(st.booleans()),
            ),
            pricing=Pricing(
                input_per_million=draw(st.sampled_from((0.1, 1.0, 30.0))),
                output_per_million=draw(st.sampled_from((0.1, 2.0, 60.0))),
            ),
            replicas=draw(replicas(f"e{i}")),
        )
        for i in range(count)
    )


@st.composite
def rules(draw: st.DrawFn, names: list[str], classes: list[str]) -> tuple[RuleConfig, ...]:
    count = draw(st.integers(min_value=1, max_value=3))
    result = []
    for i in range(count):
        targets = draw(subsets(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        canary = None
        if draw(st.booleans()):
            canary = CanarySplit(
                name=f"canary{i}",
                stable=targets[0],
                candidate=draw(st.sampled_from(names)),
                candidate_weight=draw(st.sampled_from((0.0, 30.0, 100.0))),
                stickiness_metadata="user",
            )
        match_classes = draw(subsets(st.sampled_from([*classes, "public"]), max_size=2, unique=True))
        last = i == count - 1
        result.append(
            RuleConfig(
                name=f"rule{i}",
                # the last rule often catches everything, so most requests reach the candidate stage
                match=RuleMatch(
                    data_classes=() if last and draw(st.integers(0, 3)) else tuple(sorted(match_classes))
                ),
                targets=tuple(
                    Target(endpoint=t, weight=draw(st.sampled_from((0, 1, 100, 100))))
                    for t in sorted(targets)
                ),
                fallback=tuple(draw(subsets(st.sampled_from(names), max_size=3, unique=True))),
                escalation=tuple(draw(subsets(st.sampled_from(names), max_size=3, unique=True))),
                canary=canary,
            )
        )
    return tuple(result)


@st.composite
def configs(draw: st.DrawFn) -> RouterConfig:
    eps = draw(endpoints())
    names = [e.name for e in eps]
    classes = draw(subsets(st.sampled_from(CLASS_NAMES), max_size=3, unique=True))
    # classes the policy names without defining are possible too (they must fail closed)
    nameable = [*classes, "ghost"]
    residency = Residency(
        data_classes=tuple(
            DataClassRule(
                name=c,
                allowed_regions=tuple(sorted(draw(st.sets(st.sampled_from(REGIONS), max_size=3)))),
                required_compliance=tuple(sorted(draw(st.sets(st.sampled_from(LABELS), max_size=1)))),
            )
            for c in sorted(classes)
        ),
        tenant_defaults=draw(
            st.dictionaries(st.sampled_from(("t1", "t2")), st.sampled_from(nameable), max_size=2)
        ),
        detectors=tuple(
            Detector(kind=kind, data_class=draw(st.sampled_from(nameable)))
            if kind != "pattern"
            else Detector(
                kind=kind, name="employee-id", pattern=EMPLOYEE_ID, data_class=draw(st.sampled_from(nameable))
            )
            for kind in draw(
                subsets(
                    st.sampled_from(("email", "phone", "card", "iban", "pattern")), max_size=5, unique=True
                )
            )
        ),
        default_class=draw(st.sampled_from(("", *nameable))),
        precedence=tuple(draw(st.permutations(sorted(classes)))) if draw(st.booleans()) else (),
    )
    policy = PolicyConfig(
        name="p",
        virtual_models=("auto",),
        rules=draw(rules(names, classes)),
        residency=residency,
        locality=Locality(
            prefer_local=draw(st.booleans()),
            failover_order=tuple(draw(st.permutations(REGIONS))[: draw(st.integers(0, 4))]),
        ),
        budgets=Budgets(
            max_cost_per_request_usd=draw(st.sampled_from((None, 0.001, 1.0))),
            max_latency_ms=draw(st.sampled_from((None, 500))),
        ),
    )
    return RouterConfig(namespace="prop", endpoints=eps, policies=(policy,)).seal()


@st.composite
def requests(draw: st.DrawFn, config: RouterConfig) -> RequestFeatures:
    policy = config.policies[0]
    declarable = [c.name for c in policy.residency.data_classes]
    metadata = {"user": f"u{draw(st.integers(0, 50))}"}
    if draw(st.booleans()):
        metadata["tenant"] = draw(st.sampled_from(("t1", "t2", "t3", "T1", "t\u0032")))
    return features(
        request_id=f"req-{draw(st.integers(0, 10**6))}",
        metadata=metadata,
        prompt_text="".join(draw(subsets(st.sampled_from(PROMPTS), max_size=4))),
        declared_data_class=draw(st.sampled_from((None, None, None, "public", "bogus", *declarable))),
        prompt_tokens=draw(st.sampled_from((1, 50, 500, 500, 5000, 20_000))),
        max_output_tokens=draw(st.sampled_from((None, None, 100, 5000))),
        stream=draw(rarely),
        needs_tools=draw(rarely),
        needs_json=draw(rarely),
    )


@st.composite
def healths(draw: st.DrawFn, config: RouterConfig) -> FakeHealth:
    everything = [(e.name, r.name) for e in config.endpoints for r in e.replicas]
    return FakeHealth(
        ejected=draw(st.sets(st.sampled_from(everything))),
        p95={e.name: draw(st.sampled_from((100.0, 900.0))) for e in config.endpoints if draw(st.booleans())},
    )


@dataclass(frozen=True)
class Scenario:
    config: RouterConfig
    local_region: str
    request: RequestFeatures
    health: FakeHealth
    seed: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    config = draw(configs())
    return Scenario(
        config=config,
        local_region=draw(st.sampled_from(("", *REGIONS))),
        request=draw(requests(config)),
        health=draw(healths(config)),
        seed=draw(st.integers(0, 2**32)),
    )


# --------------------------------------------------------------------------------------------- oracle


def signalled(config: RouterConfig, request: RequestFeatures) -> list[str] | None:
    """Every class a signal gives (declared, tenant default, each detector that must find, default);
    None for an invalid declaration."""
    residency = config.policies[0].residency
    found: list[str] = []
    if request.declared_data_class is not None:
        names = {c.name for c in residency.data_classes} | {"public"}
        if request.declared_data_class not in names:
            return None
        found.append(request.declared_data_class)
    tenant = request.metadata.get("tenant")
    tenants = {t.casefold(): c for t, c in residency.tenant_defaults.items()}
    if tenant is not None and tenant.casefold() in tenants:
        found.append(tenants[tenant.casefold()])
    kinds = {
        kind for fragment, kinds in PROMPT_KINDS.items() if fragment in request.prompt_text for kind in kinds
    }
    found.extend(d.data_class for d in residency.detectors if d.kind in kinds)
    if residency.default_class:
        found.append(residency.default_class)
    return found


def strictness(config: RouterConfig, data_class: str) -> int:
    """The documented order: precedence (or the dataClasses order), undefined first, public last."""
    residency = config.policies[0].residency
    order = list(residency.precedence) or [c.name for c in residency.data_classes]
    if data_class == "public":
        return len(order)
    return order.index(data_class) if data_class in order else -1


def complies(config: RouterConfig, data_class: str, region: str, labels: tuple[str, ...]) -> bool:
    """Whether data of `data_class` may be processed in `region` on a replica carrying `labels`."""
    rules = {c.name: c for c in config.policies[0].residency.data_classes}
    rule = rules.get(data_class)
    if rule is None:
        return data_class == "public"
    in_region = not rule.allowed_regions or region in rule.allowed_regions
    return in_region and set(rule.required_compliance) <= set(labels)


def complies_all(config: RouterConfig, classes: list[str], region: str, labels: tuple[str, ...]) -> bool:
    """Every signalled class allows the replica (the conjunction)."""
    return all(complies(config, c, region, labels) for c in classes)


def replica_of(config: RouterConfig, endpoint: str, name: str) -> ReplicaConfig:
    return next(r for e in config.endpoints if e.name == endpoint for r in e.replicas if r.name == name)


def plan_replicas(config: RouterConfig, rule_name: str) -> list[ReplicaConfig]:
    """Every replica the rule's targets, canary and fallback could use."""
    rule = next(r for r in config.policies[0].rules if r.name == rule_name)
    names = [t.endpoint for t in rule.targets] + list(rule.fallback)
    if rule.canary is not None:
        names += [rule.canary.stable, rule.canary.candidate]
    return [r for e in config.endpoints if e.name in names for r in e.replicas]


def check(scenario: Scenario, decision: Decision) -> None:
    config, request = scenario.config, scenario.request
    classes = signalled(config, request)
    if classes is None:
        assert decision.error is not None and decision.error.code == "invalid_data_class"
        return
    # the property: the reported class is at least as strict as every signal, and is one of them
    for signal in classes:
        assert strictness(config, decision.data_class) <= strictness(config, signal), (decision, classes)
    assert decision.data_class in {*classes, "public"}
    assert set(decision.data_classes) == set(classes) - {"public"}
    choices: tuple[Choice, ...] = decision.plan + decision.escalation
    for choice in choices:
        replica = replica_of(config, choice.endpoint, choice.replica)
        assert choice.region == replica.region
        # the property: nothing the proxy may call breaks the request's residency
        assert complies_all(config, classes, replica.region, replica.compliance), (classes, choice)
        assert replica.health != Health.UNHEALTHY
    if decision.error is None:
        assert decision.plan, "a decision without an error must have somewhere to go"
    for drop in decision.dropped:
        replica = replica_of(config, drop.endpoint, drop.replica)
        residency_drop = drop.reason in (DropReason.RESIDENCY_REGION, DropReason.RESIDENCY_COMPLIANCE)
        assert residency_drop != complies_all(config, classes, replica.region, replica.compliance)
    if not decision.rule:
        return  # no rule matched (or the model is unknown): nothing to route
    candidates = plan_replicas(config, decision.rule)
    compliant = [r for r in candidates if complies_all(config, classes, r.region, r.compliance)]
    up = [r for r in compliant if r.health != Health.UNHEALTHY]
    if not up:
        # fail closed: no compliant replica that is not unhealthy → 503, never an upstream call
        assert decision.error is not None and decision.error.status == 503, decision.error
        assert not decision.plan
    if not compliant:
        assert decision.error is not None and decision.error.code == "no_compliant_endpoint"
    if decision.error is not None and decision.error.code == "no_compliant_endpoint":
        assert not compliant


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_every_choice_satisfies_residency_and_the_engine_fails_closed(scenario: Scenario) -> None:
    router = Router(scenario.config, scenario.local_region)
    decision = router.decide(scenario.request, scenario.health, seed=scenario.seed)
    check(scenario, decision)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_ejection_alone_never_empties_a_plan(scenario: Scenario) -> None:
    # The same request with and without passive ejections: ejection may reorder or trim, never refuse.
    router = Router(scenario.config, scenario.local_region)
    calm = router.decide(scenario.request, FakeHealth(p95=scenario.health.p95), seed=scenario.seed)
    stormy = router.decide(scenario.request, scenario.health, seed=scenario.seed)
    assert (calm.error is None) == (stormy.error is None)
    check(scenario, stormy)
