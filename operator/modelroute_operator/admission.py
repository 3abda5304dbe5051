"""Admission decisions, pure: an AdmissionReview request (plus what the namespace holds) in, a verdict out.

Validation covers what the CRD schema and its CEL rules cannot see: references between objects and
residency rules that leave no endpoint. It compiles the namespace as it would be after the change with the
same compiler the operator runs, so the webhook and the operator never disagree, and it only refuses what
the change itself gets wrong:

- CREATE/UPDATE: the incoming object's own errors refuse it, except errors it already had before the
  update (a ratchet, so a label change on a broken object still goes through). Errors the change causes
  in *other* objects only warn: refusing them could deadlock a GitOps sync that updates both sides.
- DELETE: refused while other objects still use the object, naming them (`referenced_deletes=Warn` turns
  this into a warning; objects already being deleted do not count).

Mutation injects the router sidecar into pods: a native sidecar (a restartable init container, so it is up
before the app starts and does not keep Jobs alive), its config, admin token and credentials volumes, the
labels the operator discovers sidecars by, and `OPENAI_BASE_URL` in every app container.

Nothing here does I/O; `webhook_server` reads the namespace and serves HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelroute_contract import env, residency_violation
from modelroute_contract.admin import DEFAULT_ADMIN_PORT, INJECTED_DATA_PORT, TOKEN_KEY, TOKEN_SECRET
from modelroute_contract.constants import (
    ADMIN_PORT_ANNOTATION,
    CONFIG_KEY,
    CONFIGMAP_NAME,
    SIDECAR_LABEL,
    SIDECAR_LABEL_VALUE,
)

from .compiler import (
    CompileError,
    NamespaceObjects,
    Object,
    ObjectInvalid,
    compile_namespace,
    contract_class,
    parse_object,
)
from .resources import GROUP, KIND_BY_NAME, Canary, ModelEndpoint, RoutingPolicy

REVIEW_API_VERSION = "admission.k8s.io/v1"

INJECT_NAMESPACE_LABEL = f"{GROUP}/inject"
"""Namespace label: `enabled` injects the sidecar into every new pod, `disabled` into none."""
INJECT_POD_KEY = f"{GROUP}/inject"
"""Pod annotation (or label): `"true"` asks for the sidecar, `"false"` opts out of a namespace's injection
(`enabled`/`disabled` too, as for namespaces)."""
REGION_ANNOTATION = f"{GROUP}/region"
"""Pod annotation naming the region outright, for clusters whose pods cannot learn it from the node."""
TOPOLOGY_REGION_LABEL = "topology.kubernetes.io/region"
SIDECAR_NAME = "modelroute-router"
CONFIG_DIR = "/etc/modelroute/config"
ADMIN_DIR = "/etc/modelroute/admin"
SECRETS_DIR = "/etc/modelroute/secrets"
BASE_URL_ENV = "OPENAI_BASE_URL"

Body = Mapping[str, Any]
Patch = list[dict[str, Any]]


# ------------------------------------------------------------------------------------ reviews


class ReviewError(ValueError):
    """The request is not an AdmissionReview we can answer (the server replies 400)."""


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of an `admission.k8s.io/v1` AdmissionReview request the webhooks use."""

    uid: str
    kind: str
    operation: str
    namespace: str
    name: str
    object: Body | None
    old_object: Body | None
    dry_run: bool = False


@dataclass(frozen=True)
class Verdict:
    """The answer to one request; `patch` is a JSONPatch (only mutations have one)."""

    allowed: bool
    message: str = ""
    code: int = 200
    reason: str = ""
    warnings: tuple[str, ...] = ()
    patch: Patch | None = None


def parse_review(body: Any) -> AdmissionRequest:
    """The request inside an AdmissionReview body; ReviewError saying what is missing otherwise."""
    if not isinstance(body, Mapping) or body.get("kind") != "AdmissionReview":
        raise ReviewError("expected an AdmissionReview object")
    if body.get("apiVersion") != REVIEW_API_VERSION:
        raise ReviewError(f"only {REVIEW_API_VERSION} AdmissionReviews are supported")
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise ReviewError("AdmissionReview has no request")
    uid, kind, operation = request.get("uid"), request.get("kind"), request.get("operation")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    if not isinstance(kind, Mapping) or not isinstance(kind.get("kind"), str):
        raise ReviewError("request.kind.kind is missing")
    if not isinstance(operation, str):
        raise ReviewError("request.operation is missing")
    return AdmissionRequest(
        uid=uid,
        kind=kind["kind"],
        operation=operation,
        namespace=str(request.get("namespace") or ""),
        name=str(request.get("name") or ""),
        object=_mapping_or_none(request.get("object"), "request.object"),
        old_object=_mapping_or_none(request.get("oldObject"), "request.oldObject"),
        dry_run=bool(request.get("dryRun")),
    )


