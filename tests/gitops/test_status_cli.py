"""`modelroute status` against the real API server: a real sidecar the operator keeps in sync, a pod
whose sidecar never answers (lagging), and a pod that is not Ready; exit 1 while anything lags, 0 once
everything is synced and healthy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import next_ip
from tests.gitops.live import live_version, start_sidecar
from tests.kube_harness import (
    ControlPlane,
    Kubectl,
    OperatorProcess,
    create_pod,
    free_port,
    new_namespace,
    set_pod_status,
    wait_for,
)
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def modelroute_status(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelroute_operator.runtime.cli", "status", *args],
        capture_output=True,
        text=True,
        env=plane.kubectl_env(),
        timeout=60,
    )


def policy_status(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return (kubectl.get("routingpolicy", "support", ns) or {}).get("status", {})


def row(table: str, *cells: str) -> bool:
    """Whether a line of `table` holds these cells in this order, separated by column spacing."""
    pattern = r"\s+".join(re.escape(c) for c in cells)
    return any(re.search(rf"^{pattern}(\s|$)", line) for line in table.splitlines())


def test_status_reports_sync_and_health(
    plane: ControlPlane, kubectl: Kubectl, gitops_operator: OperatorProcess, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "gitops-status")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    version = wait_for(lambda: live_version(kubectl, ns), "the live config")
    sidecar = start_sidecar(kubectl, ns, "app-0", tmp_path)
    try:
        wait_for(lambda: policy_status(kubectl, ns).get("sync") == "1/1", "1/1 synced")
        done = modelroute_status(plane, "-n", ns)
        assert done.returncode == 0, done.stdout + done.stderr
        assert row(done.stdout, "NAMESPACE", "POD", "READY", "VERSION", "SYNCED")
        assert row(done.stdout, ns, "app-0", "True", version, "SYNCED")
        assert row(done.stdout, ns, "RoutingPolicy", "support", "Healthy", "live; 1/1 sidecars synced")
        assert row(done.stdout, ns, "ModelEndpoint", "llama", "Healthy")
        assert row(done.stdout, ns, version, "1/1 synced", "2/2 healthy", "OK")

        # A Ready pod whose sidecar never answers, and a pod that is not Ready yet.
        create_pod(kubectl, ns, "app-stale", free_port())
        set_pod_status(kubectl, ns, "app-stale", next_ip(), True)
        create_pod(kubectl, ns, "app-starting", free_port())
        wait_for(lambda: policy_status(kubectl, ns).get("laggingPods") == ["app-stale"], "app-stale lagging")
        lagging = modelroute_status(plane, "-n", ns)
        assert lagging.returncode == 1, lagging.stdout + lagging.stderr
        assert row(lagging.stdout, ns, "app-0", "True", version, "SYNCED")
        assert row(lagging.stdout, ns, "app-stale", "True", "-", "STALE")
        assert row(lagging.stdout, ns, "app-starting", "False", "-", "NOT READY")
        assert row(
            lagging.stdout,
            ns,
            "RoutingPolicy",
            "support",
            "Progressing",
            "1/2 sidecars synced; lagging: app-stale",
        )
        assert row(lagging.stdout, ns, version, "1/2 synced (1 not ready)", "1/2 healthy", "NOT SYNCED")

        as_json = modelroute_status(plane, "-n", ns, "-o", "json")
        assert as_json.returncode == 1
        report = json.loads(as_json.stdout)
        assert report["ok"] is False
        assert {p["pod"]: p["sync"] for p in report["pods"]} == {
            "app-0": "SYNCED",
            "app-stale": "STALE",
            "app-starting": "NOT READY",
        }

        # Across all namespaces (other tests' namespaces show up too): ours is among them.
        everywhere = modelroute_status(plane)
        assert everywhere.returncode in (0, 1), everywhere.stderr
        assert row(everywhere.stdout, ns, "app-stale", "True", "-", "STALE")

        # --wait gives up at its timeout with the last report and what it waited on ...
        impatient = modelroute_status(plane, "-n", ns, "--wait", "--timeout", "2s")
        assert impatient.returncode == 1, impatient.stdout + impatient.stderr
        assert row(impatient.stdout, ns, "app-stale", "True", "-", "STALE")
        assert "error: timed out after 2s waiting on 1 of 1 namespace(s)" in impatient.stderr
        assert f"{ns} NOT SYNCED (pod app-stale STALE, RoutingPolicy support Progressing)" in impatient.stderr

        # ... and returns 0 as soon as the lagging pod goes away: everything is synced again.
        waiting = subprocess.Popen(
            [sys.executable, "-m", "modelroute_operator.runtime.cli", "status", "-n", ns, "--wait", "--timeout", "90s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=plane.kubectl_env(),
        )
        assert waiting.stderr is not None
        # It says what it waits on before we change anything (after a warning about the test kubeconfig).
        first_line = ""
        while "waiting on" not in first_line and waiting.poll() is None:
            first_line = waiting.stderr.readline()
        assert "s] waiting on 1 of 1 namespace(s)" in first_line and "app-stale STALE" in first_line
        kubectl.run("delete", "pod", "app-stale", "-n", ns, "--wait=false")
        waited_out, waited_err = waiting.communicate(timeout=90)
        assert waiting.returncode == 0, waited_out + first_line + waited_err
        assert row(waited_out, ns, version, "1/1 synced (1 not ready)", "2/2 healthy", "OK")
        assert "app-stale" not in waited_out
        wait_for(
            lambda: (s := policy_status(kubectl, ns)).get("sync") == "1/1" and s.get("laggingPods") == [],
            "1/1 synced again",
        )
        again = modelroute_status(plane, "-n", ns)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        sidecar.stop()


def test_status_without_a_cluster_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelroute_operator.runtime.cli", "status"],
        capture_output=True,
        text=True,
        env={"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cannot read the cluster" in proc.stderr
