"""Admission validation, pure: an AdmissionReview request (plus what the namespace holds) in, a verdict out.

Validation covers what the CRD schema and its CEL rules cannot see: references between objects and
residency rules that leave no endpoint. It compiles the namespace as it would be after the change with the
same compiler the operator runs, so the webhook and the operator never disagree, and it only refuses what
the change itself gets wrong:

- CREATE/UPDATE: the incoming object's own errors refuse it, except errors it already had before the
  update (a ratchet, so a label change on a broken object still goes through). Errors the change causes
  in *other* objects only warn: refusing them could deadlock a GitOps sync that updates both sides.
- DELETE: refused while other objects still use the object, naming them (`referenced_deletes=Warn` turns
  this into a warning; objects already being deleted do not count).

Sidecar injection into pods is `injection`; nothing here does I/O (`runtime.webhook_server` reads the
namespace and serves HTTP).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from modelroute_contract import residency_violation
from modelroute_operator.logic.compiler import (
    CompileError,
    NamespaceObjects,
    Object,
    ObjectInvalid,
    compile_namespace,
    contract_class,
    parse_object,
)
from modelroute_operator.logic.learned import ConfigMaps
from modelroute_operator.logic.resources import KIND_BY_NAME, Canary, ModelEndpoint, RoutingPolicy

from .review import AdmissionRequest, Body, Verdict, bounded, spec_of

# ---------------------------------------------------------------------------------- validation


class Enforcement(StrEnum):
    """What a check does when it fails."""

    REFUSE = "Refuse"
    WARN = "Warn"


@dataclass(frozen=True)
class ValidationSettings:
    """Knobs for the checks that can clash with how GitOps tools order their work."""

    missing_references: Enforcement = Enforcement.REFUSE
    """An object naming an object that does not exist (yet). `Warn` suits tools that apply a folder in
    arbitrary order, e.g. `canary.yaml` before the `policy.yaml` it refers to."""
    referenced_deletes: Enforcement = Enforcement.REFUSE
    """Deleting an object others still use. `Warn` suits pruning GitOps tools that may delete an endpoint
    before the policy that used it (the operator then keeps the last good config)."""
    sidecar_ports: tuple[int, ...] = ()
    """Ports the injected sidecars listen on (the data and admin ports configured for injection), so a
    replica URL at one of them is refused here as in the reconciler; the contract's defaults always are."""


ObjectKey = tuple[str, str]
"""(kind, name) of one of our objects."""


def validate(
    request: AdmissionRequest,
    namespace_objects: Sequence[Body],
    settings: ValidationSettings = ValidationSettings(),
    config_maps: ConfigMaps | None = None,
) -> Verdict:
    """Allow or refuse a change to a ModelEndpoint, RoutingPolicy or Canary.

    `namespace_objects` holds the namespace's objects of our three kinds as stored now (before the change);
    `config_maps` the data of the ConfigMaps policies name (difficulty model heads), before and after.
    """
    if request.kind not in KIND_BY_NAME:
        return Verdict(allowed=True)  # not ours: a configuration routing more kinds here must not block them
    if request.operation == "DELETE":
        return _validate_delete(request, namespace_objects, settings)
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return Verdict(allowed=True)
    incoming = request.object
    key = (request.kind, _name_of(incoming) or request.name)
    old = request.old_object if request.operation == "UPDATE" else None
    current = [b for b in namespace_objects if not _being_deleted(b) and _key_of(b) != key]
    ports = settings.sidecar_ports
    maps = config_maps or {}
    stored = [*current, old] if old is not None else current
    before = _namespace_errors(request.namespace, stored, ports, maps)
    after = _namespace_errors(request.namespace, [*current, incoming], ports, maps)
    own = {e for e in after if (e.kind, e.name) == key} | set(_claim_errors(incoming, old, current))
    had = {e for e in before if (e.kind, e.name) == key}
    blocking, demoted = _split_blocking(sorted(own - had, key=_error_order), settings)
    if blocking:
        return _refusal(key, blocking)
    broken = sorted((e for e in after - before if (e.kind, e.name) != key), key=_error_order)
    warnings = [
        *(f"{_field_message(e)} (accepted: {MISSING_REFERENCE_NOTE})" for e in demoted),
        *(f"still invalid: {_field_message(e)}" for e in sorted(own & had, key=_error_order)),
        *(f"this change breaks {e}" for e in broken),
        *_residency_warnings(incoming, [*current, incoming]),
        *_shadow_warnings(incoming, [*current, incoming]),
    ]
    return Verdict(allowed=True, warnings=bounded(warnings))


