"""The compiler: one namespace's ModelEndpoints, RoutingPolicies and Canaries in, one sealed RouterConfig out.

Pure and deterministic: no I/O, no clock, no randomness, and the output does not depend on the order the
objects arrive in, so the same inputs always hash to the same `version` and the operator writes nothing.
Every problem in the namespace is collected with the object and field at fault; a single error means no
config at all (never a half config), and the operator keeps serving the last good one.

The API server enforces the CRD schema and its CEL rules, but manifests checked offline (`modelroute
validate`, `render`) never met it, so `parse_object` reports schema errors with field paths and the compiler
repeats the CEL invariants it relies on (unique names, non-zero weights, ...) with the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from pydantic_core import ErrorDetails

import modelroute_contract as contract
from modelroute_contract.constants import PUBLIC_CLASS
from modelroute_operator.resources import (
    API_VERSION,
    DNS_LABEL,
    DURATION,
    KIND_BY_NAME,
    MAX_NAME_LENGTH,
    Canary,
    CanaryPhase,
    DataClass,
    EndpointTls,
    IntRange,
    ModelEndpoint,
    Replica,
    RoutingPolicy,
    Rule,
    seconds,
)
from modelroute_sidecar.engine import detectors

"""The data class of requests that carry no restricted data; always valid, never restricted."""

Object = ModelEndpoint | RoutingPolicy | Canary
_O = TypeVar("_O", ModelEndpoint, RoutingPolicy, Canary)


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class CompileError:
    """One problem, pinned to the object and field at fault."""

    kind: str
    """`ModelEndpoint`, `RoutingPolicy` or `Canary` (empty when the kind itself is unknown)."""
    name: str
    """Object name."""
    field: str
    """Path of the field at fault, e.g. `spec.rules[2].targets[0].endpoint`."""
    message: str
    """Why, in words a platform engineer acts on."""

    def __str__(self) -> str:
        subject = f"{self.kind}/{self.name}" if self.kind else self.name or "object"
        return f"{subject} {self.field}: {self.message}" if self.field else f"{subject}: {self.message}"


class ObjectInvalid(ValueError):  # noqa: N818 - the name the operator and CLI use
    """A body that does not parse into one of our kinds; `errors` names every field at fault."""

    def __init__(self, errors: Sequence[CompileError]):
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class NamespaceObjects:
    """Everything the compiler needs about one namespace (health is in the endpoints' status)."""

    namespace: str
    endpoints: Sequence[ModelEndpoint]
    policies: Sequence[RoutingPolicy]
    canaries: Sequence[Canary]


@dataclass(frozen=True)
class CompileResult:
    """A sealed config when the namespace is valid, else every error (and no config)."""

    config: contract.RouterConfig | None
    errors: tuple[CompileError, ...]

    def errors_for(self, kind: str, name: str) -> tuple[CompileError, ...]:
        """Errors of one object, for its status condition."""
        return tuple(e for e in self.errors if e.kind == kind and e.name == name)


# ------------------------------------------------------------------------------------------ parsing


def parse_object(body: Mapping[str, Any]) -> Object:
    """Turn a raw object (API server body or manifest document) into its model, or raise ObjectInvalid."""
    kind = body.get("kind")
    name = _body_name(body)
    if not isinstance(kind, str) or kind not in KIND_BY_NAME:
        known = ", ".join(KIND_BY_NAME)
        raise ObjectInvalid([CompileError("", name, "kind", f"kind must be one of {known} (got {kind!r})")])
    api_version = body.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        raise ObjectInvalid(
            [CompileError(kind, name, "apiVersion", f"must be {API_VERSION} (got {api_version!r})")]
        )
    try:
        return cast(Object, KIND_BY_NAME[kind].model_validate(body))
    except ValidationError as exc:
        raise ObjectInvalid([_schema_error(kind, name, d) for d in exc.errors()]) from None


def _body_name(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else ""


def _schema_error(kind: str, name: str, detail: ErrorDetails) -> CompileError:
    return CompileError(kind, name, format_path(detail["loc"]), _schema_message(detail))


def format_path(loc: Iterable[int | str]) -> str:
    """`("spec", "replicas", 0, "url")` -> `spec.replicas[0].url`, the way kubectl prints field paths."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


_PATTERN_HINTS = {
    DURATION: "is not a duration such as 500ms, 10s or 1m30s",
    DNS_LABEL: "is not a valid name (lower-case letters, digits and '-', starting and ending alphanumeric)",
}


def _schema_message(detail: ErrorDetails) -> str:
    # pydantic's wording is made for Python programmers; the few errors users hit most get plain words.
    kind, given = detail["type"], _short_repr(detail.get("input"))
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = str((detail.get("ctx") or {}).get("pattern", ""))
        if pattern in _PATTERN_HINTS:
            return f"{given} {_PATTERN_HINTS[pattern]}"
        if pattern.startswith("^https?://"):
            return f"{given} is not an http(s) URL"
    return f"{detail['msg']} (got {given})"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class PreviousConfig:
    """The namespace's stored config as far as ordering goes: the compiler's one input from the past."""

    sequence: int
    """Its sequence (0 for a config stored before sequences existed)."""
    version: str
    """Its content hash; empty when nothing is stored and `sequence` is only a floor to start above."""


def compile_namespace(
    objects: NamespaceObjects,
    previous: PreviousConfig | None = None,
    sidecar_ports: Sequence[int] = contract.SIDECAR_PORTS,
) -> CompileResult:
    """Check every object and cross-reference, then build and seal the RouterConfig if all is well.

    The config keeps `previous.sequence` when its content equals the previous config's (so the same
    inputs still hash to the same version), and takes the next number when it differs; without a
    previous config it is sequence 1. `sidecar_ports` are the ports injected sidecars listen on (replica
    URLs may not point there); the contract's defaults are always included, since a sidecar checks
    against those too.
    """
    ns = _Namespace.index(objects)
    ports = tuple(sorted({*contract.SIDECAR_PORTS, *sidecar_ports}))
    errors = sorted(
        set(
            [
                *_check_unique_names(objects),
                *(e for o in _all_objects(objects) for e in _check_name(o)),
                *(e for ep in ns.endpoints.values() for e in _check_endpoint(ep, ports)),
                *(e for p in ns.policies.values() for e in _check_policy(p, ns)),
                *_check_virtual_models(ns),
                *_check_canaries(ns),
            ]
        ),
        key=lambda e: (e.kind, e.name, e.field, e.message),
    )
    if errors:
        return CompileResult(config=None, errors=tuple(errors))
    return CompileResult(config=_sequenced(_build_config(ns), previous), errors=())


def _sequenced(config: contract.RouterConfig, previous: PreviousConfig | None) -> contract.RouterConfig:
    if previous is None:
        return config.model_copy(update={"sequence": 1}).seal()
    unchanged = config.model_copy(update={"sequence": previous.sequence}).seal()
    if unchanged.version == previous.version:
        return unchanged
    return config.model_copy(update={"sequence": previous.sequence + 1}).seal()


@dataclass(frozen=True)
class _Namespace:
    """The namespace's objects by name, each kind in name order (input order must not matter)."""

    name: str
    endpoints: dict[str, ModelEndpoint]
    policies: dict[str, RoutingPolicy]
    canaries: dict[str, Canary]

    @classmethod
    def index(cls, objects: NamespaceObjects) -> _Namespace:
        return cls(
            objects.namespace,
            _by_name(objects.endpoints),
            _by_name(objects.policies),
            _by_name(objects.canaries),
        )


def _by_name(items: Iterable[_O]) -> dict[str, _O]:
    # A duplicated name is already an error; keeping the first keeps the rest of the checks meaningful.
    by_name: dict[str, _O] = {}
    for item in sorted(items, key=lambda o: o.metadata.name):
        by_name.setdefault(item.metadata.name, item)
    return by_name


def _all_objects(objects: NamespaceObjects) -> Iterator[Object]:
    yield from objects.endpoints
    yield from objects.policies
    yield from objects.canaries


def _check_name(obj: Object) -> Iterator[CompileError]:
    """The CRDs' root CEL rule, repeated: references (`Name`) and headers carry at most a DNS label."""
    name = obj.metadata.name
    if len(name) > MAX_NAME_LENGTH or not re.match(DNS_LABEL, name):
        yield _reporter(obj)(
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
    spec, error = endpoint.spec, _reporter(endpoint)
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


def _check_secret_refs(endpoint: ModelEndpoint) -> Iterator[CompileError]:
    """Secret references the sidecar turns into file paths (`<secret>/<key>`), and TLS on https only."""
    spec, error = endpoint.spec, _reporter(endpoint)
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


def _build_endpoint(endpoint: ModelEndpoint) -> contract.EndpointConfig:
    spec = endpoint.spec
    health = {(r.name, r.region): contract.Health(r.health.value) for r in endpoint.status.replicas}
    credentials, caps = spec.credentials, spec.capabilities
    return contract.EndpointConfig(
        name=endpoint.metadata.name,
        model=spec.model,
        provider=spec.provider,
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


def _satisfies(replica: Replica, data_class: DataClass) -> bool:
    """Whether data of this class may be processed on this replica (the contract's one predicate)."""
    return (
        contract.residency_violation(replica.region, replica.compliance, [contract_class(data_class)]) is None
    )


def contract_class(data_class: DataClass) -> contract.DataClassRule:
    """A policy's data class as the contract rule the residency predicate reads."""
    return contract.DataClassRule(
        name=data_class.name,
        allowed_regions=tuple(sorted(set(data_class.allowed_regions))),
        required_compliance=tuple(sorted(set(data_class.required_compliance))),
    )


# ---------------------------------------------------------------------------------------- policies


_LINKS = {"fallbackTo": "fallback_to", "escalateTo": "escalate_to"}
"""Rule-to-rule links, by API field name: each is followed as a chain."""


def _check_policy(policy: RoutingPolicy, ns: _Namespace) -> Iterator[CompileError]:
    spec, error = policy.spec, _reporter(policy)
    yield from _check_unique_values(spec.virtual_models, "spec.virtualModels[{}]", error)
    yield from _check_unique_values([r.name for r in spec.rules], "spec.rules[{}].name", error)
    yield from _check_residency(policy)
    yield from _check_unique_values(spec.locality.failover_order, "spec.locality.failoverOrder[{}]", error)
    yield from _check_unique_values(
        [limit.tenant_tier or "" for limit in spec.tenant_limits], "spec.tenantLimits[{}].tenantTier", error
    )
    if seconds(spec.resilience.per_try_timeout) > seconds(spec.resilience.deadline):
        yield error("spec.resilience.perTryTimeout", "perTryTimeout must not exceed deadline")
    for i, rule in enumerate(spec.rules):
        yield from _check_rule(policy, i, rule, ns)
    for link in _LINKS:
        yield from _check_cycles(policy, link)


def _check_residency(policy: RoutingPolicy) -> Iterator[CompileError]:
    residency, error = policy.spec.residency, _reporter(policy)
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
        yield _reporter(policy)(field, f"data class '{name}' is not declared in spec.residency ({choices})")


def _check_rule(policy: RoutingPolicy, i: int, rule: Rule, ns: _Namespace) -> Iterator[CompileError]:
    yield from _check_targets(policy, f"spec.rules[{i}]", rule, ns)
    yield from _check_match(policy, f"spec.rules[{i}].match", rule, ns)
    rules = {r.name for r in policy.spec.rules}
    for link, attr in _LINKS.items():
        linked = getattr(rule, attr)
        if linked is not None and linked not in rules:
            yield _reporter(policy)(
                f"spec.rules[{i}].{link}", f"rule '{linked}' does not exist in this policy"
            )


def _check_targets(policy: RoutingPolicy, field: str, rule: Rule, ns: _Namespace) -> Iterator[CompileError]:
    error = _reporter(policy)
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


def _check_match(policy: RoutingPolicy, field: str, rule: Rule, ns: _Namespace) -> Iterator[CompileError]:
    match, error = rule.match, _reporter(policy)
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
    policy: RoutingPolicy, field: str, rule: Rule, class_name: str, ns: _Namespace
) -> Iterator[CompileError]:
    data_class = _data_class(policy, class_name)
    names = [t.endpoint for t in rule.targets] + list(_chain_endpoints(policy, rule, "fallbackTo"))
    if data_class is None or any(n not in ns.endpoints for n in names):
        return  # an unknown class or endpoint is reported on its own; a second error would only add noise
    if not any(_satisfies(r, data_class) for n in names for r in ns.endpoints[n].spec.replicas):
        yield _reporter(policy)(
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
        cycle = _follow(policy, rule, link)[1]
        # Every rule on the cycle sees it; report it once, on the cycle's first rule in policy order.
        if cycle and min(position[n] for n in cycle) == i and cycle[0] == rule.name:
            chain = " → ".join([*cycle, cycle[0]])
            yield _reporter(policy)(f"spec.rules[{i}].{link}", f"{link} chain forms a cycle: {chain}")


def _follow(policy: RoutingPolicy, start: Rule, link: str) -> tuple[list[Rule], list[str]]:
    """Rules reached from `start` along `link`, in chain order, and the cycle met on the way (if any)."""
    rules = {r.name: r for r in policy.spec.rules}
    path, rule = [start.name], start
    reached: list[Rule] = []
    while (nxt := getattr(rule, _LINKS[link])) is not None and nxt in rules:
        if nxt in path:
            return reached, path[path.index(nxt) :]
        rule = rules[nxt]
        path.append(rule.name)
        reached.append(rule)
    return reached, []


def _chain_endpoints(policy: RoutingPolicy, rule: Rule, link: str) -> tuple[str, ...]:
    """Endpoints of the rules down the chain: chain order, then weight desc and name; each once, none of
    the rule's own targets."""
    seen = {t.endpoint for t in rule.targets}
    names: list[str] = []
    for linked in _follow(policy, rule, link)[0]:
        for target in sorted(linked.targets, key=lambda t: (-t.weight, t.endpoint)):
            if target.endpoint not in seen:
                seen.add(target.endpoint)
                names.append(target.endpoint)
    return tuple(names)


def _check_virtual_models(ns: _Namespace) -> Iterator[CompileError]:
    served_by: dict[str, str] = {}
    for policy in ns.policies.values():
        for j, model in enumerate(policy.spec.virtual_models):
            owner = served_by.setdefault(model, policy.metadata.name)
            if owner != policy.metadata.name:
                yield _reporter(policy)(
                    f"spec.virtualModels[{j}]",
                    f"virtual model '{model}' is already served by RoutingPolicy '{owner}'",
                )


def _build_policy(policy: RoutingPolicy, splits: Mapping[str, contract.CanarySplit]) -> contract.PolicyConfig:
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
    )


def _build_rule(policy: RoutingPolicy, rule: Rule, split: contract.CanarySplit | None) -> contract.RuleConfig:
    match = rule.match
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
        ),
        targets=tuple(
            contract.Target(endpoint=t.endpoint, weight=t.weight)
            for t in sorted(rule.targets, key=lambda t: t.endpoint)
        ),
        fallback=_chain_endpoints(policy, rule, "fallbackTo"),
        escalation=_chain_endpoints(policy, rule, "escalateTo"),
        canary=split,
    )


