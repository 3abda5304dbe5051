"""Pure status computation: what each object's status should say, and the minimal patch to get there.

Given an object, its compile errors and the namespace's live config, compute the status fields this
operator owns. Conditions keep their `lastTransitionTime` while their status holds, and `status_patch`
returns only the fields that differ, so re-running on unchanged input writes nothing.

The condition types of each kind are `CONDITION_TYPES` (README's conditions table and the status
models' docstrings name the same ones; a test keeps them equal). What `Ready` means, per kind, is what
`kubectl wait --for=condition=Ready` users assume: safe to rely on.
- ModelEndpoint: live and routable (not every replica failed its probes). A replica counts as ready
  (`readyReplicas`, the REPLICAS column) only once a probe found it healthy; `Healthy`: every replica
  probed healthy.
- RoutingPolicy: live *and* running on every ready sidecar of the namespace (`Synced`), so "Ready" means
  "safe to send traffic with this config". `Synced` alone says how far the rollout is.
- Canary: live and not rolled back (a rolled-back canary is `Ready=False/RolledBack`); `RolledOut` says
  whether every sidecar runs the decided weight. Completion is `status.phase=Promoted`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelroute_contract import CanarySplit, PolicyConfig, RouterConfig, RuleConfig, short_version
from modelroute_operator.logic.resources import ReplicaHealth

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

CONDITION_TYPES: dict[str, tuple[str, ...]] = {
    "ModelEndpoint": ("Accepted", "Ready", "Healthy"),
    "RoutingPolicy": ("Accepted", "Ready", "Synced"),
    "Canary": ("Accepted", "Ready", "RolledOut"),
}
"""The condition types the operator writes on each kind (an invalid object gets Accepted and Ready)."""
LIVE_REASONS = frozenset({"Live", "RollingOut"})
"""Ready reasons of a policy that is in the live config (the syncer may move between them)."""


def format_time(moment: datetime) -> str:
    """metav1.Time wire format: RFC 3339, UTC, whole seconds."""
    return moment.strftime(TIME_FORMAT)


def object_key(kind: str, name: str) -> str:
    """How an object is named in the live config's sources and in messages."""
    return f"{kind}/{name}"


@dataclass(frozen=True)
class ConditionState:
    """A condition's desired status, reason and message (transition time is decided on merge)."""

    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """What the operator knows about one object after a reconcile."""

    key: str
    generation: int
    own_errors: Sequence[str]
    """`field: reason` lines about this object."""
    live_generation: int | None
    """Generation of this object compiled into the live config, None when absent."""
    blocking: Sequence[str]
    """Objects with errors that block the namespace's config (when this object is fine)."""
    live_version: str


def acceptance(verdict: Verdict) -> ConditionState:
    """`Accepted`: the object on its own (and its references) is valid."""
    if verdict.own_errors:
        return ConditionState("Accepted", "False", "Invalid", "; ".join(verdict.own_errors))
    return ConditionState("Accepted", "True", "Valid", "spec is valid")


def readiness(verdict: Verdict, unavailable: str = "") -> ConditionState:
    """`Ready`: this generation of the object is in the live config (and, if given, usable)."""
    if verdict.own_errors:
        return ConditionState("Ready", "False", "Invalid", "; ".join(verdict.own_errors))
    if verdict.live_generation != verdict.generation:
        if verdict.blocking:
            blockers = ", ".join(verdict.blocking[:3]) + (" and more" if len(verdict.blocking) > 3 else "")
            return ConditionState(
                "Ready",
                "False",
                "Blocked",
                f"not live: the namespace keeps its last good config while {blockers} is invalid",
            )
        return ConditionState("Ready", "Unknown", "Pending", "waiting for the config to be compiled")
    if unavailable:
        return ConditionState("Ready", "False", "Unavailable", unavailable)
    return ConditionState("Ready", "True", "Live", f"live in config {short_version(verdict.live_version)}")


