"""The install command in docs/argocd/README.md, run as written against the real API server: it adds
the three health-check keys to an existing `argocd-cm` without touching the keys already there, and a
second run changes nothing."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.gitops.argo_lua import KINDS, script_path
from tests.kube_harness import REPO, Kubectl, new_namespace

pytestmark = pytest.mark.integration

README = REPO / "docs" / "argocd" / "README.md"


def install_command() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "no sh block in the README"
    return str(blocks[0])


def run_install(kubectl: Kubectl, namespace: str) -> None:
    env = {**kubectl.plane.kubectl_env(), "ARGOCD_NAMESPACE": namespace}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", install_command()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_readme_install_adds_the_health_checks(kubectl: Kubectl) -> None:
    ns = new_namespace(kubectl, "argocd")
    # An argocd-cm as an Argo CD install leaves it, owned by another manager.
    kubectl.run("create", "configmap", "argocd-cm", "-n", ns, "--from-literal=url=https://argocd.example")
    run_install(kubectl, ns)
    cm = kubectl.get("configmap", "argocd-cm", ns)
    assert cm is not None
    assert cm["data"]["url"] == "https://argocd.example"
    for kind in KINDS:
        key = f"resource.customizations.health.modelroute.dev_{kind}"
        assert cm["data"][key] == script_path(kind).read_text(), key
    version = cm["metadata"]["resourceVersion"]
    run_install(kubectl, ns)
    again = kubectl.get("configmap", "argocd-cm", ns)
    assert again is not None and again["metadata"]["resourceVersion"] == version