def _mapping_or_none(value: Any, where: str) -> Body | None:
    if value is None or isinstance(value, Mapping):
        return value
    raise ReviewError(f"{where} must be an object")


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview the API server expects back."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": verdict.code,
            "message": verdict.message,
            **({"reason": verdict.reason} if verdict.reason else {}),
        }
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    if verdict.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(verdict.patch).encode()).decode()
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}


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


ObjectKey = tuple[str, str]
"""(kind, name) of one of our objects."""


def validate(
    request: AdmissionRequest,
    namespace_objects: Sequence[Body],
    settings: ValidationSettings = ValidationSettings(),
) -> Verdict:
    """Allow or refuse a change to a ModelEndpoint, RoutingPolicy or Canary.

    `namespace_objects` holds the namespace's objects of our three kinds as stored now (before the change).
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
    before = _namespace_errors(request.namespace, [*current, old] if old is not None else current)
    after = _namespace_errors(request.namespace, [*current, incoming])
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
    ]
    return Verdict(allowed=True, warnings=_bounded(warnings))


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
    broken = sorted(
        _namespace_errors(request.namespace, remaining) - _namespace_errors(request.namespace, current),
        key=_error_order,
    )
    if not broken:
        return Verdict(allowed=True)
    users = ", ".join(dict.fromkeys(f"{e.kind}/{e.name}" for e in broken))
    summary = f"{key[0]} '{key[1]}' is still used by {users}"
    details = "; ".join(str(e) for e in broken)
    if settings.referenced_deletes is Enforcement.WARN:
        note = "they are invalid until changed; the operator keeps the namespace on its last good config"
        return Verdict(allowed=True, warnings=_bounded([f"{summary}: {note}", *map(str, broken)]))
    return Verdict(
        allowed=False,
        code=409,
        reason="Conflict",
        message=f"{summary}; change or delete them first: {details}",
    )


def _namespace_errors(namespace: str, bodies: Iterable[Body]) -> frozenset[CompileError]:
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
    )
    return frozenset(errors | set(compile_namespace(objects).errors))


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
                served.update(dict.fromkeys(_strings(_spec(other).get("virtualModels")), _key_of(other)[1]))
        had = set(_strings(_spec(old).get("virtualModels"))) if old is not None else set()
        for j, model in enumerate(_strings(_spec(incoming).get("virtualModels"))):
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
    target = _spec(body).get("target")
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


MAX_WARNINGS = 10
WARNING_LENGTH = 256
"""The API server may truncate longer warnings or drop extra ones; shorten them here, where we choose how."""


def _bounded(warnings: Sequence[str]) -> tuple[str, ...]:
    unique = list(dict.fromkeys(warnings))
    shown = [
        w if len(w) <= WARNING_LENGTH else w[: WARNING_LENGTH - 3] + "..." for w in unique[:MAX_WARNINGS]
    ]
    if len(unique) > MAX_WARNINGS:
        shown[-1] = f"... and {len(unique) - MAX_WARNINGS + 1} more warnings"
    return tuple(shown)


def _key_of(body: Body) -> ObjectKey:
    return (str(body.get("kind", "")), _name_of(body))


def _name_of(body: Body) -> str:
    metadata = body.get("metadata")
    return str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""


def _being_deleted(body: Body) -> bool:
    metadata = body.get("metadata")
    return isinstance(metadata, Mapping) and bool(metadata.get("deletionTimestamp"))


def _spec(body: Body | None) -> Mapping[str, Any]:
    spec = body.get("spec") if body is not None else None
    return spec if isinstance(spec, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


# ------------------------------------------------------------------------------------ mutation


DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    # No CPU limit: CFS throttling adds latency to every proxied request; the request reserves the share.
    "limits": {"memory": "256Mi"},
}


@dataclass(frozen=True)
class InjectionSettings:
    """How the sidecar is injected; one value per cluster (Helm values / operator flags)."""

    image: str
    proxy_port: int = INJECTED_DATA_PORT
    """Where the app reaches the router (loopback only). 15080 rather than the sidecar's default 8080,
    which apps use all the time."""
    admin_port: int = DEFAULT_ADMIN_PORT
    """Config pushes and stats from the operator, on the pod IP."""
    admin_port_name: str = "mr-admin"
    """Name of the admin container port (a PodMonitor selects it; at most 15 characters)."""
    region: str = ""
    """The cluster's region for every pod, when the whole cluster runs in one region; empty reads the
    pod's `region_label` label."""
    region_label: str = TOPOLOGY_REGION_LABEL
    """Pod label holding the region. The downward API cannot read node labels; the PodTopologyLabels
    admission plugin (Kubernetes 1.33+, on by default from 1.35) copies the node's topology labels onto
    the pod at binding, before containers start, so the env reads them."""
    workers: int = 1
    """Data-plane processes per sidecar (MODELROUTE_WORKERS)."""
    log_level: str = "INFO"
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    run_as_user: int = 65532
    """Non-root uid; explicit so `runAsNonRoot` holds whatever USER the image declares."""
    native_sidecar: bool = True
    """A restartable init container (Kubernetes 1.29+): up before the app, gone when a Job's app ends.
    False injects an ordinary container for older clusters."""
    upstream_proxy: Mapping[str, str] = field(default_factory=dict)
    """`HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` for the sidecar's upstream calls (values are env
    values in the pod spec: a proxy password there is readable by whoever reads pods)."""


