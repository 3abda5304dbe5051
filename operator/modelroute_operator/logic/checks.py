"""The compiler's checks, pure: every problem of a namespace's objects and their cross-references, with
the object and field at fault. The CRDs' CEL invariants the compiler relies on are repeated here with the
same messages, since manifests checked offline (`modelroute validate`) never met the API server; pattern
detectors are compiled with RE2 by the engine (`modelroute_sidecar.engine.detectors`), as the sidecar will.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import modelroute_contract as contract
from modelroute_contract.constants import PUBLIC_CLASS
from modelroute_operator.logic.resources import (
    DNS_LABEL,
    MAX_NAME_LENGTH,
    Canary,
    DataClass,
    IntRange,
    ModelEndpoint,
    Replica,
    RoutingPolicy,
    Rule,
    seconds,
)
from modelroute_sidecar.engine import detectors

from .learned import check_learned
from .objects import (
    LINKS,
    CompileError,
    NamespaceIndex,
    NamespaceObjects,
    Object,
    Reporter,
    all_objects,
    chain_endpoints,
    contract_class,
    follow,
    reporter,
)


def check_namespace(
    objects: NamespaceObjects, ns: NamespaceIndex, ports: Sequence[int]
) -> list[CompileError]:
    """Every problem of the namespace, sorted by object and field (none: it may be built)."""
    return sorted(
        set(
            [
                *_check_unique_names(objects),
                *(e for o in all_objects(objects) for e in _check_name(o)),
                *(e for ep in ns.endpoints.values() for e in _check_endpoint(ep, ports)),
                *(e for p in ns.policies.values() for e in _check_policy(p, ns)),
                *_check_virtual_models(ns),
                *_check_canaries(ns),
            ]
        ),
        key=lambda e: (e.kind, e.name, e.field, e.message),
    )


def _check_name(obj: Object) -> Iterator[CompileError]:
    """The CRDs' root CEL rule, repeated: references (`Name`) and headers carry at most a DNS label."""
    name = obj.metadata.name
    if len(name) > MAX_NAME_LENGTH or not re.match(DNS_LABEL, name):
        yield reporter(obj)(
            "metadata.name",
            f"must be a DNS label of at most {MAX_NAME_LENGTH} characters (lower-case letters, digits and "
            f"'-'; got {len(name)} characters): other objects and the router's headers refer to it by name",
        )


def _check_unique_names(objects: NamespaceObjects) -> Iterator[CompileError]:
    groups: tuple[Sequence[Object], ...] = (objects.endpoints, objects.policies, objects.canaries)
    for group in groups:
        names = [o.metadata.name for o in group]
        for name in sorted({n for n in names if names.count(n) > 1}):
            kind = group[0].kind
            yield CompileError(kind, name, "metadata.name", f"{kind} '{name}' is defined more than once")


# -------------------------------------------------------------------------------------- endpoints


def _check_endpoint(endpoint: ModelEndpoint, sidecar_ports: Sequence[int]) -> Iterator[CompileError]:
    spec, error = endpoint.spec, reporter(endpoint)
    for i, replica in enumerate(spec.replicas):
        # The contract's rule (the sidecar applies the same one to every config it is given).
        problem = contract.replica_url_problem(replica.url, spec.allow_private_targets, sidecar_ports)
        if problem:
            # The URL itself is not echoed: with user-info it holds a password.
            yield error(f"spec.replicas[{i}].url", problem)
    yield from _check_unique_values([r.name for r in spec.replicas], "spec.replicas[{}].name", error)
    if all(r.weight == 0 for r in spec.replicas):
        yield error("spec.replicas", "at least one replica must have a weight above 0")
    if spec.capabilities.max_output_tokens > spec.capabilities.context_window:
        yield error("spec.capabilities.maxOutputTokens", "maxOutputTokens must not exceed contextWindow")
    if seconds(spec.health_check.timeout) >= seconds(spec.health_check.interval):
        yield error("spec.healthCheck.timeout", "timeout must be shorter than interval")
    yield from _check_secret_refs(endpoint)
    yield from _check_provider(endpoint)


