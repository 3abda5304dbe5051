"""The Argo CD health scripts, offline: real objects captured from the integration suite (fixtures/)
and small hand-made ones, run in the environment Argo CD gives them (Lua 5.1, base and table only).
`modelroute status` must reach the same verdict with the same message on every one."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from lupa.lua51 import LuaError

from modelroute_operator.logic.status_report import object_health
from tests.gitops.argo_lua import KINDS, new_runtime, run_health, script_path
from tests.gitops.live import FIXTURES

EXPECTED = {
    "modelendpoint-no-status": "Progressing",
    "modelendpoint-partly-unhealthy": "Healthy",
    "modelendpoint-unavailable": "Degraded",
    "modelendpoint-blocked": "Progressing",
    "routingpolicy-synced": "Healthy",
    "routingpolicy-lagging": "Progressing",
    "routingpolicy-invalid": "Degraded",
    "canary-progressing": "Progressing",
    "canary-paused": "Suspended",
    "canary-promoted": "Healthy",
    "canary-rolled-back": "Degraded",
    "canary-invalid": "Degraded",
}


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


def test_each_kind_is_seen_healthy_progressing_and_degraded() -> None:
    seen = {(fixture(name)["kind"], status) for name, status in EXPECTED.items()}
    for kind in KINDS:
        assert {"Healthy", "Progressing", "Degraded"} <= {s for k, s in seen if k == kind}, kind


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_script_on_captured_object(name: str, expected: str) -> None:
    obj = fixture(name)
    verdict = run_health(obj)
    assert verdict["status"] == expected, verdict
    assert verdict["message"]
    python = object_health(obj)
    assert (python.status.value, python.message) == (verdict["status"], verdict["message"])


# ------------------------------------------------------------------------- hand-made edge cases


def ready(status: str, reason: str, message: str = "why") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message, "observedGeneration": 1}


def obj(kind: str, status: dict[str, Any] | None, generation: int = 1, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


CASES = [
    # (id, object, status, message)
    (
        "endpoint-empty-status",
        obj("ModelEndpoint", {}),
        "Progressing",
        "waiting for the modelroute operator to observe generation 1",
    ),
    (
        "endpoint-old-generation",
        obj("ModelEndpoint", {"observedGeneration": 1, "conditions": [ready("True", "Live")]}, generation=2),
        "Progressing",
        "waiting for the modelroute operator to observe generation 2",
    ),
    (
        "endpoint-no-ready-condition",
        obj("ModelEndpoint", {"observedGeneration": 1, "conditions": []}),
        "Progressing",
        "waiting for the Ready condition",
    ),
    (
        "endpoint-pending",
        obj("ModelEndpoint", {"observedGeneration": 1, "conditions": [ready("Unknown", "Pending", "wait")]}),
        "Progressing",
        "Pending: wait",
    ),
    (
        "endpoint-invalid",
        obj(
            "ModelEndpoint",
            {"observedGeneration": 1, "conditions": [ready("False", "Invalid", "spec.x: bad")]},
        ),
        "Degraded",
        "Invalid: spec.x: bad",
    ),
    (
        "endpoint-healthy-without-figures",
        obj("ModelEndpoint", {"observedGeneration": 1, "conditions": [ready("True", "Live")]}),
        "Healthy",
        "? replicas ready ()",
    ),
    (
        "policy-live-no-sync-yet",
        obj("RoutingPolicy", {"observedGeneration": 1, "conditions": [ready("True", "Live")]}),
        "Progressing",
        "live; waiting for the sidecar sync figure",
    ),
    (
        "policy-no-sidecars",
        obj("RoutingPolicy", {"observedGeneration": 1, "conditions": [ready("True", "Live")], "sync": "0/0"}),
        "Healthy",
        "live; 0/0 sidecars synced",
    ),
    (
        "policy-figure-of-an-older-config",
        obj(
            "RoutingPolicy",
            {
                "observedGeneration": 1,
                "conditions": [ready("True", "Live")],
                "configVersion": "new",
                "syncedVersion": "old",
                "sync": "3/3",
                "laggingPods": [],
            },
        ),
        "Progressing",
        "live; waiting for the sidecars to be counted on this config",
    ),
    (
        "policy-blocked",
        obj("RoutingPolicy", {"observedGeneration": 1, "conditions": [ready("False", "Blocked", "b")]}),
        "Progressing",
        "Blocked: b",
    ),
    (
        "canary-no-phase",
        obj("Canary", {"observedGeneration": 1, "conditions": [ready("True", "Live")]}),
        "Progressing",
        "waiting for the canary controller to start",
    ),
    (
        "canary-invalid-wins-over-phase",
        obj(
            "Canary",
            {"observedGeneration": 1, "conditions": [ready("False", "Invalid", "c")], "phase": "Promoted"},
        ),
        "Degraded",
        "Invalid: c",
    ),
    (
        "canary-rolled-back-without-history",
        obj(
            "Canary",
            {"observedGeneration": 1, "conditions": [ready("True", "Live")], "phase": "RolledBack"},
            stable="a",
        ),
        "Degraded",
        "rolled back to a: rolled back",
    ),
    (
        "canary-mirroring",
        obj(
            "Canary",
            {"observedGeneration": 1, "conditions": [ready("True", "Live")], "phase": "Mirroring"},
            candidate="next",
            steps=[{"weight": 10}, {"weight": 50}],
            mirror={"percent": 50},
        ),
        "Progressing",
        "mirroring the route's requests to next before step 1/2",
    ),
    (
        "canary-unknown-phase",
        obj("Canary", {"observedGeneration": 1, "conditions": [ready("True", "Live")], "phase": "Exploded"}),
        "Unknown",
        "unknown phase Exploded",
    ),
]


@pytest.mark.parametrize(("body", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_script_on_edge_case(body: dict[str, Any], status: str, message: str) -> None:
    assert run_health(body) == {"status": status, "message": message}
    python = object_health(body)
    assert (python.status.value, python.message) == (status, message)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scripts_survive_missing_fields(name: str) -> None:
    """Remove each status field in turn: the script still answers with a valid status (never errors,
    which Argo CD would show as an error on the resource)."""
    original = fixture(name)
    for key in list(original.get("status", {})):
        body = copy.deepcopy(original)
        del body["status"][key]
        run_health(body)  # raises on an error or an invalid status


@pytest.mark.parametrize("kind", KINDS)
def test_script_needs_no_standard_library(kind: str) -> None:
    """The sandbox really is Argo CD's: `string` and string methods are not there."""
    lua = new_runtime()
    for probe in ('return string.format("%d", 1)', 'return ("x"):upper()', "return math.floor(1.5)"):
        with pytest.raises(LuaError, match=r"nil value|attempt to index"):
            lua.execute(probe)
    assert script_path(kind).read_text().startswith("-- Argo CD health check for modelroute.dev")
