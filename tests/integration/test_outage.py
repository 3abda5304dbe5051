"""The API server goes away and comes back: the operator rides it out (no crash, no crash loop) and
converges again on what changed meanwhile."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube_harness import Kubectl, OperatorProcess, new_namespace, running_control_plane, wait_for
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def version(kubectl: Kubectl, ns: str) -> str:
    cm = kubectl.get("configmap", "modelroute-router-config", ns)
    return str(cm["metadata"]["annotations"]["modelroute.dev/config-version"]) if cm else ""


def test_operator_survives_an_api_server_outage(tmp_path: Path) -> None:
    with running_control_plane(tmp_path / "cp") as plane:  # a private control plane: this test stops it
        kubectl = Kubectl(plane)
        kubectl.run("apply", "--server-side", "-f", "crds/")
        kubectl.run("wait", "--for=condition=Established", "crd", "--all")
        wait_for(lambda: kubectl.run("get", "modelroute", "-A", check=False).returncode == 0, "discovery")
        ns = new_namespace(kubectl, "outage")
        op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
        op.start()
        try:
            kubectl.apply(to_yaml(endpoint(), policy()), ns)
            first = wait_for(lambda: version(kubectl, ns), "the first config")

            plane.stop_apiserver()
            offset = len(op.log())
            # The operator notices (its watches fail) and keeps running.
            wait_for(lambda: len(op.log()) > offset, "the operator to notice the outage", 60)
            assert op.proc is not None and op.proc.poll() is None

            plane.start_apiserver()
            kubectl.apply(to_yaml(policy(models=["support-bot", "after-outage"])), ns)
            second = wait_for(
                lambda: (v := version(kubectl, ns)) not in ("", first) and v,
                "a config after the outage",
                90,
            )
            assert second != first
            assert op.proc.poll() is None, "the operator must not have exited"
        finally:
            op.stop()