def _check_provider(endpoint: ModelEndpoint) -> Iterator[CompileError]:
    """The contract's rule of what each native provider needs (auth, version, project, regions)."""
    spec, error = endpoint.spec, reporter(endpoint)
    settings = spec.provider_settings
    problem = contract.provider_settings_problem(
        spec.provider,
        contract.ProviderSettings(
            auth=settings.auth or "", api_version=settings.api_version or "", project=settings.project or ""
        )
        if settings is not None
        else None,
        spec.credentials is not None,
        [r.region for r in spec.replicas],
    )
    if problem:
        yield error(f"spec.{problem[0]}", problem[1])


def _check_secret_refs(endpoint: ModelEndpoint) -> Iterator[CompileError]:
    """Secret references the sidecar turns into file paths (`<secret>/<key>`), and TLS on https only."""
    spec, error = endpoint.spec, reporter(endpoint)
    refs = [("spec.credentials", spec.credentials)]
    if spec.tls is not None:
        refs.append(("spec.tls.caBundle", spec.tls.ca_bundle))
    for path, ref in refs:
        if ref is not None and ref.key in (".", ".."):
            yield error(f"{path}.key", f"{ref.key!r} is not a Secret key (it would name a directory)")
    if spec.tls is None:
        return
    if spec.tls.ca_bundle is None and spec.tls.client_certificate is None and spec.tls.server_name is None:
        yield error("spec.tls", "set caBundle, clientCertificate or serverName, or leave tls out")
    for index, replica in enumerate(spec.replicas):
        if not replica.url.lower().startswith("https://"):
            yield error(
                f"spec.replicas[{index}].url",
                "spec.tls applies to https replicas only, and this replica's URL is plain http",
            )


def _satisfies(replica: Replica, data_class: DataClass) -> bool:
    """Whether data of this class may be processed on this replica (the contract's one predicate)."""
    return (
        contract.residency_violation(replica.region, replica.compliance, [contract_class(data_class)]) is None
    )


def _check_policy(policy: RoutingPolicy, ns: NamespaceIndex) -> Iterator[CompileError]:
    spec, error = policy.spec, reporter(policy)
    yield from _check_unique_values(spec.virtual_models, "spec.virtualModels[{}]", error)
    yield from _check_unique_values([r.name for r in spec.rules], "spec.rules[{}].name", error)
    yield from _check_residency(policy)
    yield from _check_unique_values(spec.locality.failover_order, "spec.locality.failoverOrder[{}]", error)
    yield from _check_unique_values(
        [limit.tenant_tier or "" for limit in spec.tenant_limits], "spec.tenantLimits[{}].tenantTier", error
    )
    if spec.fleet_limits is not None:
        yield from _check_unique_values(
            [t.tenant_tier or "" for t in spec.fleet_limits.tenants],
            "spec.fleetLimits.tenants[{}].tenantTier",
            error,
        )
    if seconds(spec.resilience.per_try_timeout) > seconds(spec.resilience.deadline):
        yield error("spec.resilience.perTryTimeout", "perTryTimeout must not exceed deadline")
    for i, rule in enumerate(spec.rules):
        yield from _check_rule(policy, i, rule, ns)
    for link in LINKS:
        yield from _check_cycles(policy, link)
    yield from check_learned(policy, ns.config_maps)