def _refusal(key: ObjectKey, errors: Sequence[CompileError]) -> Verdict:
    message = f"{key[0]} '{key[1]}' is invalid: " + "; ".join(_field_message(e) for e in errors)
    if any(is_missing_reference(e) for e in errors):
        # `kubectl apply -f dir/` goes in file-name order, which need not be the order objects refer in.
        message += " (apply the objects it refers to first)"
    return Verdict(allowed=False, code=422, reason="Invalid", message=message)


def _validate_delete(
    request: AdmissionRequest, namespace_objects: Sequence[Body], settings: ValidationSettings
) -> Verdict:
    key = (request.kind, request.name)
    current = [b for b in namespace_objects if not _being_deleted(b)]
    remaining = [b for b in current if _key_of(b) != key]
    ports = settings.sidecar_ports
    broken = sorted(
        _namespace_errors(request.namespace, remaining, ports)
        - _namespace_errors(request.namespace, current, ports),
        key=_error_order,
    )
    if not broken:
        return Verdict(allowed=True)
    users = ", ".join(dict.fromkeys(f"{e.kind}/{e.name}" for e in broken))
    summary = f"{key[0]} '{key[1]}' is still used by {users}"
    details = "; ".join(str(e) for e in broken)
    if settings.referenced_deletes is Enforcement.WARN:
        note = "they are invalid until changed; the operator keeps the namespace on its last good config"
        return Verdict(allowed=True, warnings=bounded([f"{summary}: {note}", *map(str, broken)]))
    return Verdict(
        allowed=False,
        code=409,
        reason="Conflict",
        message=f"{summary}; change or delete them first: {details}",
    )


def _namespace_errors(
    namespace: str,
    bodies: Iterable[Body],
    sidecar_ports: Sequence[int] = (),
    config_maps: ConfigMaps | None = None,
) -> frozenset[CompileError]:
    """Every error of a namespace made of `bodies`, including objects that do not even parse."""
    parsed: list[Object] = []
    errors: set[CompileError] = set()
    for body in bodies:
        try:
            parsed.append(parse_object(body))
        except ObjectInvalid as exc:
            errors.update(exc.errors)
    objects = NamespaceObjects(
        namespace,
        [o for o in parsed if isinstance(o, ModelEndpoint)],
        [o for o in parsed if isinstance(o, RoutingPolicy)],
        [o for o in parsed if isinstance(o, Canary)],
        config_maps or {},
    )
    return frozenset(errors | set(compile_namespace(objects, sidecar_ports=sidecar_ports).errors))


def _claim_errors(incoming: Body, old: Body | None, current: Sequence[Body]) -> Iterator[CompileError]:
    """A virtual model or canary route the incoming object takes from another object.

    The compiler pins such a clash on whichever object sorts later by name; admission knows which one is
    the newcomer, so the newcomer is refused. Only claims this change adds are checked, so the rightful
    owner can still be edited while a clash exists.
    """
    kind, name = _key_of(incoming)
    if kind == "RoutingPolicy":
        served: dict[str, str] = {}
        for other in current:
            if _key_of(other)[0] == "RoutingPolicy":
                served.update(dict.fromkeys(_strings(spec_of(other).get("virtualModels")), _key_of(other)[1]))
        had = set(_strings(spec_of(old).get("virtualModels"))) if old is not None else set()
        for j, model in enumerate(_strings(spec_of(incoming).get("virtualModels"))):
            if model in served and model not in had:
                message = f"virtual model '{model}' is already served by RoutingPolicy '{served[model]}'"
                yield CompileError(kind, name, f"spec.virtualModels[{j}]", message)
    elif kind == "Canary":
        route = _canary_route(incoming)
        if old is not None and _canary_route(old) == route:
            return
        for other in current:
            owner = _key_of(other)
            if owner[0] == "Canary" and _canary_route(other) == route:
                message = f"rule '{route[1]}' of RoutingPolicy '{route[0]}' already has Canary '{owner[1]}'"
                yield CompileError(kind, name, "spec.target.rule", message)


