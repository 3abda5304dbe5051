"""Pure: the `modelroute status` report, built from objects and pods as the API server returns them.

Like `istioctl proxy-status`: one row per sidecar pod (the config version the operator reports for it
and whether it runs it), one row per ModelEndpoint, RoutingPolicy and Canary with its health, and a
summary per namespace. Object health follows the same rules, with the same messages, as the Argo CD
health checks in `docs/argocd/health/` (a test runs both on the same objects), so the CLI and the Argo
CD UI never disagree.

A sidecar pod's sync is read from the RoutingPolicies' status (`sync`, `syncedVersion`,
`laggingPods`), which the operator writes for every policy of the namespace after each push round; a
figure counts only when its `syncedVersion` is the live version (the namespace's ConfigMap annotation).
A pod that is not Ready gets no pushes and does not count against the report; a pod the operator
reports lagging (or skewed: `skewedPods`), or whose state it has not reported yet, does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from modelroute_contract import short_version
from modelroute_contract.constants import CONFIG_VERSION_ANNOTATION

MAX_MESSAGE = 100
"""Longest message shown in a table cell (JSON output has the whole message)."""


class Health(StrEnum):
    """Argo CD's health statuses (the ones these objects can have)."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    SUSPENDED = "Suspended"
    DEGRADED = "Degraded"
    UNKNOWN = "Unknown"


class PodSync(StrEnum):
    """Whether one sidecar pod runs its namespace's live config, as the operator reports it."""

    SYNCED = "SYNCED"
    STALE = "STALE"
    """The operator reports the pod lagging (its push failed or was refused; retried with backoff)."""
    SKEWED = "SKEWED"
    """Its sidecar reads only older schemas that cannot carry the live config (`skewedPods` says why):
    nothing is sent to it until the pod restarts with a newer sidecar."""
    UNKNOWN = "UNKNOWN"
    """Ready, but no sync figure covers it yet (no policy, or the figure predates the pod)."""
    NOT_READY = "NOT READY"
    """Not Ready or without an IP: gets no pushes and no traffic."""
    NO_CONFIG = "NO CONFIG"
    """The namespace has no live config at all."""


OK_SYNC = frozenset({PodSync.SYNCED, PodSync.NOT_READY})


@dataclass(frozen=True)
class Assessment:
    """An object's health and the message saying why (identical to the Argo CD health check's)."""

    status: Health
    message: str


# ------------------------------------------------------------------------------------ object health


def _progressing_on_generation(obj: Mapping[str, Any]) -> Assessment | None:
    status = obj.get("status")
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = status.get("observedGeneration") if isinstance(status, Mapping) else None
    if observed is None or observed < generation:
        return Assessment(
            Health.PROGRESSING, f"waiting for the modelroute operator to observe generation {generation}"
        )
    return None


