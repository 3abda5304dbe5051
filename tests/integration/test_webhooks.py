"""The admission webhooks registered with a real API server: invalid cross-references are refused with the
field and the reason, used objects cannot be deleted, and pods of labelled namespaces (or pods that ask)
come back with the router sidecar injected and the app pointed at it.

The webhook server runs as its own process (`python -m modelroute_operator.runtime.webhook_server serve`) on
127.0.0.1 with a self-signed certificate. The API server is shared with other test modules, so every
webhook here only selects namespaces carrying this module's own label, and the configurations are
deleted at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelroute_operator.logic.registration import webhook_configurations
from modelroute_operator.runtime.certificates import generate_certificates
from tests.kube_harness import ControlPlane, Kubectl, free_port, new_namespace, wait_for
from tests.manifests import endpoint, policy, to_yaml, with_change

pytestmark = pytest.mark.integration

SCOPE_LABEL = "modelroute-test/webhooks"
IMAGE = "registry.example/modelroute/sidecar:test"
SIDECAR = "modelroute-router"
CUSTOM_METRICS_PORT = 19932
"""A second sidecar port: the webhook server is told the sidecars' data port is the default 15080 and
their admin (and metrics) port is this one, as `sidecar.adminPort` in the chart would."""


@dataclass
class Webhooks:
    """The running webhook server and the label its configurations select namespaces by."""

    scope: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def apply_cluster_object(kubectl: Kubectl, body: dict[str, Any]) -> None:
    kubectl.run("apply", "--server-side", "--field-manager=tests", "-f", "-", stdin=json.dumps(body))


def healthy(port: int, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=1, context=context) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def webhooks(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Webhooks]:
    workdir = tmp_path_factory.mktemp("webhooks")
    certs = generate_certificates(workdir / "certs", ["127.0.0.1", "localhost"])
    port = free_port()
    log = workdir / "webhook.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelroute_operator.runtime.webhook_server",
                "serve",
                "--webhook-host=127.0.0.1",
                f"--webhook-port={port}",
                f"--webhook-cert-file={certs.cert_file}",
                f"--webhook-key-file={certs.key_file}",
                f"--sidecar-image={IMAGE}",
                f"--sidecar-admin-port={CUSTOM_METRICS_PORT}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**plane.kubectl_env(), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    scope = f"w{os.getpid()}-{secrets.token_hex(3)}"
    name = f"modelroute-test-{scope}"
    try:
        wait_for(lambda: proc.poll() is None and healthy(port, certs.ca_file), "the webhook server", 30)
        # Validation fails closed here so that a refusal test can never pass by the webhook being skipped.
        validating, mutating = webhook_configurations(
            name,
            f"https://127.0.0.1:{port}",
            certs.ca_bundle,
            {SCOPE_LABEL: scope},
            validation_failure_policy="Fail",
        )
        apply_cluster_object(kubectl, validating)
        apply_cluster_object(kubectl, mutating)
        yield Webhooks(scope, port, log)
    finally:
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl.run("delete", kind, name, "--ignore-not-found", check=False)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def scoped_namespace(kubectl: Kubectl, webhooks: Webhooks, prefix: str, inject: bool = False) -> str:
    """A fresh namespace this module's webhooks select (`inject`: labelled for sidecar injection)."""
    ns = new_namespace(kubectl, prefix)
    labels = [f"{SCOPE_LABEL}={webhooks.scope}", *(["modelroute.dev/inject=enabled"] if inject else [])]
    kubectl.run("label", "namespace", ns, *labels)
    return ns