def mutate_pod(
    request: AdmissionRequest,
    settings: InjectionSettings,
    namespace_injection: bool,
    credential_secrets: Sequence[str] = (),
) -> Verdict:
    """Allow a pod CREATE, with a JSONPatch injecting the sidecar when it asks for one."""
    pod = request.object
    if request.kind != "Pod" or request.operation != "CREATE" or pod is None:
        return Verdict(allowed=True)
    if not wants_sidecar(pod, namespace_injection):
        return Verdict(allowed=True)
    return Verdict(
        allowed=True,
        patch=injection_patch(pod, settings, credential_secrets),
        warnings=_bounded(list(_port_clashes(pod, settings))),
    )


def wants_sidecar(pod: Body, namespace_injection: bool) -> bool:
    """Whether to inject: the pod's own choice first, then its namespace's; never twice."""
    if is_injected(pod):
        return False
    metadata = pod.get("metadata") or {}
    choice = (metadata.get("annotations") or {}).get(INJECT_POD_KEY) or (metadata.get("labels") or {}).get(
        INJECT_POD_KEY
    )
    if choice in ("false", "disabled"):
        return False
    if choice in ("true", "enabled"):
        return True
    # A host-network pod shares the node's ports: a second one on the node could not bind the router.
    return namespace_injection and not (pod.get("spec") or {}).get("hostNetwork")


def is_injected(pod: Body) -> bool:
    """Whether the pod already carries the router (injected earlier, or added by hand)."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(c.get("name") == SIDECAR_NAME for c in containers)


def credential_secrets(endpoints: Iterable[Body]) -> tuple[str, ...]:
    """Names of the Secrets the namespace's ModelEndpoints take upstream credentials and TLS material
    (`tls.caBundle`, `tls.clientCertificate`) from, sorted; each is mounted into the sidecar."""
    names = set()
    for endpoint in endpoints:
        spec = _spec(endpoint)
        tls = spec.get("tls")
        refs = [spec.get("credentials")]
        if isinstance(tls, Mapping):
            refs += [tls.get("caBundle"), tls.get("clientCertificate")]
        for ref in refs:
            if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
                names.add(ref["name"])
    return tuple(sorted(names))


def injection_patch(pod: Body, settings: InjectionSettings, secrets: Sequence[str] = ()) -> Patch:
    """The JSONPatch that adds the sidecar, its volumes, discovery metadata and the apps' base URL."""
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    patch: Patch = []
    patch += _add_entries(metadata, "labels", ("metadata", "labels"), {SIDECAR_LABEL: SIDECAR_LABEL_VALUE})
    patch += _add_entries(
        metadata,
        "annotations",
        ("metadata", "annotations"),
        {ADMIN_PORT_ANNOTATION: str(settings.admin_port)},
    )
    patch += _add_items(spec, "volumes", ("spec", "volumes"), sidecar_volumes(secrets), front=False)
    container = sidecar_container(settings, secrets, _explicit_region(metadata))
    if settings.native_sidecar:
        # First, so init containers after it (and the app) start with the router already listening.
        patch += _add_items(spec, "initContainers", ("spec", "initContainers"), [container], front=True)
    else:
        patch += _add_items(spec, "containers", ("spec", "containers"), [container], front=False)
    base_url = {"name": BASE_URL_ENV, "value": f"http://127.0.0.1:{settings.proxy_port}/v1"}
    for i, app in enumerate(spec.get("containers") or []):
        if not any(e.get("name") == BASE_URL_ENV for e in app.get("env") or []):
            patch += _add_items(app, "env", ("spec", "containers", str(i), "env"), [base_url], front=False)
    return patch


def _explicit_region(metadata: Body) -> str:
    return str((metadata.get("annotations") or {}).get(REGION_ANNOTATION) or "")