def _check_residency(policy: RoutingPolicy) -> Iterator[CompileError]:
    residency, error = policy.spec.residency, reporter(policy)
    classes = [c.name for c in residency.data_classes]
    yield from _check_unique_values(classes, "spec.residency.dataClasses[{}].name", error)
    for i, data_class in enumerate(residency.data_classes):
        field = f"spec.residency.dataClasses[{i}]"
        if data_class.name == PUBLIC_CLASS:
            yield error(f"{field}.name", "'public' is reserved for unrestricted data")
        if not data_class.allowed_regions and not data_class.required_compliance:
            yield error(field, "a data class must restrict regions or require compliance labels")
    for tenant, name in sorted(residency.tenant_defaults.items()):
        yield from _check_data_class_name(policy, f"spec.residency.tenantDefaults[{tenant}]", name)
    folded: dict[str, str] = {}
    for tenant in sorted(residency.tenant_defaults):
        other = folded.setdefault(tenant.casefold(), tenant)
        if other != tenant:
            yield error(
                f"spec.residency.tenantDefaults[{tenant}]",
                f"tenant '{tenant}' collides with '{other}': tenants are matched case-insensitively",
            )
    for i, name in enumerate(residency.precedence):
        if name not in classes:
            yield error(
                f"spec.residency.precedence[{i}]",
                f"data class '{name}' is not declared in spec.residency.dataClasses ({', '.join(classes)})",
            )
    yield from _check_unique_values(residency.precedence, "spec.residency.precedence[{}]", error)
    if residency.precedence:
        missing = [c for c in classes if c not in residency.precedence]
        if missing:
            yield error(
                "spec.residency.precedence",
                f"precedence must list every data class; missing: {', '.join(missing)}",
            )
    for i, detector in enumerate(residency.detectors):
        yield from _check_data_class_name(
            policy, f"spec.residency.detectors[{i}].dataClass", detector.data_class
        )
        # Mirrors the CRD's CEL rule, and compiles the pattern with RE2 (what the sidecar will run).
        problem = detectors.detector_problem(detector.kind, detector.name, detector.pattern)
        if problem:
            yield error(f"spec.residency.detectors[{i}].{problem[0]}", f"{problem[0]} {problem[1]}")
    patterns = [d.name or "" for d in residency.detectors if d.kind == "pattern"]
    if len(patterns) > contract.PATTERN_DETECTORS_MAX:
        yield error(
            "spec.residency.detectors",
            f"{len(patterns)} detectors of kind 'pattern', at most {contract.PATTERN_DETECTORS_MAX}",
        )
    named: dict[str, int] = {}
    for i, detector in enumerate(residency.detectors):
        if detector.name and named.setdefault(detector.name, i) != i:
            yield error(
                f"spec.residency.detectors[{i}].name",
                f"'{detector.name}' is listed twice (first at index {named[detector.name]})",
            )
    if residency.default_class is not None:
        yield from _check_data_class_name(policy, "spec.residency.defaultClass", residency.default_class)


def _check_data_class_name(policy: RoutingPolicy, field: str, name: str) -> Iterator[CompileError]:
    declared = [c.name for c in policy.spec.residency.data_classes]
    if name != PUBLIC_CLASS and name not in declared:
        choices = ", ".join([*declared, PUBLIC_CLASS])
        yield reporter(policy)(field, f"data class '{name}' is not declared in spec.residency ({choices})")


def _check_rule(policy: RoutingPolicy, i: int, rule: Rule, ns: NamespaceIndex) -> Iterator[CompileError]:
    yield from _check_targets(policy, f"spec.rules[{i}]", rule, ns)
    yield from _check_shadow(policy, f"spec.rules[{i}].shadow", rule, ns)
    yield from _check_match(policy, f"spec.rules[{i}].match", rule, ns)
    rules = {r.name for r in policy.spec.rules}
    for link, attr in LINKS.items():
        linked = getattr(rule, attr)
        if linked is not None and linked not in rules:
            yield reporter(policy)(
                f"spec.rules[{i}].{link}", f"rule '{linked}' does not exist in this policy"
            )


def _check_targets(
    policy: RoutingPolicy, field: str, rule: Rule, ns: NamespaceIndex
) -> Iterator[CompileError]:
    error = reporter(policy)
    for j, target in enumerate(rule.targets):
        if target.endpoint not in ns.endpoints:
            yield error(
                f"{field}.targets[{j}].endpoint",
                f"ModelEndpoint '{target.endpoint}' does not exist in namespace '{ns.name}'",
            )
    yield from _check_unique_values(
        [t.endpoint for t in rule.targets], f"{field}.targets[{{}}].endpoint", error
    )
    if all(t.weight == 0 for t in rule.targets):
        yield error(f"{field}.targets", "at least one target must have a weight above 0")


def _check_shadow(
    policy: RoutingPolicy, field: str, rule: Rule, ns: NamespaceIndex
) -> Iterator[CompileError]:
    shadow, error = rule.shadow, reporter(policy)
    if shadow is None:
        return
    if shadow.endpoint not in ns.endpoints:
        yield error(
            f"{field}.endpoint", f"ModelEndpoint '{shadow.endpoint}' does not exist in namespace '{ns.name}'"
        )
        return
    if any(t.endpoint == shadow.endpoint for t in rule.targets):
        yield error(
            f"{field}.endpoint",
            f"ModelEndpoint '{shadow.endpoint}' is one of the rule's targets; a shadow must be another "
            "endpoint",
        )


