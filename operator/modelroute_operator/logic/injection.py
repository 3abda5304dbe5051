"""Sidecar injection, pure: the JSONPatch that adds the router to a pod.

The router is a native sidecar (a restartable init container, so it is up before the app starts and does
not keep Jobs alive), with its config, admin token and credentials volumes, the labels the operator
discovers sidecars by, and `OPENAI_BASE_URL` in every app container. Its environment variables are the
contract's (`modelroute_contract.env`), which the sidecar's settings read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelroute_contract import env
from modelroute_contract.admin import DEFAULT_ADMIN_PORT, INJECTED_DATA_PORT, TOKEN_KEY, TOKEN_SECRET
from modelroute_contract.constants import (
    ADMIN_PORT_ANNOTATION,
    CONFIGMAP_NAME,
    SIDECAR_LABEL,
    SIDECAR_LABEL_VALUE,
)
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS, config_key
from modelroute_operator.logic.resources import GROUP

from .review import AdmissionRequest, Body, Patch, Verdict, bounded, spec_of

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


# ------------------------------------------------------------------------------------ mutation


DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    # No CPU limit: CFS throttling adds latency to every proxied request; the request reserves the share.
    "limits": {"memory": "256Mi"},
}


FLEET_STORE_DIR = "/etc/modelroute/fleet-store"
FLEET_STORE_VOLUME = "modelroute-fleet-store"
FLEET_STORE_CA_VOLUME = "modelroute-fleet-store-ca"


@dataclass(frozen=True)
class FleetStoreSettings:
    """The fleet store as injected sidecars reach it. Secrets by reference only: the password and CA are
    keys of Secrets in each application namespace, mounted as files (never env values in the pod spec)."""

    url: str
    """`redis://host:port/db` or `rediss://` (TLS); without user-info."""
    username: str = ""
    password_secret: str = ""
    """Secret (in the pod's namespace) holding the password; empty for a store without one."""
    password_key: str = "password"
    ca_secret: str = ""
    """Secret holding the PEM CA bundle of a `rediss://` store; empty uses the system trust."""
    ca_key: str = "ca.crt"


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
    log_format: str = "text"
    """The sidecar's log lines: `text` or `json`."""
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    run_as_user: int = 65532
    """Non-root uid; explicit so `runAsNonRoot` holds whatever USER the image declares."""
    native_sidecar: bool = True
    """A restartable init container (Kubernetes 1.29+): up before the app, gone when a Job's app ends.
    False injects an ordinary container for older clusters."""
    fleet_store: FleetStoreSettings | None = None
    """Where the sidecars' fleet store (Redis/Valkey) is, for policies with `fleetLimits`."""
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
        warnings=bounded(list(_port_clashes(pod, settings))),
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
        spec = spec_of(endpoint)
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
    volumes = sidecar_volumes(secrets, settings.fleet_store)
    patch += _add_items(spec, "volumes", ("spec", "volumes"), volumes, front=False)
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
            *_fleet_store_mounts(settings.fleet_store),
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
        # the directory: the sidecar reads the newest schema's key it accepts (configstore.config_document)
        {"name": env.CONFIG_FILE, "value": CONFIG_DIR},
        {"name": env.ADMIN_TOKEN_FILE, "value": f"{ADMIN_DIR}/{TOKEN_KEY}"},
        {"name": env.SECRETS_DIR, "value": SECRETS_DIR},
        {"name": env.NAMESPACE, "valueFrom": field_ref("metadata.namespace")},
        {"name": env.POD_NAME, "valueFrom": field_ref("metadata.name")},
        region_env,
        {"name": env.WORKERS, "value": str(settings.workers)},
        {"name": env.LOG_LEVEL, "value": settings.log_level},
        {"name": env.LOG_FORMAT, "value": settings.log_format},
        *({"name": name, "value": value} for name, value in sorted(settings.upstream_proxy.items()) if value),
        *_fleet_store_env(settings.fleet_store),
    ]


def _fleet_store_env(store: FleetStoreSettings | None) -> list[dict[str, Any]]:
    if store is None:
        return []
    out: list[dict[str, Any]] = [{"name": env.FLEET_STORE_URL, "value": store.url}]
    if store.username:
        out.append({"name": env.FLEET_STORE_USERNAME, "value": store.username})
    if store.password_secret:
        out.append(
            {"name": env.FLEET_STORE_PASSWORD_FILE, "value": f"{FLEET_STORE_DIR}/{store.password_key}"}
        )
    if store.ca_secret:
        out.append({"name": env.FLEET_STORE_CA_FILE, "value": f"{FLEET_STORE_DIR}-ca/{store.ca_key}"})
    return out


def _fleet_store_volumes(store: FleetStoreSettings | None) -> list[dict[str, Any]]:
    # optional: a pod starts without them; its fleet-limited policies then apply their fail mode
    if store is None:
        return []
    out = []
    for volume, secret, key in (
        (FLEET_STORE_VOLUME, store.password_secret, store.password_key),
        (FLEET_STORE_CA_VOLUME, store.ca_secret, store.ca_key),
    ):
        if secret:
            items = [{"key": key, "path": key}]
            out.append({"name": volume, "secret": {"secretName": secret, "items": items, "optional": True}})
    return out


def _fleet_store_mounts(store: FleetStoreSettings | None) -> list[dict[str, Any]]:
    if store is None:
        return []
    out = []
    if store.password_secret:
        out.append({"name": FLEET_STORE_VOLUME, "mountPath": FLEET_STORE_DIR, "readOnly": True})
    if store.ca_secret:
        out.append({"name": FLEET_STORE_CA_VOLUME, "mountPath": f"{FLEET_STORE_DIR}-ca", "readOnly": True})
    return out


def sidecar_volumes(
    secrets: Sequence[str] = (), fleet_store: FleetStoreSettings | None = None
) -> list[dict[str, Any]]:
    """The sidecar's volumes; all optional, so pods start before the operator wrote the first config."""
    return [
        {
            "name": "modelroute-config",
            "configMap": {
                "name": CONFIGMAP_NAME,
                # one key per schema the injected sidecar reads; optional, so absent keys are fine
                "items": [{"key": k, "path": k} for k in map(config_key, ACCEPTED_SCHEMA_VERSIONS)],
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
        *_fleet_store_volumes(fleet_store),
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