def sidecar_container(
    settings: InjectionSettings, secrets: Sequence[str] = (), region: str = ""
) -> dict[str, Any]:
    """The router container; `region` (from the pod's annotation) wins over the settings and the node."""
    admin_probe = {"httpGet": {"path": "/healthz", "port": settings.admin_port_name}}
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": _sidecar_env(settings, region or settings.region),
        "ports": [
            {"name": "mr-proxy", "containerPort": settings.proxy_port, "protocol": "TCP"},
            {"name": settings.admin_port_name, "containerPort": settings.admin_port, "protocol": "TCP"},
        ],
        # The proxy listens on loopback only (no other pod may spend this pod's credentials), where the
        # kubelet cannot probe; the admin port on the pod IP answers for the process. Readiness does not
        # wait for a config: the operator pushes configs to Ready sidecars only.
        "readinessProbe": {**admin_probe, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**admin_probe, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {k: dict(v) for k, v in settings.resources.items()},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "modelroute-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "modelroute-admin", "mountPath": ADMIN_DIR, "readOnly": True},
            {"name": "modelroute-tmp", "mountPath": "/tmp"},
            *(
                {"name": secret_volume_name(s), "mountPath": f"{SECRETS_DIR}/{s}", "readOnly": True}
                for s in secrets
            ),
        ],
    }
    if settings.native_sidecar:
        container["restartPolicy"] = "Always"
    return container


def _sidecar_env(settings: InjectionSettings, region: str) -> list[dict[str, Any]]:
    def field_ref(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    region_env: dict[str, Any] = (
        {"name": env.REGION, "value": region}
        if region
        else {
            "name": env.REGION,
            "valueFrom": field_ref(f"metadata.labels['{settings.region_label}']"),
        }
    )
    return [
        {"name": env.HOST, "value": "127.0.0.1"},
        {"name": env.PORT, "value": str(settings.proxy_port)},
        {"name": env.ADMIN_HOST, "value": "0.0.0.0"},
        {"name": env.ADMIN_PORT, "value": str(settings.admin_port)},
        {"name": env.CONFIG_FILE, "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": env.ADMIN_TOKEN_FILE, "value": f"{ADMIN_DIR}/{TOKEN_KEY}"},
        {"name": env.SECRETS_DIR, "value": SECRETS_DIR},
        {"name": env.NAMESPACE, "valueFrom": field_ref("metadata.namespace")},
        {"name": env.POD_NAME, "valueFrom": field_ref("metadata.name")},
        region_env,
        {"name": env.WORKERS, "value": str(settings.workers)},
        {"name": env.LOG_LEVEL, "value": settings.log_level},
        *({"name": name, "value": value} for name, value in sorted(settings.upstream_proxy.items()) if value),
    ]


def sidecar_volumes(secrets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The sidecar's volumes; all optional, so pods start before the operator wrote the first config."""
    return [
        {
            "name": "modelroute-config",
            "configMap": {
                "name": CONFIGMAP_NAME,
                "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}],
                "optional": True,
            },
        },
        {
            "name": "modelroute-admin",
            "secret": {
                "secretName": TOKEN_SECRET,
                "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                "optional": True,
            },
        },
        {"name": "modelroute-tmp", "emptyDir": {"sizeLimit": "16Mi"}},
        *({"name": secret_volume_name(s), "secret": {"secretName": s, "optional": True}} for s in secrets),
    ]


def secret_volume_name(secret: str) -> str:
    """A volume name for a credentials Secret: Secret names may hold dots and run to 253 characters,
    volume names are DNS labels of at most 63."""
    return f"modelroute-secret-{hashlib.sha256(secret.encode()).hexdigest()[:10]}"


def _port_clashes(pod: Body, settings: InjectionSettings) -> Iterator[str]:
    ours = {settings.proxy_port: "proxy", settings.admin_port: "admin"}
    spec = pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("containerPort") in ours:
                number = port["containerPort"]
                yield (
                    f"container '{container.get('name')}' declares port {number}, which the modelroute "
                    f"sidecar's {ours[number]} port uses: one of them will fail to listen"
                )


def _add_entries(parent: Body, key: str, path: Sequence[str], entries: Mapping[str, str]) -> Patch:
    """Set map entries, creating the map when the object has none."""
    if not parent.get(key):
        return [{"op": "add", "path": pointer(*path), "value": dict(entries)}]
    return [{"op": "add", "path": pointer(*path, k), "value": v} for k, v in entries.items()]


def _add_items(parent: Body, key: str, path: Sequence[str], items: Sequence[Any], front: bool) -> Patch:
    """Add list items at the front or the end, creating the list when the object has none.

    Inserting at the front one by one in reverse keeps the items' order.
    """
    if not parent.get(key):
        return [{"op": "add", "path": pointer(*path), "value": list(items)}]
    if front:
        return [{"op": "add", "path": pointer(*path, "0"), "value": item} for item in reversed(items)]
    return [{"op": "add", "path": pointer(*path, "-"), "value": item} for item in items]


def pointer(*parts: str) -> str:
    """A JSON Pointer (RFC 6901): `~` and `/` inside a part are escaped as `~0` and `~1`."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)