def _check_match(policy: RoutingPolicy, field: str, rule: Rule, ns: NamespaceIndex) -> Iterator[CompileError]:
    match, error = rule.match, reporter(policy)
    for k, model in enumerate(match.models):
        if model not in policy.spec.virtual_models:
            served = ", ".join(policy.spec.virtual_models)
            yield error(
                f"{field}.models[{k}]", f"virtual model '{model}' is not served by this policy ({served})"
            )
    for range_field, value_range in (("promptTokens", match.prompt_tokens), ("complexity", match.complexity)):
        if _inverted(value_range):
            yield error(f"{field}.{range_field}.min", "min must not exceed max")
    for k, name in enumerate(match.data_classes):
        yield from _check_data_class_name(policy, f"{field}.dataClasses[{k}]", name)
        yield from _check_rule_residency(policy, f"{field}.dataClasses[{k}]", rule, name, ns)


def _inverted(value_range: IntRange | None) -> bool:
    if value_range is None or value_range.min is None or value_range.max is None:
        return False
    return value_range.min > value_range.max


def _check_rule_residency(
    policy: RoutingPolicy, field: str, rule: Rule, class_name: str, ns: NamespaceIndex
) -> Iterator[CompileError]:
    data_class = _data_class(policy, class_name)
    names = [t.endpoint for t in rule.targets] + list(chain_endpoints(policy, rule, "fallbackTo"))
    if data_class is None or any(n not in ns.endpoints for n in names):
        return  # an unknown class or endpoint is reported on its own; a second error would only add noise
    if not any(_satisfies(r, data_class) for n in names for r in ns.endpoints[n].spec.replicas):
        yield reporter(policy)(
            field,
            f"residency rules leave no possible endpoint for data class '{class_name}': no replica of "
            f"{', '.join(dict.fromkeys(names))} {_describe_class(data_class)}",
        )


def _describe_class(data_class: DataClass) -> str:
    parts = []
    if data_class.allowed_regions:
        parts.append(f"runs in an allowed region ({', '.join(data_class.allowed_regions)})")
    if data_class.required_compliance:
        parts.append(f"carries {', '.join(data_class.required_compliance)}")
    return " and ".join(parts)


def _data_class(policy: RoutingPolicy, name: str) -> DataClass | None:
    return next((c for c in policy.spec.residency.data_classes if c.name == name), None)


def _check_cycles(policy: RoutingPolicy, link: str) -> Iterator[CompileError]:
    rules = policy.spec.rules
    position = {r.name: i for i, r in reversed(list(enumerate(rules)))}
    for i, rule in enumerate(rules):
        cycle = follow(policy, rule, link)[1]
        # Every rule on the cycle sees it; report it once, on the cycle's first rule in policy order.
        if cycle and min(position[n] for n in cycle) == i and cycle[0] == rule.name:
            chain = " → ".join([*cycle, cycle[0]])
            yield reporter(policy)(f"spec.rules[{i}].{link}", f"{link} chain forms a cycle: {chain}")


def _check_virtual_models(ns: NamespaceIndex) -> Iterator[CompileError]:
    served_by: dict[str, str] = {}
    for policy in ns.policies.values():
        for j, model in enumerate(policy.spec.virtual_models):
            owner = served_by.setdefault(model, policy.metadata.name)
            if owner != policy.metadata.name:
                yield reporter(policy)(
                    f"spec.virtualModels[{j}]",
                    f"virtual model '{model}' is already served by RoutingPolicy '{owner}'",
                )


# ---------------------------------------------------------------------------------------- canaries