def dry_run_create(kubectl: Kubectl, ns: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run(
        "create", "--dry-run=server", "-n", ns, "-o", "json", "-f", "-", stdin=json.dumps(body), check=False
    )


def wait_until_validated(kubectl: Kubectl, ns: str) -> None:
    """The API server picks up new configurations and namespace labels a moment later: wait for a refusal."""
    probe = policy("webhook-probe", endpoint_name="probe-missing", models=["probe"])
    wait_for(lambda: "denied the request" in dry_run_create(kubectl, ns, probe).stderr, f"validation in {ns}")


def wait_until_injecting(kubectl: Kubectl, ns: str) -> None:
    probe = pod("webhook-probe", annotations={"modelroute.dev/inject": "true"})
    wait_for(
        lambda: SIDECAR in containers_of(json.loads(dry_run_create(kubectl, ns, probe).stdout or "{}")),
        f"injection in {ns}",
    )


def pod(
    name: str, annotations: dict[str, str] | None = None, env: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    app: dict[str, Any] = {
        "name": "app",
        "image": "example.invalid/app:1",
        "ports": [{"containerPort": 8000}],
    }
    if env:
        app["env"] = env
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "demo"}, "annotations": annotations or {}},
        "spec": {"containers": [app, {"name": "worker", "image": "example.invalid/worker:1"}]},
    }


