"""The Argo CD health checks judge real objects: a real operator writes their status on the real API
server, the test reads them with kubectl and runs the Lua scripts as Argo CD would. Every kind is seen
Healthy, Progressing and Degraded (and a paused canary Suspended); `modelroute status` agrees on each.

With UPDATE_FIXTURES=1 the objects are kept in fixtures/ for the offline tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelroute_operator.logic.status_report import object_health
from tests.e2e.conftest import next_ip
from tests.gitops.argo_lua import run_health
from tests.gitops.live import capture, live_version, start_sidecar
from tests.kube_harness import (
    Kubectl,
    OperatorProcess,
    UpstreamProcess,
    create_pod,
    free_port,
    new_namespace,
    set_pod_status,
    wait_for,
)
from tests.manifests import canary, endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def judged(obj: dict[str, Any], expected: str, fixture: str) -> dict[str, str]:
    """Run the Lua check on a real object, check the CLI's verdict is the same, keep it as a fixture."""
    verdict = run_health(obj)
    assert verdict["status"] == expected, (verdict, obj.get("status"))
    python = object_health(obj)
    assert (python.status.value, python.message) == (verdict["status"], verdict["message"])
    capture(fixture, obj)
    return verdict


def ready_reason(obj: dict[str, Any] | None) -> str | None:
    for condition in (obj or {}).get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return str(condition["reason"])
    return None


def observed(obj: dict[str, Any] | None) -> bool:
    """Status describes the current generation."""
    if not obj:
        return False
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def probed_endpoint(name: str, urls: dict[str, str]) -> dict[str, Any]:
    """An endpoint probed every second; one failed probe marks a replica unhealthy."""
    obj = endpoint(name, regions={region: [] for region in urls})
    for replica in obj["spec"]["replicas"]:
        replica["url"] = urls[replica["region"]]
    obj["spec"]["healthCheck"] = {
        "path": "/v1/models",
        "interval": "1s",
        "timeout": "500ms",
        "healthyThreshold": 1,
        "unhealthyThreshold": 1,
    }
    return obj


def test_model_endpoint_health(kubectl: Kubectl, gitops_operator: OperatorProcess, tmp_path: Path) -> None:
    # No operator watches `idem-*`: the object the API server stores has no status yet.
    unwatched = new_namespace(kubectl, "idem-health")
    kubectl.apply(to_yaml(endpoint()), unwatched)
    judged(kubectl.get("modelendpoint", "llama", unwatched) or {}, "Progressing", "modelendpoint-no-status")

    upstream = UpstreamProcess("eu", free_port(), tmp_path / "upstream.log")
    upstream.start()
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused
    try:
        ns = new_namespace(kubectl, "gitops-endpoint")
        kubectl.apply(
            to_yaml(
                probed_endpoint("llama", {"eu-west-1": upstream.url, "us-east-1": closed}),
                probed_endpoint("mistral", {"eu-west-1": closed, "us-east-1": closed}),
                policy(endpoint_name="llama"),
            ),
            ns,
        )
        # One replica of two unhealthy: still Ready (traffic avoids it), so Healthy, naming it.
        partial = wait_for(
            lambda: (
                (o := kubectl.get("modelendpoint", "llama", ns))
                and observed(o)
                and o["status"].get("readySummary") == "1/2"
                and ready_reason(o) == "Live"
                and o
            ),
            "llama with 1/2 replicas ready",
        )
        verdict = judged(partial, "Healthy", "modelendpoint-partly-unhealthy")
        assert verdict["message"] == (
            "1/2 replicas ready (eu-west-1=1/1,us-east-1=0/1); unhealthy: us-east-1"
        )
        # Every replica unhealthy: Ready=False/Unavailable.
        down = wait_for(
            lambda: (
                (o := kubectl.get("modelendpoint", "mistral", ns)) and ready_reason(o) == "Unavailable" and o
            ),
            "mistral Unavailable",
        )
        verdict = judged(down, "Degraded", "modelendpoint-unavailable")
        assert verdict["message"].startswith("Unavailable: every replica is unhealthy")
    finally:
        upstream.kill()