def _build_range(value_range: IntRange | None) -> contract.RangeMatch | None:
    return contract.RangeMatch(min=value_range.min, max=value_range.max) if value_range else None


def _sorted_set(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


# ---------------------------------------------------------------------------------------- canaries


def _check_canaries(ns: _Namespace) -> Iterator[CompileError]:
    claimed: dict[tuple[str, str], str] = {}
    for canary in ns.canaries.values():
        yield from _check_canary(canary, ns)
        route = (canary.spec.target.policy, canary.spec.target.rule)
        owner = claimed.setdefault(route, canary.metadata.name)
        if owner != canary.metadata.name:
            yield _reporter(canary)(
                "spec.target.rule",
                f"rule '{route[1]}' of RoutingPolicy '{route[0]}' already has Canary '{owner}'",
            )


def _check_canary(canary: Canary, ns: _Namespace) -> Iterator[CompileError]:
    yield from _check_canary_spec(canary)
    yield from _check_canary_route(canary, ns)


def _check_canary_spec(canary: Canary) -> Iterator[CompileError]:
    spec, error = canary.spec, _reporter(canary)
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


def _check_canary_route(canary: Canary, ns: _Namespace) -> Iterator[CompileError]:
    spec, error = canary.spec, _reporter(canary)
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


def _check_candidate_residency(
    canary: Canary, policy: RoutingPolicy, rule: Rule, candidate: ModelEndpoint
) -> Iterator[CompileError]:
    for name in rule.match.data_classes:
        data_class = _data_class(policy, name)
        if data_class and not any(_satisfies(r, data_class) for r in candidate.spec.replicas):
            yield _reporter(canary)(
                "spec.candidate",
                f"residency rules leave no possible replica of candidate '{candidate.metadata.name}' for "
                f"data class '{name}' that rule '{rule.name}' matches: none {_describe_class(data_class)}",
            )


def _build_splits(ns: _Namespace) -> dict[tuple[str, str], contract.CanarySplit]:
    splits = {}
    for canary in ns.canaries.values():
        spec = canary.spec
        rule = next(r for r in ns.policies[spec.target.policy].spec.rules if r.name == spec.target.rule)
        # GitOps: once Git names the candidate instead of the stable, the canary has nothing left to split.
        if spec.stable in {t.endpoint for t in rule.targets}:
            splits[(spec.target.policy, spec.target.rule)] = _build_split(canary)
    return splits


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
    user's spec); a rolled-back one stays at 0; otherwise the controller's current weight holds.
    """
    phase = canary.status.phase
    if phase == CanaryPhase.PROMOTED:
        return 100
    if phase == CanaryPhase.ROLLED_BACK:
        return 0
    return canary.status.current_weight or 0


# ----------------------------------------------------------------------------------------- assembly


def _build_config(ns: _Namespace) -> contract.RouterConfig:
    splits = _build_splits(ns)
    return contract.RouterConfig(
        namespace=ns.name,
        endpoints=tuple(_build_endpoint(e) for e in ns.endpoints.values()),
        policies=tuple(
            _build_policy(p, {rule: s for (policy, rule), s in splits.items() if policy == name})
            for name, p in ns.policies.items()
        ),
    ).seal()


Reporter = Callable[[str, str], CompileError]


def _reporter(obj: Object) -> Reporter:
    """A function making errors about one object, so checks only say the field and the reason."""

    def report(field: str, message: str) -> CompileError:
        return CompileError(obj.kind, obj.metadata.name, field, message)

    return report


def _check_unique_values(values: Sequence[str], field: str, error: Reporter) -> Iterator[CompileError]:
    """An error on every repeat of a value, at `field` formatted with the repeat's index."""
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        if first.setdefault(value, i) != i:
            yield error(field.format(i), f"'{value}' is listed twice (first at index {first[value]})")
