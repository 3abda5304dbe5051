"""Two operator replicas at once: only the Lease holder acts; the standby takes over when it goes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.kube_harness import ControlPlane, Kubectl, OperatorProcess, new_namespace, wait_for
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def config_version(kubectl: Kubectl, ns: str) -> str:
    cm = kubectl.get("configmap", "modelroute-router-config", ns)
    return str(cm["metadata"]["annotations"]["modelroute.dev/config-version"]) if cm else ""


def leads(op: OperatorProcess) -> bool:
    return " leads (lease " in op.log()


def test_only_the_leader_acts_and_a_standby_takes_over(
    plane: ControlPlane, kubectl: Kubectl, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "ha")
    lease = ["--leader-elect", "--lease-namespace", ns, "--lease-seconds", "4"]
    first = OperatorProcess(plane, tmp_path / "a.log", namespaces=[ns], extra_args=lease)
    second = OperatorProcess(plane, tmp_path / "b.log", namespaces=[ns], extra_args=lease)
    first.start()
    wait_for(lambda: leads(first), "the first replica to lead")
    second.start()
    try:
        wait_for(lambda: "is standby" in second.log(), "the second replica to stand by")
        kubectl.apply(to_yaml(endpoint(), policy()), ns)
        wait_for(lambda: config_version(kubectl, ns), "the leader to compile")
        # the pass logs its line after its ConfigMap write: poll for it rather than race the version
        wait_for(lambda: f"pass {ns}:" in first.log(), "the leader's pass in its log")
        assert f"pass {ns}:" not in second.log(), "a standby must not act"

        # A clean stop releases the Lease: the standby takes over and acts on the next change.
        first.stop()
        wait_for(lambda: leads(second), "the standby to take over", 15)
        before = config_version(kubectl, ns)
        kubectl.apply(to_yaml(policy(models=["support-bot", "after-failover"])), ns)
        wait_for(lambda: config_version(kubectl, ns) not in ("", before), "the new leader to compile", 20)

        # A crash (no release): a fresh standby takes over once the lease expires.
        third = OperatorProcess(plane, tmp_path / "c.log", namespaces=[ns], extra_args=lease)
        third.start()
        wait_for(lambda: "is standby" in third.log(), "the third replica to stand by")
        assert second.proc is not None
        os.killpg(second.proc.pid, signal.SIGKILL)
        second.proc.wait()
        wait_for(lambda: leads(third), "the standby to take over after the lease expired", 20)
        before = config_version(kubectl, ns)
        kubectl.apply(to_yaml(policy(models=["support-bot", "after-crash"])), ns)
        wait_for(lambda: config_version(kubectl, ns) not in ("", before), "the third leader to compile", 20)
        third.stop()
    finally:
        first.stop()
        second.stop()