def test_routing_policy_health(kubectl: Kubectl, gitops_operator: OperatorProcess, tmp_path: Path) -> None:
    ns = new_namespace(kubectl, "gitops-policy")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    version = wait_for(lambda: live_version(kubectl, ns), "the live config")
    sidecar = start_sidecar(kubectl, ns, "app-0", tmp_path)
    try:
        synced = wait_for(
            lambda: (
                (o := kubectl.get("routingpolicy", "support", ns))
                and o["status"].get("sync") == "1/1"
                and o["status"].get("configVersion") == version
                and o["status"].get("syncedVersion") == version
                and o
            ),
            "the policy synced to 1/1",
        )
        verdict = judged(synced, "Healthy", "routingpolicy-synced")
        assert verdict["message"] == "live; 1/1 sidecars synced"

        # A Ready pod whose sidecar does not answer: the operator reports it lagging.
        create_pod(kubectl, ns, "app-stale", free_port())
        set_pod_status(kubectl, ns, "app-stale", next_ip(), True)
        lagging = wait_for(
            lambda: (
                (o := kubectl.get("routingpolicy", "support", ns))
                and o["status"].get("laggingPods") == ["app-stale"]
                and o
            ),
            "app-stale lagging",
        )
        verdict = judged(lagging, "Progressing", "routingpolicy-lagging")
        assert verdict["message"] == "1/2 sidecars synced; lagging: app-stale"
    finally:
        sidecar.stop()

    # A rule naming a missing endpoint: the policy is Invalid, the valid endpoint beside it Blocked.
    broken = new_namespace(kubectl, "gitops-broken")
    kubectl.apply(to_yaml(endpoint(), policy(endpoint_name="gpt-missing")), broken)
    invalid = wait_for(
        lambda: (o := kubectl.get("routingpolicy", "support", broken)) and ready_reason(o) == "Invalid" and o,
        "the policy Invalid",
    )
    verdict = judged(invalid, "Degraded", "routingpolicy-invalid")
    assert "gpt-missing" in verdict["message"]
    blocked = wait_for(
        lambda: (o := kubectl.get("modelendpoint", "llama", broken)) and ready_reason(o) == "Blocked" and o,
        "the endpoint Blocked",
    )
    verdict = judged(blocked, "Progressing", "modelendpoint-blocked")
    assert "RoutingPolicy/support" in verdict["message"]


def test_canary_health(kubectl: Kubectl, gitops_operator: OperatorProcess) -> None:
    ns = new_namespace(kubectl, "gitops-canary")
    kubectl.apply(to_yaml(endpoint(), endpoint("llama-next"), policy(), canary()), ns)

    def phase(expected: str) -> dict[str, Any]:
        return wait_for(
            lambda: (
                (o := kubectl.get("modelcanary", "llama-next", ns))
                and observed(o)
                and o["status"].get("phase") == expected
                and o
            ),
            f"canary {expected}",
        )

    def set_spec(**fields: bool) -> None:
        patch = json.dumps({"spec": fields})
        kubectl.run("patch", "modelcanary", "llama-next", "-n", ns, "--type=merge", "-p", patch)

    verdict = judged(phase("Progressing"), "Progressing", "canary-progressing")
    assert verdict["message"] == "step 1/2: 10% to llama-next"

    set_spec(paused=True)
    verdict = judged(phase("Paused"), "Suspended", "canary-paused")
    assert verdict["message"] == "paused at step 1/2: 10% to llama-next"

    set_spec(paused=False, abort=True)
    verdict = judged(phase("RolledBack"), "Degraded", "canary-rolled-back")
    assert verdict["message"] == "rolled back to llama: aborted by spec.abort"

    set_spec(abort=False, promote=True)
    verdict = judged(phase("Promoted"), "Healthy", "canary-promoted")
    assert verdict["message"] == "promoted: 100% to llama-next; name it stable in the RoutingPolicy"

    # A canary naming an endpoint that does not exist is Invalid.
    kubectl.apply(to_yaml(canary("ghost", candidate="llama-ghost")), ns)
    invalid = wait_for(
        lambda: (o := kubectl.get("modelcanary", "ghost", ns)) and ready_reason(o) == "Invalid" and o,
        "the ghost canary Invalid",
    )
    verdict = judged(invalid, "Degraded", "canary-invalid")
    assert "llama-ghost" in verdict["message"]
