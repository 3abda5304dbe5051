"""The webhook serving certificate the operator keeps itself, against a real API server: the Secret is made
once and shared by every replica, the caBundle is patched so that the API server really calls the webhook
over TLS, a second replica writes nothing, and a renewal keeps the replicas still serving the old pair
trusted.

The webhook server runs as a process on 127.0.0.1 with the keeper's files; its configurations select only
namespaces with this module's label, and are deleted at the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modelroute_operator.logic.registration import webhook_configurations
from modelroute_operator.runtime.cert_keeper import CertKeeper, CertSettings, describe_certificate
from tests.integration.test_webhooks import apply_cluster_object, dry_run_create, healthy
from tests.kube_harness import ControlPlane, Kubectl, free_port, new_namespace, wait_for
from tests.manifests import policy

pytestmark = pytest.mark.integration

SCOPE_LABEL = "modelroute-test/webhook-certs"
HOSTS = ("127.0.0.1", "localhost")


def bundles(kubectl: Kubectl, name: str) -> set[str]:
    found: set[str] = set()
    for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
        body: dict[str, Any] = kubectl.json("get", kind, name)
        found |= {w["clientConfig"].get("caBundle", "") for w in body["webhooks"]}
    return found


def versions(kubectl: Kubectl, name: str, ns: str, secret: str) -> list[str]:
    return [
        kubectl.json("get", kind, name)["metadata"]["resourceVersion"]
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
    ] + [kubectl.json("get", "secret", secret, "-n", ns)["metadata"]["resourceVersion"]]


@pytest.fixture
def api(plane: ControlPlane) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
    yield api_client
    api_client.close()


def test_the_operator_keeps_one_pair_and_the_api_server_trusts_it(
    plane: ControlPlane, kubectl: Kubectl, api: client.ApiClient, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "wh-certs")
    scope = f"c{os.getpid()}-{secrets.token_hex(3)}"
    name = f"modelroute-test-{scope}"
    port = free_port()
    # the configurations as the chart renders them: no caBundle (and validation failing closed)
    validating, mutating = webhook_configurations(
        name, f"https://127.0.0.1:{port}", "", {SCOPE_LABEL: scope}, validation_failure_policy="Fail"
    )
    for body in (validating, mutating):
        for webhook in body["webhooks"]:
            del webhook["clientConfig"]["caBundle"]
        apply_cluster_object(kubectl, body)
    settings = CertSettings(namespace=ns, secret="modelroute-webhook-tls", configuration=name, hosts=HOSTS)
    first = CertKeeper(settings, tmp_path / "replica-1", api)
    proc: subprocess.Popen[bytes] | None = None
    try:
        pair = first.ensure()
        secret = kubectl.json("get", "secret", settings.secret, "-n", ns)
        assert secret["type"] == "kubernetes.io/tls"
        assert bundles(kubectl, name) == {pair.ca_bundle}
        assert (tmp_path / "replica-1" / "tls.crt").read_bytes() == pair.cert
        _, not_after, names = describe_certificate(pair.cert)
        assert set(HOSTS) <= names and not_after > datetime.now(UTC) + timedelta(days=3000)

        log = (tmp_path / "webhook.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelroute_operator.runtime.webhook_server", "serve", "--webhook-host=127.0.0.1",
             f"--webhook-port={port}", f"--webhook-cert-file={first.cert_file}",
             f"--webhook-key-file={first.key_file}", "--sidecar-image=example/sidecar:test"],
            stdout=log, stderr=subprocess.STDOUT, env={**plane.kubectl_env(), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: healthy(port, tmp_path / "replica-1" / "ca.crt"), "the webhook server", 30)
        scoped = new_namespace(kubectl, "wh-certs-use")
        kubectl.run("label", "namespace", scoped, f"{SCOPE_LABEL}={scope}")
        probe = policy("probe", endpoint_name="missing", models=["probe"])
        # The API server verified the webhook's certificate with the patched caBundle: it got an answer.
        wait_for(lambda: "denied the request" in dry_run_create(kubectl, scoped, probe).stderr, "validation")

        # a second replica takes the same pair and writes nothing
        before = versions(kubectl, name, ns, settings.secret)
        again = CertKeeper(settings, tmp_path / "replica-2", api).ensure()
        assert again == pair
        assert versions(kubectl, name, ns, settings.secret) == before

        # two thirds of its life later the pair is renewed: the bundle trusts the old and the new CA, so
        # the server still serving the old pair keeps answering
        renewed = first.ensure(now=datetime.now(UTC) + timedelta(days=2500))
        assert renewed.cert != pair.cert
        assert renewed.ca.count(b"BEGIN CERTIFICATE") == 2 and pair.ca in renewed.ca
        assert bundles(kubectl, name) == {renewed.ca_bundle}
        refusal = dry_run_create(kubectl, scoped, probe).stderr
        assert "denied the request" in refusal, refusal
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl.run("delete", kind, name, "--ignore-not-found", check=False)
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