def _check_canaries(ns: NamespaceIndex) -> Iterator[CompileError]:
    claimed: dict[tuple[str, str], str] = {}
    for canary in ns.canaries.values():
        yield from _check_canary(canary, ns)
        route = (canary.spec.target.policy, canary.spec.target.rule)
        owner = claimed.setdefault(route, canary.metadata.name)
        if owner != canary.metadata.name:
            yield reporter(canary)(
                "spec.target.rule",
                f"rule '{route[1]}' of RoutingPolicy '{route[0]}' already has Canary '{owner}'",
            )


def _check_canary(canary: Canary, ns: NamespaceIndex) -> Iterator[CompileError]:
    yield from _check_canary_spec(canary)
    yield from _check_canary_route(canary, ns)


def _check_canary_spec(canary: Canary) -> Iterator[CompileError]:
    spec, error = canary.spec, reporter(canary)
    if spec.stable == spec.candidate:
        yield error("spec.candidate", "candidate must differ from stable")
    weights = [s.weight for s in spec.steps]
    for k in range(1, len(weights)):
        if weights[k] <= weights[k - 1]:
            yield error(f"spec.steps[{k}].weight", "step weights must strictly increase")
    if spec.abort and spec.promote:
        yield error("spec.promote", "abort and promote cannot both be set")
    if spec.stickiness and (spec.stickiness.header is None) == (spec.stickiness.metadata is None):
        yield error("spec.stickiness", "set exactly one of header or metadata")


def _check_canary_route(canary: Canary, ns: NamespaceIndex) -> Iterator[CompileError]:
    spec, error = canary.spec, reporter(canary)
    if spec.candidate not in ns.endpoints:
        yield error(
            "spec.candidate", f"ModelEndpoint '{spec.candidate}' does not exist in namespace '{ns.name}'"
        )
    policy = ns.policies.get(spec.target.policy)
    if policy is None:
        yield error(
            "spec.target.policy",
            f"RoutingPolicy '{spec.target.policy}' does not exist in namespace '{ns.name}'",
        )
        return
    rule = next((r for r in policy.spec.rules if r.name == spec.target.rule), None)
    if rule is None:
        rules = ", ".join(r.name for r in policy.spec.rules)
        yield error(
            "spec.target.rule",
            f"rule '{spec.target.rule}' does not exist in RoutingPolicy '{policy.metadata.name}' ({rules})",
        )
        return
    targets = [t.endpoint for t in rule.targets]
    if spec.stable not in targets and spec.candidate not in targets:
        yield error(
            "spec.stable",
            f"ModelEndpoint '{spec.stable}' is not a target of rule '{rule.name}' in RoutingPolicy "
            f"'{policy.metadata.name}' (targets: {', '.join(targets)})",
        )
    if spec.candidate in ns.endpoints:
        yield from _check_candidate_residency(canary, policy, rule, ns.endpoints[spec.candidate])
    if spec.mirror is not None and rule.shadow is not None:
        index = policy.spec.rules.index(rule)
        yield error(
            "spec.mirror",
            f"rule '{rule.name}' of RoutingPolicy '{policy.metadata.name}' already mirrors to "
            f"'{rule.shadow.endpoint}' (spec.rules[{index}].shadow); a rule has one shadow, so remove "
            "one of the two",
        )
    if spec.mirror is not None and spec.stable in targets and spec.candidate in targets:
        yield error(
            "spec.mirror",
            f"candidate '{spec.candidate}' is already a target of rule '{rule.name}'; a mirror copies to an "
            "endpoint outside the rule's targets",
        )


def _check_candidate_residency(
    canary: Canary, policy: RoutingPolicy, rule: Rule, candidate: ModelEndpoint
) -> Iterator[CompileError]:
    for name in rule.match.data_classes:
        data_class = _data_class(policy, name)
        if data_class and not any(_satisfies(r, data_class) for r in candidate.spec.replicas):
            yield reporter(canary)(
                "spec.candidate",
                f"residency rules leave no possible replica of candidate '{candidate.metadata.name}' for "
                f"data class '{name}' that rule '{rule.name}' matches: none {_describe_class(data_class)}",
            )


def _check_unique_values(values: Sequence[str], field: str, error: Reporter) -> Iterator[CompileError]:
    """An error on every repeat of a value, at `field` formatted with the repeat's index."""
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if first.setdefault(value, i) != i:
            yield error(field.format(i), f"'{value}' is listed twice (first at index {first[value]})")
