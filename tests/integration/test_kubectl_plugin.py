"""`kubectl modelroute` as users run it: kubectl finds the plugin on PATH, `--version`, `--context` and
`--kubeconfig` pick the cluster, and canary pause/resume/abort act on a running Canary applied the way
Argo CD applies it, while the spec stays exactly what Git holds (no diff, same generation, so a GitOps
tool neither shows drift nor reverts the action)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_harness import REPO, ControlPlane, Kubectl, OperatorProcess, new_namespace, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "canary-rollout"
MANAGER = "argocd-controller"
BIN = Path(sys.executable).parent
"""Where the package's console scripts are (`kubectl-modelroute` among them)."""


def plugin_env(plane: ControlPlane) -> dict[str, str]:
    env = plane.kubectl_env()
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def two_context_kubeconfig(plane: ControlPlane, path: Path) -> tuple[Path, str]:
    """The plane's kubeconfig plus a broken context made current; returns it and the working context."""
    config: dict[str, Any] = yaml.safe_load(plane.kubeconfig.read_text())
    working = config["current-context"]
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}})
    config["contexts"].append(
        {"name": "broken", "context": {"cluster": "nowhere", "user": config["users"][0]["name"]}}
    )
    config["current-context"] = "broken"
    path.write_text(yaml.safe_dump(config))
    return path, working


def phase(kubectl: Kubectl, ns: str) -> str:
    body = kubectl.get("modelcanary", "support-llm-v2", ns) or {}
    return str((body.get("status") or {}).get("phase", ""))


def test_the_plugin_acts_on_a_canary_without_touching_its_spec(
    plane: ControlPlane, kubectl: Kubectl, tmp_path: Path
) -> None:
    env = plugin_env(plane)

    def kubectl_plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(plane.bin_dir / "kubectl"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    found = kubectl_plugin("plugin", "list")
    assert str(BIN / "kubectl-modelroute") in found.stdout, found.stdout + found.stderr
    version = kubectl_plugin("modelroute", "--version")
    assert version.returncode == 0 and version.stdout.startswith("kubectl modelroute 0."), version

    ns = new_namespace(kubectl, "gitops-plugin")
    op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
    op.start()
    try:
        kubectl.run("apply", "-n", ns, "--server-side", f"--field-manager={MANAGER}", "-f", str(EXAMPLE))
        wait_for(lambda: phase(kubectl, ns) == "Progressing", "the canary to start", 60)
        before = kubectl.get("modelcanary", "support-llm-v2", ns)
        assert before is not None
        config, working = two_context_kubeconfig(plane, tmp_path / "kubeconfig")

        # the current context of that file is broken: only --context reaches the cluster
        refused = kubectl_plugin(
            "modelroute", "--kubeconfig", str(config), "canary", "pause", "support-llm-v2", "-n", ns
        )
        assert refused.returncode != 0
        paused = kubectl_plugin(
            "modelroute",
            "canary",
            "pause",
            "support-llm-v2",
            "-n",
            ns,
            "--kubeconfig",
            str(config),
            "--context",
            working,
        )
        assert paused.returncode == 0, paused.stderr
        assert f"canary {ns}/support-llm-v2: pause requested" in paused.stdout
        wait_for(lambda: phase(kubectl, ns) == "Paused", "the canary to pause", 30)
        body = kubectl.get("modelcanary", "support-llm-v2", ns)
        assert body is not None
        assert body["status"]["history"][-1]["message"].startswith("paused by kubectl modelroute")
        assert body["status"]["manual"]["paused"] is True

        resumed = kubectl_plugin("modelroute", "canary", "resume", "support-llm-v2", "-n", ns)
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: phase(kubectl, ns) == "Progressing", "the canary to resume", 30)
        aborted = kubectl_plugin("modelroute", "canary", "abort", "support-llm-v2", "-n", ns)
        assert aborted.returncode == 0, aborted.stderr
        wait_for(lambda: phase(kubectl, ns) == "RolledBack", "the canary to roll back", 30)

        # Git's view: the spec and generation are as applied, and a diff shows nothing
        after = kubectl.get("modelcanary", "support-llm-v2", ns)
        assert after is not None
        assert (after["spec"], after["metadata"]["generation"]) == (
            before["spec"],
            before["metadata"]["generation"],
        )
        diff = kubectl.run(
            "diff", "-n", ns, "--server-side", f"--field-manager={MANAGER}", "-f", str(EXAMPLE), check=False
        )
        assert diff.returncode == 0, diff.stdout
        fields = kubectl.json("get", "modelcanary", "support-llm-v2", "-n", ns, "--show-managed-fields")
        managers = {
            m["manager"] for m in fields["metadata"]["managedFields"] if m.get("subresource") == "status"
        }
        assert "kubectl-modelroute" in managers

        missing = kubectl_plugin("modelroute", "canary", "promote", "no-such-canary", "-n", ns)
        assert missing.returncode == 1 and "not found" in missing.stderr
        assert json.loads(kubectl.run("get", "modelcanary", "-n", ns, "-o", "json").stdout)["items"]
    finally:
        op.stop(timeout=2)