def _ready(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    found = None
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            found = condition
    return found


def _given(value: Any, default: Any) -> Any:
    """Lua's `value or default`: only a missing value (nil) falls back; "" and 0 are kept."""
    return default if value is None else value


def _not_ready(ready: Mapping[str, Any]) -> Assessment:
    degraded = ready.get("status") == "False" and ready.get("reason") != "Blocked"
    message = f"{_given(ready.get('reason'), 'Unknown')}: {_given(ready.get('message'), '')}"
    return Assessment(Health.DEGRADED if degraded else Health.PROGRESSING, message)


_NO_READY = Assessment(Health.PROGRESSING, "waiting for the Ready condition")


def _until_ready(obj: Mapping[str, Any], judged_by_kind: str = "") -> Assessment | None:
    """The verdict every kind shares while its status is stale or not Ready; None once Ready=True, and
    also for Ready=False with the reason `judged_by_kind`, which the kind's own rules read in more
    detail (a policy rolling out to its sidecars, a rolled-back canary)."""
    if waiting := _progressing_on_generation(obj):
        return waiting
    ready = _ready(obj)
    if ready is None:
        return _NO_READY
    if ready.get("status") == "False" and judged_by_kind and ready.get("reason") == judged_by_kind:
        return None
    if ready.get("status") != "True":
        return _not_ready(ready)
    return None


def endpoint_health(obj: Mapping[str, Any]) -> Assessment:
    """ModelEndpoint: Healthy when Ready (some replica usable), Degraded when Invalid or Unavailable."""
    if gate := _until_ready(obj):
        return gate
    status = obj["status"]
    unhealthy = [r.get("name") for r in status.get("replicas") or [] if r.get("health") == "Unhealthy"]
    summary, regions = _given(status.get("readySummary"), "?"), _given(status.get("regions"), "")
    message = f"{summary} replicas ready ({regions})"
    if unhealthy:
        message += "; unhealthy: " + ", ".join(str(name) for name in unhealthy)
    return Assessment(Health.HEALTHY, message)


def policy_health(obj: Mapping[str, Any]) -> Assessment:
    """RoutingPolicy: Healthy when live and every sidecar counted on this config, Progressing until then
    (Ready is False/RollingOut meanwhile)."""
    if gate := _until_ready(obj, "RollingOut"):
        return gate
    status = obj["status"]
    sync = status.get("sync")
    if sync is None:
        return Assessment(Health.PROGRESSING, "live; waiting for the sidecar sync figure")
    counted = status.get("syncedVersion")
    if counted is not None and counted != status.get("configVersion"):
        return Assessment(Health.PROGRESSING, "live; waiting for the sidecars to be counted on this config")
    lagging = status.get("laggingPods") or []
    if lagging:
        return Assessment(Health.PROGRESSING, f"{sync} sidecars synced; lagging: {', '.join(lagging)}")
    return Assessment(Health.HEALTHY, f"live; {sync} sidecars synced")


def canary_health(obj: Mapping[str, Any]) -> Assessment:
    """Canary: by phase; Paused is Suspended, Promoted Healthy, RolledBack (Ready=False) Degraded."""
    if gate := _until_ready(obj, "RolledBack"):
        return gate
    status = obj["status"]
    spec = obj.get("spec") or {}
    candidate = _given(spec.get("candidate"), "?")
    step = f"{_given(status.get('currentStep'), 0) + 1}/{len(spec.get('steps') or [])}"
    # the step's weight; currentWeight (what every sidecar acknowledged) is unset until they have
    weight = _given(status.get("desiredWeight"), _given(status.get("currentWeight"), 0))
    phase = _given(status.get("phase"), "Pending")
    if phase == "Pending":
        return Assessment(Health.PROGRESSING, "waiting for the canary controller to start")
    if phase == "Mirroring":
        steps = len(spec.get("steps") or [])
        return Assessment(
            Health.PROGRESSING, f"mirroring the route's requests to {candidate} before step 1/{steps}"
        )
    if phase == "Progressing":
        return Assessment(Health.PROGRESSING, f"step {step}: {weight}% to {candidate}")
    if phase == "Paused":
        return Assessment(Health.SUSPENDED, f"paused at step {step}: {weight}% to {candidate}")
    if phase == "Promoted":
        return Assessment(
            Health.HEALTHY, f"promoted: 100% to {candidate}; name it stable in the RoutingPolicy"
        )
    if phase == "RolledBack":
        history = status.get("history") or []
        why = _given(history[-1].get("message"), "rolled back") if history else "rolled back"
        return Assessment(Health.DEGRADED, f"rolled back to {_given(spec.get('stable'), '?')}: {why}")
    return Assessment(Health.UNKNOWN, f"unknown phase {phase}")


_HEALTH_BY_KIND = {
    "ModelEndpoint": endpoint_health,
    "RoutingPolicy": policy_health,
    "Canary": canary_health,
}
KIND_ORDER = tuple(_HEALTH_BY_KIND)


def object_health(obj: Mapping[str, Any]) -> Assessment:
    """Health of one of our objects, by its kind."""
    kind = str(obj.get("kind"))
    if kind not in _HEALTH_BY_KIND:
        raise ValueError(f"not a modelroute kind: {kind}")
    return _HEALTH_BY_KIND[kind](obj)


# ------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Snapshot:
    """What the report is built from: lists as the API server returns them (any namespaces)."""

    objects: Sequence[Mapping[str, Any]] = ()
    """ModelEndpoints, RoutingPolicies and Canaries."""
    pods: Sequence[Mapping[str, Any]] = ()
    """Sidecar pods (label `modelroute.dev/router=sidecar`)."""
    configmaps: Sequence[Mapping[str, Any]] = ()
    """The namespaces' `modelroute-router-config` ConfigMaps."""


@dataclass(frozen=True)
class PodRow:
    namespace: str
    pod: str
    ready: bool
    version: str
    """Config version the pod runs as far as the operator reports, "" when unknown."""
    sync: PodSync


@dataclass(frozen=True)
class ObjectRow:
    namespace: str
    kind: str
    name: str
    health: Health
    message: str


@dataclass(frozen=True)
class NamespaceSummary:
    namespace: str
    version: str
    """The namespace's live config version, "" when it has none."""
    sidecars_synced: int
    sidecars_ready: int
    sidecars_total: int
    objects_healthy: int
    objects_total: int
    state: str
    """`OK`, or the worst problem: `DEGRADED`, `NOT SYNCED`, `PROGRESSING`, `SUSPENDED`, `UNKNOWN`."""

    @property
    def ok(self) -> bool:
        return self.state == "OK"


@dataclass(frozen=True)
class Report:
    pods: list[PodRow] = field(default_factory=list)
    objects: list[ObjectRow] = field(default_factory=list)
    namespaces: list[NamespaceSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything synced and healthy: the CLI's exit code 0."""
        return all(ns.ok for ns in self.namespaces)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Whether the operator pushes to this pod: Ready, with an IP, not being deleted."""
    meta, status = _meta(pod), pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _sync_counts(sync: Any) -> tuple[int, int] | None:
    """`synced/total` from a policy's `status.sync`, None when absent or malformed."""
    if not isinstance(sync, str) or sync.count("/") != 1:
        return None
    synced, total = sync.split("/")
    return (int(synced), int(total)) if synced.isdigit() and total.isdigit() else None


@dataclass(frozen=True)
class _SyncView:
    """What the namespace's policies say about its sidecars."""

    lagging: frozenset[str]
    skewed: frozenset[str]
    """Lagging pods the live config cannot be sent to (version skew)."""
    covers_ready: bool
    """Whether a current sync figure accounts for every ready pod (else unlisted pods are UNKNOWN)."""


def _sync_view(policies: Iterable[Mapping[str, Any]], live: str, ready_pods: int) -> _SyncView:
    lagging: set[str] = set()
    skewed: set[str] = set()
    covers = False
    for policy in policies:
        status = policy.get("status") or {}
        counts = _sync_counts(status.get("sync"))
        # The figure counts `syncedVersion` (operators before that field: the policy's configVersion).
        counted = _given(status.get("syncedVersion"), status.get("configVersion"))
        if counts is None or counted != live:
            continue
        listed = [str(p) for p in status.get("laggingPods") or []]
        lagging.update(listed)
        skewed.update(str(p) for group in status.get("skewedPods") or [] for p in group.get("pods") or [])
        synced, total = counts
        # The figure must count the pods that are ready now and list every pod it counts as lagging.
        covers = covers or (total == ready_pods and total - synced == len(listed))
    return _SyncView(frozenset(lagging), frozenset(skewed), covers)


def _pod_sync(pod: Mapping[str, Any], live: str, view: _SyncView) -> PodSync:
    if not live:
        return PodSync.NO_CONFIG
    if not pod_ready(pod):
        return PodSync.NOT_READY
    if _meta(pod).get("name") in view.skewed:
        return PodSync.SKEWED
    if _meta(pod).get("name") in view.lagging:
        return PodSync.STALE
    return PodSync.SYNCED if view.covers_ready else PodSync.UNKNOWN


_STATE_ORDER = ("DEGRADED", "NOT SYNCED", "UNKNOWN", "PROGRESSING", "SUSPENDED", "OK")


def _namespace_state(objects: Sequence[ObjectRow], pods: Sequence[PodRow]) -> str:
    states = {"OK"}
    health_states = {
        Health.DEGRADED: "DEGRADED",
        Health.UNKNOWN: "UNKNOWN",
        Health.PROGRESSING: "PROGRESSING",
        Health.SUSPENDED: "SUSPENDED",
    }
    states.update(health_states[o.health] for o in objects if o.health in health_states)
    if any(p.sync not in OK_SYNC for p in pods):
        states.add("NOT SYNCED")
    return min(states, key=_STATE_ORDER.index)


def live_versions(configmaps: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Namespace → short live config version, from the ConfigMaps' version annotation."""
    out = {}
    for cm in configmaps:
        meta = _meta(cm)
        version = (meta.get("annotations") or {}).get(CONFIG_VERSION_ANNOTATION)
        if version:
            out[str(meta.get("namespace"))] = short_version(str(version))
    return out


def build_report(snapshot: Snapshot) -> Report:
    """Rows for every pod and object and a summary per namespace, sorted."""
    live = live_versions(snapshot.configmaps)
    objects_by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for obj in snapshot.objects:
        objects_by_ns.setdefault(str(_meta(obj).get("namespace")), []).append(obj)
    pods_by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for pod in snapshot.pods:
        pods_by_ns.setdefault(str(_meta(pod).get("namespace")), []).append(pod)

    report = Report()
    for namespace in sorted(set(objects_by_ns) | set(pods_by_ns) | set(live)):
        version = live.get(namespace, "")
        objects = objects_by_ns.get(namespace, [])
        pods = sorted(pods_by_ns.get(namespace, []), key=lambda p: str(_meta(p).get("name")))
        policies = [o for o in objects if o.get("kind") == "RoutingPolicy"]
        view = _sync_view(policies, version, sum(1 for p in pods if pod_ready(p)))
        pod_rows = []
        for pod in pods:
            sync = _pod_sync(pod, version, view)
            pod_rows.append(
                PodRow(
                    namespace,
                    str(_meta(pod).get("name")),
                    pod_ready(pod),
                    version if sync == PodSync.SYNCED else "",
                    sync,
                )
            )
        object_rows = []
        for obj in sorted(objects, key=_object_order):
            assessment = object_health(obj)
            object_rows.append(
                ObjectRow(
                    namespace,
                    str(obj.get("kind")),
                    str(_meta(obj).get("name")),
                    assessment.status,
                    assessment.message,
                )
            )
        report.pods.extend(pod_rows)
        report.objects.extend(object_rows)
        report.namespaces.append(
            NamespaceSummary(
                namespace=namespace,
                version=version,
                sidecars_synced=sum(1 for p in pod_rows if p.sync == PodSync.SYNCED),
                sidecars_ready=sum(1 for p in pod_rows if p.ready),
                sidecars_total=len(pod_rows),
                objects_healthy=sum(1 for o in object_rows if o.health == Health.HEALTHY),
                objects_total=len(object_rows),
                state=_namespace_state(object_rows, pod_rows),
            )
        )
    return report


def _object_order(obj: Mapping[str, Any]) -> tuple[int, str]:
    kind = str(obj.get("kind"))
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), str(_meta(obj).get("name")))


# ------------------------------------------------------------------------------------------- output


def _or_dash(version: str) -> str:
    return version or "-"


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The three tables people read: sidecars, objects, namespaces."""
    if not report.namespaces:
        return "no modelroute objects, configs or sidecar pods found"
    sections = []
    if report.pods:
        rows = [("NAMESPACE", "POD", "READY", "VERSION", "SYNCED")]
        rows += [(p.namespace, p.pod, str(p.ready), _or_dash(p.version), p.sync.value) for p in report.pods]
        sections.append(render_table(rows))
    if report.objects:
        rows = [("NAMESPACE", "KIND", "NAME", "HEALTH", "MESSAGE")]
        rows += [(o.namespace, o.kind, o.name, o.health.value, _cell(o.message)) for o in report.objects]
        sections.append(render_table(rows))
    rows = [("NAMESPACE", "CONFIG", "SIDECARS", "OBJECTS", "STATUS")]
    for ns in report.namespaces:
        sidecars = f"{ns.sidecars_synced}/{ns.sidecars_ready} synced"
        if ns.sidecars_total != ns.sidecars_ready:
            sidecars += f" ({ns.sidecars_total - ns.sidecars_ready} not ready)"
        objects = f"{ns.objects_healthy}/{ns.objects_total} healthy"
        rows.append((ns.namespace, _or_dash(ns.version), sidecars, objects, ns.state))
    sections.append(render_table(rows))
    return "\n\n".join(sections)


def waiting_on(report: Report, limit: int = 3) -> str:
    """One line naming what keeps the report from OK (`status --wait` prints it while it waits)."""
    blocked = [ns for ns in report.namespaces if not ns.ok]
    if not blocked:
        return "every sidecar synced and every object healthy"
    parts = []
    for ns in blocked[:limit]:
        reasons = [
            f"pod {p.pod} {p.sync.value}"
            for p in report.pods
            if p.namespace == ns.namespace and p.sync not in OK_SYNC
        ]
        reasons += [
            f"{o.kind} {o.name} {o.health.value}"
            for o in report.objects
            if o.namespace == ns.namespace and o.health != Health.HEALTHY
        ]
        more = f", +{len(reasons) - limit} more" if len(reasons) > limit else ""
        parts.append(f"{ns.namespace} {ns.state} ({', '.join(reasons[:limit])}{more})")
    others = f"; +{len(blocked) - limit} more namespace(s)" if len(blocked) > limit else ""
    return f"waiting on {len(blocked)} of {len(report.namespaces)} namespace(s): {'; '.join(parts)}{others}"


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (whole versions and messages), for scripts."""
    return {
        "ok": report.ok,
        "namespaces": [asdict(ns) | {"ok": ns.ok} for ns in report.namespaces],
        "pods": [asdict(p) | {"sync": p.sync.value} for p in report.pods],
        "objects": [asdict(o) | {"health": o.health.value} for o in report.objects],
    }
