"""GitOps behaviour of every example, as Argo CD meets it: server-side apply twice changes nothing,
`kubectl diff --server-side` is empty after the first apply, the stored objects hold exactly what the
manifests set (no defaulting, so no drift), the operator adds nothing to them, and
`kubectl wait --for=condition=Ready` works on every modelroute object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitops.argo_lua import run_health
from tests.kube_harness import REPO, Kubectl, OperatorProcess, new_namespace, resource_name

pytestmark = pytest.mark.integration

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
MANAGER = "argocd-controller"
"""The field manager Argo CD's server-side sync uses."""
OUR_KINDS = {"ModelEndpoint", "RoutingPolicy", "Canary"}
SERVER_METADATA = {"namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"}
"""What the API server adds to every object's metadata."""


def manifests(example: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(example.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def apply(kubectl: Kubectl, ns: str, example: Path) -> None:
    kubectl.run("apply", "-n", ns, "--server-side", f"--field-manager={MANAGER}", "-f", str(example))


def diff(kubectl: Kubectl, ns: str, example: Path) -> str:
    """`kubectl diff` output; exit 0 means no difference, 1 a difference, anything else an error."""
    proc = kubectl.run(
        "diff", "-n", ns, "--server-side", f"--field-manager={MANAGER}", "-f", str(example), check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout if proc.returncode else ""


def stored(kubectl: Kubectl, ns: str, example: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for doc in manifests(example):
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        live = kubectl.get(resource_name(doc["kind"]), doc["metadata"]["name"], ns)
        assert live is not None, key
        out[key] = live
    return out


def versions(objects: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int | None]]:
    """resourceVersion and generation (Secrets have none) of each object."""
    return {
        k: (o["metadata"]["resourceVersion"], o["metadata"].get("generation")) for k, o in objects.items()
    }


def assert_no_drift(manifest: dict[str, Any], live: dict[str, Any]) -> None:
    """The stored object holds what the manifest set and nothing else beyond server metadata."""
    key = f"{manifest['kind']}/{manifest['metadata']['name']}"
    assert set(live) - {"status"} == set(manifest), key
    assert live["spec"] == manifest["spec"], f"{key}: the API server changed or defaulted the spec"
    extra = set(live["metadata"]) - set(manifest["metadata"]) - SERVER_METADATA
    assert not extra, f"{key}: metadata the manifest did not set: {extra}"
    for field in ("labels", "annotations", "finalizers", "ownerReferences"):
        assert live["metadata"].get(field) == manifest["metadata"].get(field), f"{key}: {field}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_apply_twice_changes_nothing(kubectl: Kubectl, example: Path) -> None:
    # An unwatched namespace: no status writes, so any change would come from the apply itself.
    ns = new_namespace(kubectl, "idem-" + example.name[:20])
    apply(kubectl, ns, example)
    assert diff(kubectl, ns, example) == ""
    first = stored(kubectl, ns, example)
    apply(kubectl, ns, example)
    second = stored(kubectl, ns, example)
    assert versions(second) == versions(first)
    for doc in manifests(example):
        if doc["kind"] in OUR_KINDS:
            assert_no_drift(doc, second[f"{doc['kind']}/{doc['metadata']['name']}"])


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_becomes_ready_and_stays_in_sync(
    kubectl: Kubectl, gitops_operator: OperatorProcess, example: Path
) -> None:
    ns = new_namespace(kubectl, "gitops-" + example.name[:20])
    apply(kubectl, ns, example)
    ours = [d for d in manifests(example) if d["kind"] in OUR_KINDS]
    names = [f"{resource_name(d['kind'])}/{d['metadata']['name']}" for d in ours]
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", *names, "--timeout=60s")
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", "modelroute", "--all", "--timeout=10s")

    # The operator wrote status only: the manifests still match, a re-sync is a no-op.
    assert diff(kubectl, ns, example) == ""
    before = stored(kubectl, ns, example)
    apply(kubectl, ns, example)
    after = stored(kubectl, ns, example)
    for doc in ours:
        key = f"{doc['kind']}/{doc['metadata']['name']}"
        assert after[key]["metadata"]["generation"] == before[key]["metadata"]["generation"], key
        assert_no_drift(doc, after[key])
        # Argo CD's view right after the sync: nothing is broken (a canary is still on its way).
        assert run_health(after[key])["status"] in {"Healthy", "Progressing"}, key
