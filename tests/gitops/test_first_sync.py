"""Argo CD's first sync of every example, with the chart's default webhook settings, in one pass.

gitops-engine first dry-runs every object on the server (admission webhooks included), then applies them
in its order: known kinds by their rank (Secret early), our kinds (rank 0) sorted by kind name, then by
object name: Canary, ModelEndpoint, RoutingPolicy. So a Canary is sent before the policy and endpoints
it names, and in the dry run every reference points at an object the same sync has not made yet. Both
must pass admission; the operator then makes every object Ready without another sync.

The webhook server runs as the chart configures it (its env for missing references and deletes) on
127.0.0.1; its configurations select only this module's namespaces and fail closed, so a pass cannot come
from the webhook being skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelroute_operator.logic.registration import webhook_configurations
from modelroute_operator.runtime.certificates import generate_certificates
from tests.chart.helm import DEFAULT_VALUES, env_of, render
from tests.integration.test_webhooks import apply_cluster_object, dry_run_create, healthy
from tests.kube_harness import (
    REPO,
    ControlPlane,
    Kubectl,
    OperatorProcess,
    free_port,
    new_namespace,
    resource_name,
    wait_for,
)
from tests.manifests import policy

pytestmark = pytest.mark.integration

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
SCOPE_LABEL = "modelroute-test/first-sync"
KIND_RANK = {"Namespace": -35, "Secret": -28, "ConfigMap": -27}
"""gitops-engine's rank of the kinds the examples hold besides ours (custom kinds rank 0)."""


def sync_order(example: Path) -> list[dict[str, Any]]:
    """The example's objects in gitops-engine's apply order."""
    docs = [d for p in sorted(example.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    return sorted(docs, key=lambda d: (KIND_RANK.get(d["kind"], 0), d["kind"], d["metadata"]["name"]))


@pytest.fixture(scope="module")
def chart_webhook(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The webhook server with the chart's default settings, registered for namespaces of one label."""
    chart_env = env_of(render(DEFAULT_VALUES).container())
    settings = {
        k: v for k, v in chart_env.items() if k.startswith("MODELROUTE_WEBHOOK_") and "REFERENCE" in k
    }
    assert set(settings) == {"MODELROUTE_WEBHOOK_MISSING_REFERENCES", "MODELROUTE_WEBHOOK_REFERENCED_DELETES"}
    workdir = tmp_path_factory.mktemp("first-sync")
    certs = generate_certificates(workdir / "certs", ["127.0.0.1"])
    port = free_port()
    with (workdir / "webhook.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelroute_operator.runtime.webhook_server", "serve",
             "--webhook-host=127.0.0.1", f"--webhook-port={port}", f"--webhook-cert-file={certs.cert_file}",
             f"--webhook-key-file={certs.key_file}", "--sidecar-image=example/sidecar:test"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**plane.kubectl_env(), **settings, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    scope = f"s{os.getpid()}-{secrets.token_hex(3)}"
    name = f"modelroute-test-{scope}"
    try:
        wait_for(lambda: proc.poll() is None and healthy(port, certs.ca_file), "the webhook server", 30)
        validating, _ = webhook_configurations(
            name,
            f"https://127.0.0.1:{port}",
            certs.ca_bundle,
            {SCOPE_LABEL: scope},
            validation_failure_policy="Fail",
        )
        apply_cluster_object(kubectl, validating)
        yield scope
    finally:
        kubectl.run("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_first_sync_in_gitops_engine_order_passes_admission_in_one_pass(
    kubectl: Kubectl, gitops_operator: OperatorProcess, chart_webhook: str, example: Path
) -> None:
    ns = new_namespace(kubectl, "gitops-first-" + example.name[:14])
    kubectl.run("label", "namespace", ns, f"{SCOPE_LABEL}={chart_webhook}")
    probe = policy("probe", endpoint_name="missing", models=["probe"])
    # The webhook answers for this namespace (a warning names the missing endpoint) before the sync starts.
    wait_for(lambda: "does not exist" in dry_run_create(kubectl, ns, probe).stderr, "the webhook's answer")
    objects = sync_order(example)
    kinds = [d["kind"] for d in objects]
    if "Canary" in kinds:
        assert kinds.index("Canary") < kinds.index("RoutingPolicy"), "the order this test is about"
    # 1. the dry run of everything, nothing created yet
    for doc in objects:
        proc = kubectl.run(
            "apply", "-n", ns, "--server-side", "--field-manager=argocd-controller", "--dry-run=server",
            "-f", "-", stdin=json.dumps(doc), check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"dry run of {doc['kind']}/{doc['metadata']['name']}: {proc.stderr}"
    # 2. the apply, one object at a time in order
    for doc in objects:
        proc = kubectl.run(
            "apply", "-n", ns, "--server-side", "--field-manager=argocd-controller", "-f", "-",
            stdin=json.dumps(doc), check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"apply of {doc['kind']}/{doc['metadata']['name']}: {proc.stderr}"
    ours = [
        f"{resource_name(d['kind'])}/{d['metadata']['name']}"
        for d in objects
        if d["apiVersion"].startswith("modelroute.dev/")
    ]
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", *ours, "--timeout=60s")
