"""`scripts/demo` on the real single-node cluster: images built here, the chart installed with helm, an
application pod with the injected sidecar sending traffic with the openai SDK, failover, fail-closed,
the operator's Events, and a clean-up that leaves no release, namespace or fake server behind.

Runs after test_chart.py (file order): that release is uninstalled by then, so the demo's operator is
the only one watching its namespace. The cluster stays up (the session fixture brought it up)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.chart.helm import run_helm
from tests.cluster.conftest import FIGURES, NodeCluster
from tests.e2e.test_demo import assert_the_demo_story
from tests.kube_harness import REPO, Kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def test_the_demo_runs_on_the_real_cluster_and_cleans_up(real_cluster: NodeCluster, ckubectl: Kubectl) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--cluster"],
        capture_output=True, text=True, timeout=540, cwd=REPO,
    )  # fmt: skip
    FIGURES["demo_on_cluster_s"] = round(time.monotonic() - t0, 1)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert_the_demo_story(out)
    assert "containers modelroute-router, app" in out, "the sidecar was injected into the app pod"
    assert "Done (real cluster)" in out
    # Cleaned up: no release, no demo namespaces (deletion may still be finishing: Terminating is fine).
    assert run_helm("status", "demo", "-n", "modelroute-demo", env=real_cluster.kubectl_env()).returncode != 0
    left = ckubectl.run("get", "namespace", "demo", "-o", "jsonpath={.status.phase}", check=False)
    assert left.returncode != 0 or left.stdout == "Terminating", left.stdout
