"""`helm install`, `upgrade` and `uninstall` against the real API server.

The chart renders no webhook certificate: the caBundle the operator patches in (done here by hand, as
`runtime.cert_keeper` does, since no operator runs) survives `helm upgrade` and a re-apply of `helm template`
output as Argo CD does it, because neither manifest names the field; `uninstall` removes the
cluster-scoped objects and keeps the CRDs.
The release watches only fresh namespaces, so its webhooks (no server behind them here) never see
another test's objects.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.helm import CHART, run_helm
from tests.kube_harness import ControlPlane, Kubectl, new_namespace

pytestmark = pytest.mark.integration


def helm(plane: ControlPlane, *args: str) -> str:
    proc = run_helm(*args, env=plane.kubectl_env())
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def ca_bundles(kubectl: Kubectl, name: str) -> set[str]:
    bundles: set[str] = set()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        config: dict[str, Any] = kubectl.json("get", kind, name)
        bundles |= {w["clientConfig"]["caBundle"] for w in config["webhooks"]}
    return bundles


@pytest.fixture
def release(plane: ControlPlane, kubectl: Kubectl) -> Iterator[tuple[str, str, str]]:
    """(release name, release namespace, watched namespace); uninstalled afterwards whatever happens."""
    name = f"inst{os.getpid() % 10000}"
    ns = new_namespace(kubectl, "chart-install")
    watched = new_namespace(kubectl, "chart-install-w")
    yield name, ns, watched
    run_helm("uninstall", name, "-n", ns, "--wait=false", env=plane.kubectl_env())


def patch_ca_bundles(kubectl: Kubectl, name: str, bundle: str) -> None:
    """What the operator's certificate keeper does: a JSON patch of each webhook's caBundle."""
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        config: dict[str, Any] = kubectl.json("get", kind, name)
        ops = [
            {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
            for i in range(len(config["webhooks"]))
        ]
        kubectl.run("patch", kind, name, "--type=json", "-p", json.dumps(ops))


def test_install_upgrade_keeps_the_operators_ca_bundle_and_uninstall_keeps_the_crds(
    plane: ControlPlane, kubectl: Kubectl, release: tuple[str, str, str]
) -> None:
    name, ns, watched = release
    fullname = f"{name}-modelroute"
    notes = helm(plane, "install", name, str(CHART), "-n", ns, "--set", f"watchNamespaces={{{watched}}}")
    for line in (
        f"Watching: {watched} (RBAC: a Role in each watched namespace)",
        "kubectl label namespace <namespace> modelroute.dev/inject=enabled",
        f"Certificate: kept by the operator in Secret {ns}/{fullname}-webhook-tls",
        "kubectl delete crd modelendpoints.modelroute.dev",
    ):
        assert line in notes, f"NOTES lack {line!r}:\n{notes}"
    assert kubectl.get("secret", f"{fullname}-webhook-tls", ns) is None, "the operator makes it"
    bundle = "bm90LWEtcmVhbC1jYQ=="  # what the keeper would write (base64); no webhook is called here
    patch_ca_bundles(kubectl, fullname, bundle)
    assert ca_bundles(kubectl, fullname) == {bundle}
    deployment = kubectl.get("deployment", fullname, ns)
    assert deployment is not None and deployment["spec"]["replicas"] == 2

    helm(plane, "upgrade", name, str(CHART), "-n", ns, "--reuse-values", "--set", "replicaCount=3")
    assert ca_bundles(kubectl, fullname) == {bundle}, "the upgrade must keep the operator's caBundle"
    # Argo CD's way: the rendered manifests applied again (client-side apply, a three-way merge)
    rendered = helm(plane, "template", name, str(CHART), "-n", ns, "--set", f"watchNamespaces={{{watched}}}",
                    "--set", "replicaCount=3", "--show-only", "templates/webhook.yaml")  # fmt: skip
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=rendered)
    assert ca_bundles(kubectl, fullname) == {bundle}, "a re-apply of the render must keep it too"
    upgraded = kubectl.get("deployment", fullname, ns)
    assert upgraded is not None and upgraded["spec"]["replicas"] == 3

    helm(plane, "uninstall", name, "-n", ns)
    assert kubectl.run("get", "validatingwebhookconfiguration", fullname, check=False).returncode != 0
    assert kubectl.run("get", "clusterrole", f"{fullname}-discovery", check=False).returncode != 0
    crds = kubectl.run("get", "crd", "-o", "name").stdout
    for crd in ("modelendpoints", "routingpolicies", "modelcanaries"):
        assert f"{crd}.modelroute.dev" in crds, "CRDs stay after uninstall"