def containers_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = body.get("spec", {})
    return {c["name"]: c for c in [*spec.get("initContainers", []), *spec.get("containers", [])]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def create_pod(kubectl: Kubectl, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    kubectl.run("create", "-n", ns, "-f", "-", stdin=json.dumps(body))
    stored = kubectl.get("pod", body["metadata"]["name"], ns)
    assert stored is not None
    return stored


# ------------------------------------------------------------------------------------------ validation


def test_a_policy_naming_a_missing_endpoint_is_refused_with_the_field(
    kubectl: Kubectl, webhooks: Webhooks
) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-ref")
    wait_until_validated(kubectl, ns)
    kubectl.apply(to_yaml(endpoint("llama")), ns)
    proc = kubectl.apply(to_yaml(policy("support", endpoint_name="gpt-missing")), ns, check=False)
    assert proc.returncode != 0
    assert 'admission webhook "validate.modelroute.dev" denied the request' in proc.stderr
    assert (
        f"RoutingPolicy 'support' is invalid: spec.rules[0].targets[0].endpoint: ModelEndpoint 'gpt-missing' "
        f"does not exist in namespace '{ns}'"
    ) in proc.stderr
    assert kubectl.get("routingpolicy", "support", ns) is None


def test_a_replica_at_the_configured_sidecar_admin_port_is_refused(
    kubectl: Kubectl, webhooks: Webhooks
) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-port")
    wait_until_validated(kubectl, ns)
    looped = with_change(
        endpoint("llama"), "spec.replicas.0.url", f"http://localhost:{CUSTOM_METRICS_PORT}/v1"
    )
    proc = kubectl.apply(to_yaml(looped), ns, check=False)
    assert proc.returncode != 0 and "denied the request" in proc.stderr
    assert "spec.replicas[0].url" in proc.stderr and f"own port {CUSTOM_METRICS_PORT}" in proc.stderr
    assert kubectl.get("modelendpoint", "llama", ns) is None
    # The endpoint may say a model server really listens there.
    allowed = with_change(looped, "spec.allowPrivateTargets", True)
    kubectl.apply(to_yaml(allowed), ns)


def test_a_valid_policy_is_accepted_and_its_endpoint_cannot_be_deleted_while_used(
    kubectl: Kubectl, webhooks: Webhooks
) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-ok")
    wait_until_validated(kubectl, ns)
    kubectl.apply(to_yaml(endpoint("llama"), policy("support", endpoint_name="llama")), ns)
    assert kubectl.get("routingpolicy", "support", ns) is not None

    proc = kubectl.run("delete", "modelendpoint", "llama", "-n", ns, check=False)
    assert proc.returncode != 0
    assert "ModelEndpoint 'llama' is still used by RoutingPolicy/support" in proc.stderr
    assert "RoutingPolicy/support spec.rules[0].targets[0].endpoint" in proc.stderr
    assert kubectl.get("modelendpoint", "llama", ns) is not None

    kubectl.run("delete", "routingpolicy", "support", "-n", ns)
    kubectl.run("delete", "modelendpoint", "llama", "-n", ns)
    assert kubectl.get("modelendpoint", "llama", ns) is None


def test_an_update_that_adds_a_dangling_reference_is_refused(kubectl: Kubectl, webhooks: Webhooks) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-upd")
    wait_until_validated(kubectl, ns)
    kubectl.apply(to_yaml(endpoint("llama"), policy("support", endpoint_name="llama")), ns)
    broken = with_change(
        policy("support", endpoint_name="llama"), "spec.rules.0.targets.0.endpoint", "llama-v9"
    )
    proc = kubectl.apply(to_yaml(broken), ns, check=False)
    assert proc.returncode != 0
    assert "spec.rules[0].targets[0].endpoint: ModelEndpoint 'llama-v9' does not exist" in proc.stderr
    stored = kubectl.get("routingpolicy", "support", ns)
    assert stored is not None and stored["spec"]["rules"][0]["targets"][0]["endpoint"] == "llama"


def test_a_policy_with_an_invalid_re2_pattern_is_refused_with_the_field(
    kubectl: Kubectl, webhooks: Webhooks
) -> None:
    """The schema cannot tell valid RE2 from invalid: the webhook compiles the pattern and says why."""
    ns = scoped_namespace(kubectl, webhooks, "wh-re2")
    wait_until_validated(kubectl, ns)
    kubectl.apply(to_yaml(endpoint("llama")), ns)
    detectors = [
        {"kind": "email", "dataClass": "eu-personal"},
        {
            "kind": "pattern",
            "name": "employee-id",
            "pattern": r"(?i)\bemp-\d{6}\b",
            "dataClass": "eu-personal",
        },
        {"kind": "pattern", "name": "badge", "pattern": r"(?<=B)-\d+", "dataClass": "eu-personal"},
    ]
    broken = with_change(policy("support", endpoint_name="llama"), "spec.residency.detectors", detectors)
    proc = kubectl.apply(to_yaml(broken), ns, check=False)
    assert proc.returncode != 0
    assert (
        "RoutingPolicy 'support' is invalid: spec.residency.detectors[2].pattern: pattern is not a valid RE2 "
        "regular expression: invalid perl operator: (?<"
    ) in proc.stderr, proc.stderr
    assert kubectl.get("routingpolicy", "support", ns) is None
    kubectl.apply(to_yaml(with_change(broken, "spec.residency.detectors", detectors[:2])), ns)
    assert kubectl.get("routingpolicy", "support", ns) is not None


def test_suspicious_but_valid_objects_come_back_with_a_warning(kubectl: Kubectl, webhooks: Webhooks) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-warn")
    wait_until_validated(kubectl, ns)
    us_only = endpoint("llama", regions={"us-east-1": []})
    proc = kubectl.apply(to_yaml(us_only, policy("support", endpoint_name="llama")), ns)
    assert (
        "Warning: spec.residency.dataClasses[0]: no replica of the endpoints this policy targets satisfies "
        "data class 'eu-personal'"
    ) in proc.stderr


# ------------------------------------------------------------------------------------------- injection


def test_a_pod_in_a_labelled_namespace_gets_the_sidecar(kubectl: Kubectl, webhooks: Webhooks) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-inj", inject=True)
    wait_until_validated(kubectl, ns)
    with_key = with_change(endpoint("gpt"), "spec.credentials", {"name": "openai-key", "key": "api-key"})
    kubectl.apply(to_yaml(with_key), ns)
    wait_until_injecting(kubectl, ns)

    stored = create_pod(kubectl, ns, pod("web-1"))

    assert stored["metadata"]["labels"]["modelroute.dev/router"] == "sidecar"
    assert stored["metadata"]["annotations"]["modelroute.dev/admin-port"] == str(CUSTOM_METRICS_PORT)
    sidecar = stored["spec"]["initContainers"][0]
    assert sidecar["name"] == SIDECAR and sidecar["restartPolicy"] == "Always" and sidecar["image"] == IMAGE
    env = env_of(sidecar)
    assert env["MODELROUTE_PORT"] == "15080" and env["MODELROUTE_ADMIN_PORT"] == str(CUSTOM_METRICS_PORT)
    assert env["MODELROUTE_CONFIG_FILE"] == "/etc/modelroute/config"  # the sidecar picks the newest key
    assert env["MODELROUTE_ADMIN_TOKEN_FILE"] == "/etc/modelroute/admin/token"
    assert env["MODELROUTE_SECRETS_DIR"] == "/etc/modelroute/secrets"
    assert env["MODELROUTE_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    assert env["MODELROUTE_POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["MODELROUTE_REGION"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['topology.kubernetes.io/region']"}
    }
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {
        "mr-proxy": 15080,
        "mr-admin": CUSTOM_METRICS_PORT,
    }
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["modelroute-config"]["configMap"]["name"] == "modelroute-router-config"
    assert volumes["modelroute-config"]["configMap"]["optional"] is True
    assert volumes["modelroute-admin"]["secret"]["secretName"] == "modelroute-sidecar-admin"
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert volumes[mounts["/etc/modelroute/secrets/openai-key"]]["secret"]["secretName"] == "openai-key"
    for app in stored["spec"]["containers"]:
        assert env_of(app)["OPENAI_BASE_URL"] == "http://127.0.0.1:15080/v1", app["name"]
    # The operator finds sidecars by this label.
    listed = kubectl.json("get", "pods", "-n", ns, "-l", "modelroute.dev/router=sidecar")
    assert [p["metadata"]["name"] for p in listed["items"]] == ["web-1"]


def test_the_apps_own_base_url_and_an_opt_out_are_respected(kubectl: Kubectl, webhooks: Webhooks) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-own", inject=True)
    wait_until_injecting(kubectl, ns)

    own = create_pod(
        kubectl, ns, pod("own-url", env=[{"name": "OPENAI_BASE_URL", "value": "https://gateway.internal/v1"}])
    )
    apps = containers_of(own)
    assert SIDECAR in apps
    assert env_of(apps["app"])["OPENAI_BASE_URL"] == "https://gateway.internal/v1"
    assert env_of(apps["worker"])["OPENAI_BASE_URL"] == "http://127.0.0.1:15080/v1"

    opted_out = create_pod(kubectl, ns, pod("no-router", annotations={"modelroute.dev/inject": "false"}))
    assert SIDECAR not in containers_of(opted_out)
    assert "modelroute.dev/router" not in opted_out["metadata"]["labels"]


def test_pods_of_other_namespaces_are_untouched_unless_they_ask(kubectl: Kubectl, webhooks: Webhooks) -> None:
    ns = scoped_namespace(kubectl, webhooks, "wh-plain")
    wait_until_injecting(kubectl, ns)  # a pod that asks is injected here ...

    plain = create_pod(kubectl, ns, pod("plain"))
    assert set(containers_of(plain)) == {"app", "worker"}
    assert "OPENAI_BASE_URL" not in env_of(containers_of(plain)["app"])

    asked = create_pod(kubectl, ns, pod("asked", annotations={"modelroute.dev/inject": "true"}))
    assert SIDECAR in containers_of(asked)

    # ... and a namespace outside this module's scope never reaches the webhook at all.
    outside = new_namespace(kubectl, "wh-out")
    untouched = create_pod(kubectl, outside, pod("asked", annotations={"modelroute.dev/inject": "true"}))
    assert SIDECAR not in containers_of(untouched)


def test_an_unreachable_injector_keeps_pods_out_of_labelled_namespaces(
    kubectl: Kubectl, webhooks: Webhooks
) -> None:
    """failurePolicy Fail: without its router a pod would bypass residency rules, so it is not created."""
    scope = f"{webhooks.scope}-down"
    name = f"modelroute-test-{scope}"
    dead = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    _, mutating = webhook_configurations(name, dead, "", {SCOPE_LABEL: scope}, pod_opt_in=False)
    apply_cluster_object(kubectl, mutating)
    try:
        ns = new_namespace(kubectl, "wh-down")
        kubectl.run("label", "namespace", ns, f"{SCOPE_LABEL}={scope}", "modelroute.dev/inject=enabled")

        def refused() -> str | None:
            proc = dry_run_create(kubectl, ns, pod("web"))
            return proc.stderr if proc.returncode != 0 else None

        stderr = wait_for(refused, "pod creation to be refused while the injector is down")
        assert 'failed calling webhook "inject-namespace.modelroute.dev"' in stderr
        assert (
            kubectl.run("create", "-n", ns, "-f", "-", stdin=json.dumps(pod("web")), check=False).returncode
            != 0
        )
        assert kubectl.get("pod", "web", ns) is None
    finally:
        kubectl.run("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found", check=False)
