"""Conditions mean what tooling assumes: the documented condition types are the ones written;
`Ready` on a RoutingPolicy means live *and* run by every sidecar (`kubectl wait --for=condition=Ready`
is "safe to send traffic with this config"); a rolled-back Canary is not `Ready=True`; a replica never
probed is not a ready replica; the syncer never writes `n/n` beside a config it did not count."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.manifests import canary, endpoint, policy

from modelroute_contract import RouterConfig, short_version
from modelroute_operator.logic import status as st
from modelroute_operator.logic import status_report as sr
from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object
from modelroute_operator.logic.resources import (
    Canary,
    CanaryStatus,
    ModelEndpoint,
    ModelEndpointStatus,
    RoutingPolicy,
    RoutingPolicyStatus,
)

NOW = datetime(2026, 12, 2, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def namespace() -> tuple[list[dict[str, Any]], RouterConfig]:
    bodies = [endpoint(), endpoint("llama-next"), policy(), canary()]
    for body in bodies:
        body["metadata"].update(namespace="ns", generation=1)
    parsed = [parse_object(b) for b in bodies]
    result = compile_namespace(
        NamespaceObjects(
            "ns",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [o for o in parsed if isinstance(o, Canary)],
        )
    )
    assert result.config is not None, result.errors
    return bodies, result.config


def verdict(key: str, live: RouterConfig, errors: tuple[str, ...] = ()) -> st.Verdict:
    return st.Verdict(key, 1, list(errors), None if errors else 1, [], live.version)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def state(status: dict[str, Any], ctype: str = "Ready") -> tuple[str, str]:
    c = conditions(status)[ctype]
    return c["status"], c["reason"]


def probed(body: dict[str, Any], health: dict[str, str], enabled: bool = True) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["spec"]["healthCheck"] = {"enabled": enabled}
    out["status"] = {
        "replicas": [
            {"name": r["name"], "region": r["region"], "health": health[r["name"]]}
            for r in out["spec"]["replicas"]
            if r["name"] in health
        ]
    }
    return out


def synced(
    body: dict[str, Any], figure: str | None, version: str | None, lagging: tuple[str, ...] = ()
) -> dict:
    out = copy.deepcopy(body)
    out["status"] = {"sync": figure, "syncedVersion": version, "laggingPods": list(lagging)}
    return out


# ------------------------------------------------------------------------- the documented types


def written_types() -> dict[str, set[str]]:
    bodies, live = namespace()
    ep, _, pol, can = bodies
    return {
        "ModelEndpoint": set(conditions(st.endpoint_status(ep, verdict("ModelEndpoint/llama", live), NOW))),
        "RoutingPolicy": set(
            conditions(st.policy_status(pol, verdict("RoutingPolicy/support", live), live, NOW))
        ),
        "Canary": set(conditions(st.canary_status(can, verdict("Canary/llama-next", live), NOW, live, pol))),
    }


@pytest.mark.parametrize(
    ("kind", "model"),
    [
        ("ModelEndpoint", ModelEndpointStatus),
        ("RoutingPolicy", RoutingPolicyStatus),
        ("Canary", CanaryStatus),
    ],
)
def test_the_documented_condition_types_are_the_ones_written(kind: str, model: Any) -> None:
    written = written_types()[kind]
    assert written == set(st.CONDITION_TYPES[kind])
    # `kubectl explain <kind>.status.conditions` names them (the CRD description is this docstring).
    described = model.model_fields["conditions"].description or ""
    assert set(re.findall(r"`([A-Z][A-Za-z]+)`", described)) == written, described
    # The README's conditions table lists each type on its kind's row.
    readme = (REPO / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith(f"| {kind} |")]
    assert rows, f"README has no conditions row for {kind}"
    assert set(re.findall(r"`([A-Z][A-Za-z]+)`", rows[0].split("|")[2])) == written, rows[0]


# ------------------------------------------------------------------------------- ModelEndpoint


@pytest.mark.parametrize(
    ("health", "ready", "summary", "reason", "healthy"),
    [
        ({}, ("True", "Live"), "0/2", "not probed", ("Unknown", "NotProbed")),
        (
            {"eu-west-1": "Unknown", "us-east-1": "Unknown"},
            ("True", "Live"),
            "0/2",
            "",
            ("Unknown", "NotProbed"),
        ),
        ({"eu-west-1": "Healthy"}, ("True", "Live"), "1/2", "", ("Unknown", "NotProbed")),
        (
            {"eu-west-1": "Healthy", "us-east-1": "Unhealthy"},
            ("True", "Live"),
            "1/2",
            "",
            ("False", "ReplicasUnhealthy"),
        ),
        (
            {"eu-west-1": "Healthy", "us-east-1": "Healthy"},
            ("True", "Live"),
            "2/2",
            "",
            ("True", "AllHealthy"),
        ),
        (
            {"eu-west-1": "Unhealthy", "us-east-1": "Unhealthy"},
            ("False", "Unavailable"),
            "0/2",
            "",
            ("False", "ReplicasUnhealthy"),
        ),
        ({"eu-west-1": "Unhealthy"}, ("True", "Live"), "0/2", "", ("False", "ReplicasUnhealthy")),
    ],
)
def test_a_replica_never_probed_is_not_a_ready_replica(
    health: dict[str, str], ready: tuple[str, str], summary: str, reason: str, healthy: tuple[str, str]
) -> None:
    bodies, live = namespace()
    status = st.endpoint_status(probed(bodies[0], health), verdict("ModelEndpoint/llama", live), NOW)
    assert status["readySummary"] == summary
    assert status["readyReplicas"] == int(summary[0])
    assert state(status) == ready
    assert state(status, "Healthy") == healthy
    assert (
        f"{summary} replicas probed healthy" in conditions(status)["Ready"]["message"] or ready[0] != "True"
    )
    judged = sr.endpoint_health({**probed(bodies[0], health), "status": {**status, "observedGeneration": 1}})
    want = {"True": sr.Health.HEALTHY, "False": sr.Health.DEGRADED}
    assert judged.status == want[ready[0]]


def test_with_probes_off_the_endpoint_is_live_and_says_no_replica_is_probed() -> None:
    bodies, live = namespace()
    status = st.endpoint_status(
        probed(bodies[0], {}, enabled=False), verdict("ModelEndpoint/llama", live), NOW
    )
    assert status["readySummary"] == "0/2 (probes off)" and status["readyReplicas"] == 0
    assert state(status) == ("True", "Live")
    assert "health checks are off" in conditions(status)["Ready"]["message"]
    assert state(status, "Healthy") == ("Unknown", "ProbesDisabled")


# ------------------------------------------------------------------------------- RoutingPolicy


@pytest.mark.parametrize(
    ("figure", "on_live", "lagging", "ready", "synced_state"),
    [
        ("3/3", True, (), ("True", "Live"), ("True", "Synced")),
        ("0/0", True, (), ("True", "Live"), ("True", "NoSidecars")),  # new pods boot from the ConfigMap
        ("2/3", True, ("app-2",), ("False", "RollingOut"), ("False", "Lagging")),
        ("3/3", False, (), ("False", "RollingOut"), ("Unknown", "Counting")),  # counted on another config
        (None, True, (), ("False", "RollingOut"), ("Unknown", "Counting")),
    ],
)
def test_a_policy_is_ready_only_when_every_sidecar_runs_its_config(
    figure: str | None,
    on_live: bool,
    lagging: tuple[str, ...],
    ready: tuple[str, str],
    synced_state: tuple[str, str],
) -> None:
    bodies, live = namespace()
    version = short_version(live.version) if on_live else "0ld0ld0ld0ld0ld0"
    body = synced(bodies[2], figure, version, lagging)
    body["status"]["configVersion"] = short_version(live.version)
    status = st.policy_status(body, verdict("RoutingPolicy/support", live), live, NOW)
    merged = {**body["status"], **status}
    assert state(merged) == ready
    assert state(merged, "Synced") == synced_state
    judged = sr.policy_health({**body, "status": {**merged, "observedGeneration": 1}})
    assert judged.status == (sr.Health.HEALTHY if ready[0] == "True" else sr.Health.PROGRESSING), judged


def test_an_invalid_policy_stays_invalid_whatever_the_sidecars_run() -> None:
    bodies, live = namespace()
    body = synced(bodies[2], "3/3", short_version(live.version))
    status = st.policy_status(body, verdict("RoutingPolicy/support", live, ("spec.rules: bad",)), live, NOW)
    assert state(status) == ("False", "Invalid")


def syncer_fields(version: str, figure: str = "3/3", lagging: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"sync": figure, "syncedVersion": version, "laggingPods": list(lagging), "skewedPods": []}


def test_the_syncer_never_writes_a_figure_beside_a_config_it_did_not_count() -> None:
    bodies, live = namespace()
    old, new = "0ld0ld0ld0ld0ld0", short_version(live.version)
    body = copy.deepcopy(bodies[2])
    body["status"] = {"configVersion": new, "observedGeneration": 1}  # the reconciler moved on
    assert st.policy_sync_patch(body, syncer_fields(old), NOW) == {}
    patch = st.policy_sync_patch(body, syncer_fields(new), NOW)
    assert patch["sync"] == "3/3" and patch["syncedVersion"] == new


def test_the_syncer_moves_ready_between_rolling_out_and_live_and_leaves_other_reasons() -> None:
    bodies, live = namespace()
    version = short_version(live.version)
    body = copy.deepcopy(bodies[2])
    body["status"] = {"configVersion": version, "observedGeneration": 1}
    rolling = st.policy_status(body, verdict("RoutingPolicy/support", live), live, NOW)
    body["status"].update(rolling)
    assert state(body["status"]) == ("False", "RollingOut")
    done = st.policy_sync_patch(body, syncer_fields(version), NOW)
    body["status"].update(done)
    assert state(body["status"]) == ("True", "Live") and state(body["status"], "Synced") == ("True", "Synced")
    # The reconciler computes the same from that status: nothing to write, no flapping between writers.
    again = st.policy_status(body, verdict("RoutingPolicy/support", live), live, NOW)
    assert st.status_patch(body["status"], again) == {}
    # A lagging pod later (it restarted on an older file): back to RollingOut, naming it.
    lag = st.policy_sync_patch(body, syncer_fields(version, "2/3", ("app-2",)), NOW)
    body["status"].update(lag)
    assert state(body["status"]) == ("False", "RollingOut")
    assert "app-2" in conditions(body["status"])["Ready"]["message"]
    # Blocked (another object is invalid) is the reconciler's to change, not the syncer's.
    blocked = copy.deepcopy(body)
    for c in blocked["status"]["conditions"]:
        if c["type"] == "Ready":
            c.update(status="False", reason="Blocked")
    patch = st.policy_sync_patch(blocked, syncer_fields(version), NOW)
    assert state({**blocked["status"], **patch}) == ("False", "Blocked")


# ------------------------------------------------------------------------------------- Canary


@pytest.mark.parametrize(
    ("phase", "ready"),
    [
        ("Progressing", ("True", "Live")),
        ("Paused", ("True", "Live")),
        ("Promoted", ("True", "Live")),
        ("RolledBack", ("False", "RolledBack")),
    ],
)
def test_a_rolled_back_canary_is_not_ready(phase: str, ready: tuple[str, str]) -> None:
    bodies, live = namespace()
    body = copy.deepcopy(bodies[3])
    history = [{"time": "2026-12-02T00:00:00Z", "phase": phase, "step": 0, "weight": 0,
                "message": "step 1 failed analysis (1/1), rolled back: error rate 50.0% > 5%"}]  # fmt: skip
    body["status"] = {"phase": phase, "currentStep": 0, "desiredWeight": 0, "history": history}
    status = st.canary_status(body, verdict("Canary/llama-next", live), NOW, live, bodies[2])
    assert state(status) == ready
    judged = sr.canary_health({**body, "status": {**body["status"], **status}})
    if phase == "RolledBack":
        assert "error rate" in conditions(status)["Ready"]["message"]
        assert judged.status == sr.Health.DEGRADED
        assert judged.message.startswith("rolled back to llama")


def test_a_routine_rollout_records_no_ready_event_but_a_real_change_does() -> None:
    def ready(status: str, reason: str) -> dict[str, Any]:
        return {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "m"}]}

    assert st.ready_transition(ready("True", "Live"), ready("False", "RollingOut")) is None
    assert st.ready_transition(ready("False", "RollingOut"), ready("True", "Live")) is None
    assert st.ready_transition({}, ready("False", "RollingOut")) is None  # a new policy, no sidecar counted
    assert st.ready_transition(ready("Unknown", "Pending"), ready("False", "RollingOut")) is None
    assert st.ready_transition(ready("False", "RollingOut"), ready("False", "Invalid")) is not None
    assert st.ready_transition(ready("True", "Live"), ready("False", "RolledBack")) is not None


def test_a_new_objects_first_ready_records_no_event_but_a_first_failure_does() -> None:
    def ready(status: str, reason: str) -> dict[str, Any]:
        return {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "m"}]}

    # The first status of a new object says Ready itself; an Event each would double a cold start's writes.
    assert st.ready_transition({}, ready("True", "Live")) is None
    invalid = st.ready_transition({}, ready("False", "Invalid"))
    assert invalid is not None and invalid["reason"] == "Invalid"
    assert st.ready_transition({}, ready("Unknown", "Pending")) is not None
    # Ready after waiting is a transition like any other.
    assert st.ready_transition(ready("Unknown", "Pending"), ready("True", "Live")) is not None
