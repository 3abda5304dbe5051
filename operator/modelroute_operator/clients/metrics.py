"""The operator's own Prometheus metrics (`modelroute_operator_` prefix), served on /metrics.

What an SRE asks of a controller: is it passing (reconcile passes by outcome, and objects found invalid by
kind), how long a pass takes, whether pushes reach the sidecars and are acknowledged, how probes go,
which replica leads, and what the canaries do. Labels are bounded: outcomes, kinds and reasons, never a
namespace, an object or a pod name (those are in status and Events).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_PASSES = Counter(
    "modelroute_operator_reconcile_passes_total",
    "Reconcile passes over a namespace, by outcome (ok; invalid: an object refused; error: the pass failed)",
    ["outcome"],
)
RECONCILE_ERRORS = Counter(
    "modelroute_operator_reconcile_errors_total",
    "Objects a reconcile pass found invalid, by kind (one per object and pass)",
    ["kind"],
)
RECONCILE_DURATION = Histogram(
    "modelroute_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass (gather, compile, store, report)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STATUS_WRITES = Counter(
    "modelroute_operator_status_writes_total", "Status patches written, by kind", ["kind"]
)
PUSHES = Counter(
    "modelroute_operator_config_pushes_total",
    "Config pushes to sidecars, by outcome (acknowledged, refused, failed)",
    ["outcome"],
)
ACKNOWLEDGED = Counter(
    "modelroute_operator_config_acks_total",
    "Sidecars found running the live config (after a push, or already)",
)
LAGGING_SIDECARS = Gauge(
    "modelroute_operator_lagging_sidecars", "Ready sidecars not yet running the live config, at the last sync"
)
PROBES = Counter(
    "modelroute_operator_probes_total", "Active health probes of replicas, by result", ["result"]
)
LEADER = Gauge("modelroute_operator_leader", "1 while this replica holds the leader Lease (or runs alone)")
CANARY_STEPS = Counter(
    "modelroute_operator_canary_transitions_total",
    "Canary transitions, by reason (Started, Promoted, RolledBack, Paused, ...)",
    ["reason"],
)
LOOP_LAG = Gauge(
    "modelroute_operator_event_loop_lag_seconds",
    "How late the main event loop's last heartbeat ran (a wedged loop makes /healthz fail)",
)


def kind_of(error_key: str) -> str:
    """The kind of a reconcile error key (`Kind/name ...`), for the bounded `kind` label."""
    kind = error_key.split("/", 1)[0]
    return kind if kind in ("ModelEndpoint", "RoutingPolicy", "Canary") else "other"