def merge_conditions(
    existing: Iterable[Mapping[str, Any]], desired: Iterable[ConditionState], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """Existing conditions with ours replaced; a transition time moves only when the status changes.
    Conditions of other types (owned by other controllers) are kept as they are."""
    by_type = {c.get("type"): dict(c) for c in existing}
    for state in desired:
        old = by_type.get(state.type)
        transition = old.get("lastTransitionTime") if old and old.get("status") == state.status else None
        by_type[state.type] = {
            "type": state.type,
            "status": state.status,
            "observedGeneration": generation,
            "lastTransitionTime": transition or format_time(now),
            "reason": state.reason,
            "message": state.message[:32768],
        }
    return [by_type[t] for t in sorted(by_type, key=_condition_order)]


def _condition_order(condition_type: Any) -> tuple[int, str]:
    # Ready first: it is the summary people and `kubectl wait` look at.
    return (0 if condition_type == "Ready" else 1, str(condition_type))


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch turning `current` into `desired` for the keys in `desired` (None deletes)."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


def endpoint_status(obj: Mapping[str, Any], verdict: Verdict, now: datetime) -> dict[str, Any]:
    """Status fields of a ModelEndpoint this reconcile owns. `replicas` (health) belongs to the health
    monitor; here it is only read. A replica counts as ready only once a probe found it healthy: one
    the monitor has not reported yet, or never probed, is `Unknown` and not ready."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    probing = bool((spec.get("healthCheck") or {}).get("enabled", True))
    health = {(r.get("name"), r.get("region")): r.get("health") for r in status.get("replicas") or []}
    ready_by_region: dict[str, list[int]] = {}
    unhealthy: list[str] = []
    unprobed: list[str] = []
    for replica in spec.get("replicas") or []:
        counts = ready_by_region.setdefault(str(replica.get("region")), [0, 0])
        counts[1] += 1
        seen = health.get((replica.get("name"), replica.get("region")))
        if seen == ReplicaHealth.HEALTHY.value:
            counts[0] += 1
        elif seen == ReplicaHealth.UNHEALTHY.value:
            unhealthy.append(str(replica.get("name")))
        else:
            unprobed.append(str(replica.get("name")))
    ready = sum(c[0] for c in ready_by_region.values())
    total = sum(c[1] for c in ready_by_region.values())
    conditions = merge_conditions(
        status.get("conditions") or [],
        (
            acceptance(verdict),
            endpoint_readiness(verdict, probing, ready, total, len(unhealthy)),
            endpoint_health(probing, ready, total, unhealthy, unprobed),
        ),
        verdict.generation,
        now,
    )
    return {
        "observedGeneration": verdict.generation,
        "conditions": conditions,
        "readyReplicas": ready,
        "readySummary": f"{ready}/{total}" + ("" if probing else " (probes off)"),
        "regions": ",".join(f"{region}={c[0]}/{c[1]}" for region, c in sorted(ready_by_region.items())),
    }


def endpoint_readiness(
    verdict: Verdict, probing: bool, ready: int, total: int, unhealthy: int
) -> ConditionState:
    """`Ready` of a ModelEndpoint: live, and routable: not every replica failed its probes. A replica
    not probed yet is routable (the router trusts a new replica until probes say otherwise), so it
    does not make the endpoint unready; it is not *counted* as ready either (`readyReplicas`), and the
    message says how many replicas a probe found healthy."""
    live = readiness(verdict)
    if live.status != "True":
        return live
    if not probing:
        return ConditionState(
            "Ready", "True", "Live", f"{live.message}; health checks are off: no replica is probed"
        )
    if total and unhealthy == total:
        return ConditionState("Ready", "False", "Unavailable", "every replica is unhealthy")
    return ConditionState("Ready", "True", "Live", f"{live.message}; {ready}/{total} replicas probed healthy")


def endpoint_health(
    probing: bool, ready: int, total: int, unhealthy: Sequence[str], unprobed: Sequence[str]
) -> ConditionState:
    """`Healthy`: every replica probed healthy (False names the unhealthy ones, Unknown the unprobed)."""
    if not probing:
        return ConditionState("Healthy", "Unknown", "ProbesDisabled", "health checks are off")
    if unhealthy:
        message = f"unhealthy: {_names(unhealthy)} ({ready}/{total} healthy)"
        return ConditionState("Healthy", "False", "ReplicasUnhealthy", message)
    if unprobed:
        return ConditionState("Healthy", "Unknown", "NotProbed", f"not probed yet: {_names(unprobed)}")
    return ConditionState("Healthy", "True", "AllHealthy", f"{total}/{total} replicas probed healthy")


def _names(names: Sequence[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def policy_endpoints(policy: PolicyConfig) -> list[str]:
    """Every endpoint a compiled policy can send traffic to."""
    names: set[str] = set()
    for rule in policy.rules:
        names.update(t.endpoint for t in rule.targets)
        names.update(rule.fallback)
        names.update(rule.escalation)
        if rule.canary:
            names.update((rule.canary.stable, rule.canary.candidate))
    return sorted(names)


def policy_status(
    obj: Mapping[str, Any], verdict: Verdict, live: RouterConfig | None, now: datetime
) -> dict[str, Any]:
    """Status fields of a RoutingPolicy this reconcile owns."""
    status = obj.get("status") or {}
    name = obj["metadata"]["name"]
    compiled = next((p for p in live.policies if p.name == name), None) if live else None
    version = short_version(live.version) if live and compiled else None
    stale = stale_sync_fields(status, version)
    counted = {**status, **stale, "configVersion": version}
    synced = policy_sync(counted)
    conditions = merge_conditions(
        status.get("conditions") or [],
        (acceptance(verdict), policy_readiness(readiness(verdict), synced), synced),
        verdict.generation,
        now,
    )
    desired: dict[str, Any] = {
        "observedGeneration": verdict.generation,
        "conditions": conditions,
        "configVersion": version,
        "routes": len(compiled.rules) if compiled else None,
        "endpoints": policy_endpoints(compiled) if compiled else [],
    }
    desired.update(stale)
    return desired


def policy_sync(status: Mapping[str, Any]) -> ConditionState:
    """`Synced`: whether every ready sidecar of the namespace runs the policy's live config, read from
    the sync figure the syncer writes (`sync`, counted on `syncedVersion`, and the lagging pods)."""
    version = status.get("configVersion")
    if not version:
        return ConditionState("Synced", "Unknown", "NotLive", "the policy is not in a live config")
    counts = sync_counts(status.get("sync"))
    if counts is None or status.get("syncedVersion") != version:
        return ConditionState(
            "Synced", "Unknown", "Counting", f"waiting for the sidecars to be counted on config {version}"
        )
    synced, total = counts
    lagging = list(status.get("laggingPods") or [])
    skewed = [p for group in status.get("skewedPods") or [] for p in group.get("pods") or []]
    if total == 0:
        return ConditionState(
            "Synced", "True", "NoSidecars", f"config {version}: no ready sidecar in the namespace yet"
        )
    if synced < total or lagging:
        reason = "SchemaSkew" if skewed and set(lagging) <= set(skewed) else "Lagging"
        message = f"{synced}/{total} sidecars run config {version}"
        if lagging:
            message += f"; lagging: {_names(lagging)}"
        if skewed:
            message += f" (cannot be sent it: {_names(skewed)}; see status.skewedPods)"
        return ConditionState("Synced", "False", reason, message)
    return ConditionState("Synced", "True", "Synced", f"{total}/{total} sidecars run config {version}")


def policy_readiness(live: ConditionState, synced: ConditionState) -> ConditionState:
    """`Ready` of a RoutingPolicy: live (the reconciler's verdict) and running on every ready sidecar.
    While it is live but not everywhere yet it is False/RollingOut, which Argo CD and `modelroute
    status` show as Progressing."""
    if live.status != "True":
        return live
    if synced.status == "True":
        return ConditionState("Ready", "True", "Live", f"{live.message}; {synced.message}")
    return ConditionState("Ready", "False", "RollingOut", f"{live.message}; {synced.message}")


def policy_sync_patch(body: Mapping[str, Any], fields: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The syncer's patch of one policy: the sync figure with the `Synced` condition, and `Ready` moved
    between Live and RollingOut when the policy is live. Empty when the figure counts another version
    than the policy's `configVersion`: the reconciler moved the policy on since the syncer read the live
    config, and a figure written now would show `n/n` next to a config no sidecar has been counted on
    (the syncer's next pass, which the reconciler schedules, counts the new one)."""
    status = body.get("status") or {}
    counted = fields.get("syncedVersion")
    if counted is not None and status.get("configVersion") != counted:
        return {}
    after = {**status, **fields}
    synced = policy_sync(after)
    existing = status.get("conditions") or []
    states = [synced]
    ready = next((c for c in existing if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("reason") in LIVE_REASONS:
        live_message = str(ready.get("message") or "").split("; ", 1)[0]
        states.append(policy_readiness(ConditionState("Ready", "True", "Live", live_message), synced))
    generation = int(status.get("observedGeneration") or (body.get("metadata") or {}).get("generation") or 0)
    desired = {**fields, "conditions": merge_conditions(existing, states, generation, now)}
    return status_patch(status, desired)


def stale_sync_fields(status: Mapping[str, Any], config_version: str | None) -> dict[str, Any]:
    """Clear a sync figure that counts another version than the live one: `3/3` next to a new config
    version would claim every sidecar runs it before one has acknowledged it. The syncer writes the
    figure again once it has counted the sidecars on the live version."""
    counted = status.get("syncedVersion")
    if counted is None or counted == config_version:
        return {}
    return {"sync": None, "syncedVersion": None, "laggingPods": [], "skewedPods": []}


def pod_incarnation(pod_status: Mapping[str, Any]) -> str:
    """Which run of a pod's containers its status describes: each container's restart count and
    container ID (native sidecars are init containers). It changes when a container restarts, which is
    when a sidecar boots again from its mounted config file and an earlier acknowledgement no longer
    says what it runs."""
    runs = [
        f"{c.get('name')}:{c.get('restartCount', 0)}:{c.get('containerID') or ''}"
        for key in ("initContainerStatuses", "containerStatuses")
        for c in pod_status.get(key) or []
    ]
    return ",".join(sorted(runs))


def sync_counts(figure: Any) -> tuple[int, int] | None:
    """`(synced, total)` of a `sync` figure such as `2/3`; None when absent or malformed."""
    try:
        synced, total = (int(part) for part in str(figure).split("/"))
    except ValueError:
        return None
    return synced, total


def _live_rule(obj: Mapping[str, Any], live: RouterConfig | None) -> RuleConfig | None:
    """The compiled rule carrying this canary's split in the live config, when the split is there for
    the spec's stable and candidate."""
    spec = obj.get("spec") or {}
    target = spec.get("target") or {}
    for compiled in live.policies if live is not None else ():
        if compiled.name != target.get("policy"):
            continue
        for rule in compiled.rules:
            split = rule.canary
            if split is not None and split.name == obj["metadata"]["name"]:
                same = (split.stable, split.candidate) == (spec.get("stable"), spec.get("candidate"))
                return rule if same else None
    return None


def _live_split(obj: Mapping[str, Any], live: RouterConfig | None) -> CanarySplit | None:
    """This canary's split in the live config, when it is there for the spec's stable and candidate."""
    rule = _live_rule(obj, live)
    return rule.canary if rule is not None else None


def _mirror_pending(obj: Mapping[str, Any], live: RouterConfig | None) -> str | None:
    """Why a mirroring canary's shadow to the candidate is not in the live config yet; None when it is
    there or the canary is not mirroring. The mirror phase runs at 0%, like the start, so the weight
    alone cannot tell a config that mirrors from one compiled before the phase began."""
    if (obj.get("status") or {}).get("phase") != "Mirroring":
        return None
    candidate = (obj.get("spec") or {}).get("candidate")
    rule = _live_rule(obj, live)
    if rule is not None and rule.shadow is not None and rule.shadow.endpoint == candidate:
        return None
    return f"the mirror to {candidate} is not compiled yet"


def _decided_weight(status: Mapping[str, Any]) -> Any:
    # A status written before `desiredWeight` existed carries the decision in `currentWeight`.
    desired = status.get("desiredWeight")
    return desired if desired is not None else status.get("currentWeight")


def acknowledged_weight(
    obj: Mapping[str, Any], live: RouterConfig | None, policy: Mapping[str, Any] | None
) -> int | None:
    """The candidate weight of this canary that every sidecar runs: the live config's weight when the
    target policy's sync figure counts every sidecar (at least one) on that live version; None when
    the canary is not live, no sidecar runs it, or some lag. Shared by the `RolledOut` condition and
    the canary controller, which starts a step's clock only once this equals the decided weight."""
    split = _live_split(obj, live)
    if split is None or live is None or _mirror_pending(obj, live):
        return None
    policy_status = (policy or {}).get("status") or {}
    counts = sync_counts(policy_status.get("sync"))
    if policy_status.get("syncedVersion") != short_version(live.version) or counts is None:
        return None
    synced, total = counts
    return int(split.candidate_weight) if total > 0 and synced == total else None


def canary_rollout(
    obj: Mapping[str, Any], live: RouterConfig | None, policy: Mapping[str, Any] | None
) -> ConditionState:
    """`RolledOut`: whether every sidecar runs a config carrying the weight the controller decided.

    The canary's `desiredWeight` reaches the sidecars through the next compile and push. Until the
    target policy's sync figure counts every sidecar on a live config with that weight, the condition
    says the rollout is pending (and `currentWeight` keeps the last acknowledged weight).
    """
    status = obj.get("status") or {}
    split = _live_split(obj, live)
    if split is None:
        return ConditionState("RolledOut", "Unknown", "NotLive", "the canary is not in the live config")
    weight = int(split.candidate_weight)
    decided = _decided_weight(status)
    policy_status = (policy or {}).get("status") or {}
    counts = sync_counts(policy_status.get("sync"))
    on_live = live is not None and policy_status.get("syncedVersion") == short_version(live.version)
    if (
        decided is not None
        and int(decided) != weight
        and status.get("phase") not in ("Promoted", "RolledBack")
    ):
        return ConditionState(
            "RolledOut", "False", "PendingRollout", f"weight {decided}% is not compiled yet (live: {weight}%)"
        )
    if pending := _mirror_pending(obj, live):
        return ConditionState("RolledOut", "False", "PendingRollout", pending)
    if counts is None or not on_live:
        return ConditionState(
            "RolledOut",
            "False",
            "PendingRollout",
            f"weight {weight}%: waiting for the sidecars to acknowledge",
        )
    synced, total = counts
    if total == 0:
        return ConditionState("RolledOut", "False", "NoSidecars", f"weight {weight}%: no sidecar runs it")
    if synced < total:
        return ConditionState(
            "RolledOut",
            "False",
            "PendingRollout",
            f"weight {weight}% pending rollout: {synced}/{total} sidecars",
        )
    return ConditionState(
        "RolledOut", "True", "Acknowledged", f"weight {weight}% runs on {total}/{total} sidecars"
    )


def canary_status(
    obj: Mapping[str, Any],
    verdict: Verdict,
    now: datetime,
    live: RouterConfig | None = None,
    policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Status fields of a Canary this reconcile owns (the canary controller owns phase and steps);
    `policy` is the target RoutingPolicy as read, whose sync figure says what the sidecars run."""
    status = obj.get("status") or {}
    states = [acceptance(verdict), canary_readiness(readiness(verdict), status)]
    if not verdict.own_errors:
        states.append(canary_rollout(obj, live, policy))
    conditions = merge_conditions(status.get("conditions") or [], states, verdict.generation, now)
    return {"observedGeneration": verdict.generation, "conditions": conditions}


def canary_readiness(live: ConditionState, status: Mapping[str, Any]) -> ConditionState:
    """`Ready` of a Canary: live and not rolled back. A rolled-back canary did not do what Git asked
    (Argo CD shows it Degraded), so `kubectl wait --for=condition=Ready` must not pass on it."""
    if live.status != "True" or status.get("phase") != "RolledBack":
        return live
    history = status.get("history") or []
    why = str(history[-1].get("message") or "") if history else ""
    return ConditionState("Ready", "False", "RolledBack", why or "rolled back")


def ready_transition(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any] | None:
    """The new Ready condition when its status or reason changed between two statuses, else None (also
    None into RollingOut and from it back to Live: every config change goes through it, so an Event
    each would be noise; a Warning for a rollout in progress would be wrong; and None for a new object's
    first Ready=True: its status already says it, with the time, and an Event for each object would
    double a cold start's API writes, see docs/scaling.md. A first Ready that is not True, e.g. Invalid,
    is still told: someone has to act on it)."""

    def ready(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)

    old, new = ready(before), ready(after)
    if new is None:
        return None
    if new.get("reason") == "RollingOut" or (
        old is not None and {old.get("reason"), new.get("reason")} <= LIVE_REASONS
    ):
        return None  # a policy rolling a config out (and back to Live): routine, `Synced` shows it
    if old is None:
        return dict(new) if new.get("status") != "True" else None
    if (old.get("status"), old.get("reason")) != (new.get("status"), new.get("reason")):
        return dict(new)
    return None