def _canary_route(body: Body) -> tuple[str, str]:
    target = spec_of(body).get("target")
    target = target if isinstance(target, Mapping) else {}
    return (str(target.get("policy", "")), str(target.get("rule", "")))


def _split_blocking(
    errors: Sequence[CompileError], settings: ValidationSettings
) -> tuple[list[CompileError], list[CompileError]]:
    """(errors that refuse, errors demoted to warnings by the settings)."""
    if settings.missing_references is Enforcement.REFUSE:
        return list(errors), []
    return (
        [e for e in errors if not is_missing_reference(e)],
        [e for e in errors if is_missing_reference(e)],
    )


def is_missing_reference(error: CompileError) -> bool:
    """Whether the error only says a referenced object (or a referenced policy's rule) does not exist.

    Matches the compiler's wording; tests/unit/test_admission.py keeps the two in step.
    """
    return " does not exist in namespace " in error.message or (
        error.kind == "Canary" and " does not exist in RoutingPolicy " in error.message
    )


MISSING_REFERENCE_NOTE = "the operator keeps the namespace on its last good config until it resolves"


def _residency_warnings(incoming: Body, bodies: Sequence[Body]) -> Iterator[str]:
    """Data classes of a policy that no replica it can route to satisfies: their requests all fail closed.

    The compiler already refuses this for rules that match the class explicitly; a class only carried by
    headers or detectors is caught here, as a warning (it may be intended, e.g. to block a class outright).
    """
    policy = next(_parse_quietly([incoming]), None)
    if not isinstance(policy, RoutingPolicy):
        return
    endpoints = {o.metadata.name: o for o in _parse_quietly(bodies) if isinstance(o, ModelEndpoint)}
    names = {t.endpoint for rule in policy.spec.rules for t in rule.targets}
    if not names or not names <= endpoints.keys():
        return  # missing endpoints are reported as errors of their own
    replicas = [r for n in sorted(names) for r in endpoints[n].spec.replicas]
    for i, data_class in enumerate(policy.spec.residency.data_classes):
        rule = contract_class(data_class)
        if not any(residency_violation(r.region, r.compliance, [rule]) is None for r in replicas):
            yield (
                f"spec.residency.dataClasses[{i}]: no replica of the endpoints this policy targets satisfies "
                f"data class '{data_class.name}'; its requests will always be refused"
            )


def _shadow_warnings(incoming: Body, bodies: Sequence[Body]) -> Iterator[str]:
    """Data classes a rule's shadow endpoint may never take: those requests are never mirrored (each is
    skipped as `residency`), which may be intended, but leaves the comparison without them."""
    policy = next(_parse_quietly([incoming]), None)
    if not isinstance(policy, RoutingPolicy):
        return
    endpoints = {o.metadata.name: o for o in _parse_quietly(bodies) if isinstance(o, ModelEndpoint)}
    for i, rule in enumerate(policy.spec.rules):
        shadow = endpoints.get(rule.shadow.endpoint) if rule.shadow is not None else None
        if shadow is None:
            continue  # no shadow, or a missing endpoint (reported as an error of its own)
        for data_class in policy.spec.residency.data_classes:
            contract_rule = contract_class(data_class)
            if not any(
                residency_violation(r.region, r.compliance, [contract_rule]) is None
                for r in shadow.spec.replicas
            ):
                yield (
                    f"spec.rules[{i}].shadow: no replica of ModelEndpoint '{shadow.metadata.name}' satisfies "
                    f"data class '{data_class.name}'; its requests are never mirrored"
                )


def _parse_quietly(bodies: Iterable[Body]) -> Iterator[Object]:
    for body in bodies:
        try:
            yield parse_object(body)
        except ObjectInvalid:
            continue


def _field_message(error: CompileError) -> str:
    return f"{error.field}: {error.message}" if error.field else error.message


def _error_order(error: CompileError) -> tuple[str, str, str, str]:
    return (error.kind, error.name, error.field, error.message)


def _key_of(body: Body) -> ObjectKey:
    return (str(body.get("kind", "")), _name_of(body))


def _name_of(body: Body) -> str:
    metadata = body.get("metadata")
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


def _being_deleted(body: Body) -> bool:
    metadata = body.get("metadata")
    return isinstance(metadata, Mapping) and bool(metadata.get("deletionTimestamp"))


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
