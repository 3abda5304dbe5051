"""Which watch events are worth a reconcile pass: those that change what the reconciler reads.

Every status write comes back as a watch event. The reconciler's own fields (conditions,
`observedGeneration`, the summaries it derives) and the syncer's list of lagging pods are outputs, so
an event that changes only those is ignored. What other parts write stays an input: the health
monitor's `ModelEndpoint.status.replicas` and the canary controller's progress fields go into the
compiled config, and a policy's sync figure says whether a canary's weight runs everywhere (it matters
only where there is a canary), or that it counts a config that is no longer live (then the reconciler
clears it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RECONCILER_CANARY_FIELDS = ("conditions", "observedGeneration")
"""What the reconciler writes on a Canary (the canary controller owns the rest of its status)."""


def _identity(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata") or {}
    # uid: an object deleted and created again under its name is a new object with an empty status.
    # Labels and annotations are not compiled, but a user's change to them still gets a pass (only
    # our own writes are ignored; `kubectl annotate` is how one asks for a pass).
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("deletionTimestamp"),
        meta.get("labels"),
        meta.get("annotations"),
        body.get("spec"),
    )


def reconcile_inputs(kind: str, body: Mapping[str, Any], with_canaries: bool) -> tuple[Any, ...]:
    """What a pass reads of one object; `with_canaries`: whether its namespace has a Canary."""
    status = body.get("status") or {}
    if kind == "ModelEndpoint":
        return (*_identity(body), status.get("replicas"))
    if kind == "Canary":
        progress = {k: v for k, v in status.items() if k not in RECONCILER_CANARY_FIELDS}
        return (*_identity(body), progress)
    stale = status.get("syncedVersion") not in (None, status.get("configVersion"))
    sync = (status.get("sync"), status.get("syncedVersion")) if with_canaries else None
    return (*_identity(body), stale, sync)


def needs_pass(
    kind: str, before: Mapping[str, Any] | None, after: Mapping[str, Any], with_canaries: bool
) -> bool:
    """Whether the change from `before` (None: a new object) to `after` is worth a reconcile pass."""
    if before is None:
        return True
    return reconcile_inputs(kind, before, with_canaries) != reconcile_inputs(kind, after, with_canaries)


def sync_changed(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether a RoutingPolicy's sync figure moved (a canary waiting on its sidecars looks again)."""

    def figure(body: Mapping[str, Any] | None) -> tuple[Any, Any]:
        status = (body or {}).get("status") or {}
        return status.get("sync"), status.get("syncedVersion")

    return figure(before) != figure(after)
