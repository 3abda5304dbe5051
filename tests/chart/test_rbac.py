"""The chart's RBAC is enough for the real operator and no more; its args, env and certificate work.

The rendered ServiceAccount, Roles and bindings are applied to the real API server; the operator then
runs as that ServiceAccount (a TokenRequest token) with the Deployment's args and env and the webhook
Secret as its mounted files, and does its whole job: watch, compile and store the ConfigMap, write
status, record Events, create the sidecar admin Secret, hold its Lease, serve both webhooks over TLS
(verified for the Service's DNS name), and delete the ConfigMap when the objects go. Its log must show
no permission error. SubjectAccessReviews then check what stays forbidden.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helm import DEFAULT_VALUES, Doc, Rendered, render
from tests.kube_harness import (
    REPO,
    ControlPlane,
    Kubectl,
    OperatorProcess,
    create_pod,
    free_port,
    new_namespace,
    set_pod_status,
    wait_for,
)
from tests.manifests import policy

pytestmark = pytest.mark.integration

RBAC_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    # The guard on what the operator may create as a Secret belongs to its privileges.
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
PERMISSION_ERRORS = ("Forbidden", "forbidden", " 403", "could not record event", "unreadable")
EXAMPLE = REPO / "examples" / "provider-failover"
CONFIGMAP = "modelroute-router-config"
POD_KIND = {"group": "", "version": "v1", "kind": "Pod"}
POLICY_KIND = {"group": "modelroute.dev", "version": "v1alpha1", "kind": "RoutingPolicy"}


def rbac_documents(docs: tuple[Doc, ...]) -> str:
    return "\n---\n".join(json.dumps(d) for d in docs if d["kind"] in RBAC_KINDS)


def apply_rbac(kubectl: Kubectl, release: str, namespace: str, sets: list[str]) -> Iterator[None]:
    rendered = render(DEFAULT_VALUES, sets=sets, namespace=namespace, release=release)
    kubectl.run(
        "apply",
        "--server-side",
        "--field-manager=chart-tests",
        "-f",
        "-",
        stdin=rbac_documents(rendered.docs),
    )
    try:
        yield
    finally:
        # Cluster-scoped objects outlive the test's namespaces; remove them.
        kubectl.run(
            "delete",
            "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding",
            "-l",
            f"app.kubernetes.io/instance={release}",
            check=False,
        )


def service_account_kubeconfig(
    plane: ControlPlane, kubectl: Kubectl, namespace: str, name: str, path: Path
) -> Path:
    token = kubectl.run("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()
    # The API server's self-generated serving certificate file holds its CA too: verify against it.
    ca = base64.b64encode((plane.state_dir / "pki" / "apiserver.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": plane.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "local", "user": name, "namespace": namespace}}],
        "current-context": name,
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def ready_conditions(kubectl: Kubectl, namespace: str) -> bool:
    """Every ModelEndpoint and RoutingPolicy in `namespace` carries a Ready condition."""
    items = kubectl.json("get", "modelendpoints,routingpolicies", "-n", namespace)["items"]
    return bool(items) and all(
        any(c["type"] == "Ready" for c in i.get("status", {}).get("conditions", [])) for i in items
    )


Access = tuple[str, str, str]
"""(verb, `resource[.group][/name][:subresource]`, namespace; "" means cluster-wide or every namespace)."""


def allowed(kubectl: Kubectl, service_account: str, accesses: list[Access]) -> list[bool]:
    """Ask the API server about every access at once (one SubjectAccessReview each, in one kubectl call)."""
    namespace = service_account.split(":")[2]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    reviews = []
    for verb, target, ns in accesses:
        target, _, subresource = target.partition(":")
        kind, _, name = target.partition("/")
        resource, _, group = kind.partition(".")
        attributes = {"verb": verb, "resource": resource, "group": group, "namespace": ns, "name": name}
        attributes["subresource"] = subresource
        reviews.append(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": service_account,
                    "groups": groups,
                    "resourceAttributes": {k: v for k, v in attributes.items() if v},
                },
            }
        )
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": reviews})
    output = kubectl.run(
        "create", "-o", "jsonpath={.status.allowed}{'\\n'}", "-f", "-", stdin=document
    ).stdout
    answers = [line.strip() == "true" for line in output.splitlines()]
    assert len(answers) == len(accesses), output
    return answers


def denied_and_granted(
    kubectl: Kubectl, service_account: str, grant: list[Access], deny: list[Access]
) -> tuple[list[Access], list[Access]]:
    """(accesses that should be granted but are not, accesses that should be denied but are granted)."""
    answers = allowed(kubectl, service_account, grant + deny)
    wrongly_denied = [a for a, ok in zip(grant, answers[: len(grant)], strict=True) if not ok]
    wrongly_granted = [a for a, ok in zip(deny, answers[len(grant) :], strict=True) if ok]
    return wrongly_denied, wrongly_granted


@pytest.fixture
def namespaced_install(kubectl: Kubectl) -> Iterator[tuple[str, str, str]]:
    """(release namespace, watched namespace, release name) with the chart's RBAC applied."""
    release_ns = new_namespace(kubectl, "chart-rbac")
    watched = new_namespace(kubectl, "chart-rbac-w")
    release = f"rbac{os.getpid() % 10000}"
    yield from (
        (release_ns, watched, release)
        for _ in apply_rbac(kubectl, release, release_ns, [f"watchNamespaces={{{watched}}}"])
    )


def chart_process(rendered: Rendered, release_ns: str) -> tuple[list[str], dict[str, str]]:
    """The operator container's args and env as the chart renders them, resolved as the kubelet would."""
    container = rendered.container()
    args = [a.replace("$(POD_NAMESPACE)", release_ns) for a in container["args"]]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = release_ns if field == "metadata.namespace" else "chart-test-pod"
    return args, env


def write_certificate(kubectl: Kubectl, namespace: str, name: str, directory: Path) -> Path:
    """The CA of the webhook Secret the operator keeps, as a file."""
    secret = kubectl.json("get", "secret", name, "-n", namespace)
    directory.mkdir()
    (directory / "ca.crt").write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    return directory / "ca.crt"


class ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to a loopback port, verifying the certificate for the webhook Service's DNS name."""

    def __init__(self, port: int, server_name: str, ca_file: Path) -> None:
        super().__init__(
            "127.0.0.1", port, timeout=10, context=ssl.create_default_context(cafile=str(ca_file))
        )
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


def call(conn: ServiceConnection, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    conn.request(method, path, json.dumps(body) if body else None, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    assert response.status == 200, data
    return json.loads(data)


def review(namespace: str, obj: dict[str, Any], kind: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "chart-test",
            "kind": kind,
            "namespace": namespace,
            "name": obj["metadata"]["name"],
            "operation": "CREATE",
            "object": obj,
        },
    }


def test_operator_runs_as_the_chart_configures_it(
    plane: ControlPlane, kubectl: Kubectl, namespaced_install: tuple[str, str, str], tmp_path: Path
) -> None:
    """The chart's ServiceAccount, args and env drive the real operator, which makes its webhook
    certificate under the chart's RBAC and secret guard and patches the caBundle."""
    release_ns, watched, release = namespaced_install
    fullname = f"{release}-modelroute"
    rendered = render(
        DEFAULT_VALUES, sets=[f"watchNamespaces={{{watched}}}"], namespace=release_ns, release=release
    )
    args, env = chart_process(rendered, release_ns)
    assert "--leader-elect" in args and f"--namespace={watched}" in args
    assert env["MODELROUTE_WEBHOOK_MANAGE_CERT"] == "true"
    # The chart's mutating configuration (its validating one would send the example to a Service that
    # does not exist here), so the operator has a caBundle to keep; it selects no pod of this test.
    mutating = rendered.one("MutatingWebhookConfiguration")
    kubectl.run("apply", "--server-side", "--field-manager=helm", "-f", "-", stdin=json.dumps(mutating))
    port, health_port = free_port(), free_port()
    env |= {
        "MODELROUTE_WEBHOOK_PORT": str(port),  # the chart's 9443 may be taken on a shared machine
        "MODELROUTE_HEALTH_PORT": str(health_port),  # and its 8081
        "MODELROUTE_WEBHOOK_CERT_DIR": str(tmp_path / "served"),
        "KUBECONFIG": str(service_account_kubeconfig(plane, kubectl, release_ns, fullname, tmp_path / "sa")),
    }
    op = OperatorProcess(plane, tmp_path / "operator.log", extra_env=env, extra_args=args)
    op.start()
    try:
        wait_for(lambda: " leads (lease " in op.log(), "the operator to take its Lease", 30)
        kubectl.run("apply", "-n", watched, "--server-side", "--field-manager=tests", "-f", str(EXAMPLE))
        wait_for(lambda: kubectl.get("configmap", CONFIGMAP, watched), "the compiled ConfigMap")
        wait_for(lambda: ready_conditions(kubectl, watched), "Ready conditions on every object")
        wait_for(lambda: kubectl.json("get", "events", "-n", watched)["items"], "an Event from the operator")
        # A ready sidecar pod makes the operator create the namespace's admin token Secret and push to it.
        create_pod(kubectl, watched, "app-1", admin_port=9)
        set_pod_status(kubectl, watched, "app-1", "127.0.0.1", ready=True)
        wait_for(
            lambda: kubectl.get("secret", "modelroute-sidecar-admin", watched), "the sidecar admin Secret"
        )
        assert kubectl.get("lease", fullname, release_ns), "the Lease lives in the release namespace"
        # the health server the chart turns on: alive, ready, and the operator's own figures
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'modelroute_operator_reconcile_passes_total{outcome="ok"}' in text
        assert "modelroute_operator_leader 1.0" in text

        # The webhooks, over TLS with the certificate the operator made, verified for the Service's name
        # with the CA it patched into the configuration.
        ca_file = write_certificate(kubectl, release_ns, f"{fullname}-webhook-tls", tmp_path / "webhook")
        live = kubectl.json("get", "mutatingwebhookconfiguration", fullname)
        assert {w["clientConfig"]["caBundle"] for w in live["webhooks"]} == {
            base64.b64encode(ca_file.read_bytes()).decode()
        }
        conn = ServiceConnection(port, f"{fullname}.{release_ns}.svc", ca_file)
        assert call(conn, "GET", "/healthz") == {"status": "ok"}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app-2", "namespace": watched},
               "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}  # fmt: skip
        answer = call(conn, "POST", "/mutate-pods/namespace-enabled", review(watched, pod, POD_KIND))[
            "response"
        ]
        assert answer["allowed"] is True
        patch = base64.b64decode(answer["patch"]).decode()
        assert '"modelroute/sidecar:0.1.0"' in patch and "15080" in patch and '"mr-admin"' in patch
        bad = {
            **policy(name="orphan", endpoint_name="no-such-endpoint"),
            "metadata": {"name": "orphan", "namespace": watched},
        }
        answer = call(conn, "POST", "/validate", review(watched, bad, POLICY_KIND))["response"]
        # the chart's default for a missing reference is a warning (a first GitOps sync needs it)
        assert answer["allowed"] is True and "no-such-endpoint" in " ".join(answer["warnings"])
        conn.close()

        # All objects gone: the operator deletes the ConfigMap.
        kubectl.run("delete", "-n", watched, "modelendpoints,routingpolicies", "--all")
        wait_for(lambda: kubectl.get("configmap", CONFIGMAP, watched) is None, "the ConfigMap to go")
    finally:
        op.stop(timeout=2)  # a graceful stop waits out Kopf's shutdown; nothing here depends on it
        kubectl.run("delete", "mutatingwebhookconfiguration", fullname, "--ignore-not-found", check=False)
    log = op.log()
    assert not [line for line in log.splitlines() if any(e in line for e in PERMISSION_ERRORS)], log[-4000:]


def test_namespaced_rbac_forbids_everything_else(
    kubectl: Kubectl, namespaced_install: tuple[str, str, str]
) -> None:
    release_ns, watched, release = namespaced_install
    sa = f"system:serviceaccount:{release_ns}:{release}-modelroute"
    grant: list[Access] = [
        ("list", "modelendpoints.modelroute.dev", watched),
        ("watch", "modelcanaries.modelroute.dev", watched),
        ("patch", "routingpolicies.modelroute.dev/chat:status", watched),
        ("create", "configmaps", watched),
        ("patch", "configmaps/modelroute-router-config", watched),
        ("delete", "configmaps/modelroute-router-config", watched),
        ("watch", "configmaps/modelroute-router-config", watched),  # with a metadata.name selector
        ("get", "secrets/any-credentials", watched),  # the watched namespace's credentials RoleBinding
        ("get", "secrets/modelroute-sidecar-admin", watched),
        ("create", "secrets", watched),
        ("watch", "pods", watched),
        ("create", "events", watched),
        ("create", "leases.coordination.k8s.io", release_ns),
        ("update", f"leases.coordination.k8s.io/{release}-modelroute", release_ns),
        # the webhook serving certificate it keeps, and the caBundle of its own two configurations
        ("get", f"secrets/{release}-modelroute-webhook-tls", release_ns),
        ("update", f"secrets/{release}-modelroute-webhook-tls", release_ns),
        ("create", "secrets", release_ns),
        ("patch", f"validatingwebhookconfigurations.admissionregistration.k8s.io/{release}-modelroute", ""),
        ("patch", f"mutatingwebhookconfigurations.admissionregistration.k8s.io/{release}-modelroute", ""),
        ("list", "namespaces", ""),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ]
    deny: list[Access] = [
        ("watch", "configmaps", watched),  # not every ConfigMap: only ours, by name
        ("list", "secrets", watched),
        ("watch", "secrets", watched),
        ("get", "secrets/any-credentials", "kube-system"),
        ("get", "secrets/modelroute-sidecar-admin", "kube-system"),
        ("get", "secrets/another-secret", release_ns),
        ("update", "secrets/another-secret", release_ns),
        ("delete", f"secrets/{release}-modelroute-webhook-tls", release_ns),
        ("create", "secrets", "kube-system"),
        ("delete", "secrets/any-credentials", watched),
        ("get", "configmaps/someone-elses", watched),
        ("patch", "routingpolicies.modelroute.dev/chat", watched),
        ("delete", "modelendpoints.modelroute.dev/x", watched),
        ("delete", "pods/x", watched),
        ("list", "modelendpoints.modelroute.dev", release_ns),
        ("list", "pods", "default"),
        ("list", "pods", ""),
        ("update", "leases.coordination.k8s.io/another-lease", release_ns),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/x", ""),
    ]
    assert denied_and_granted(kubectl, sa, grant, deny) == ([], [])


def test_cluster_wide_rbac_reaches_every_namespace_but_no_further(kubectl: Kubectl) -> None:
    release_ns = new_namespace(kubectl, "chart-rbac-cw")
    release = f"cw{os.getpid() % 10000}"
    for _ in apply_rbac(kubectl, release, release_ns, []):
        sa = f"system:serviceaccount:{release_ns}:{release}-modelroute"
        grant: list[Access] = [
            ("list", "pods", ""),
            ("watch", "routingpolicies.modelroute.dev", ""),
            ("get", "secrets/modelroute-sidecar-admin", "default"),
            ("patch", "configmaps/modelroute-router-config", "any-namespace"),
        ]
        deny: list[Access] = [
            ("get", "secrets/x", "default"),  # no credentials grant anywhere by default
            ("get", "secrets/x", "kube-system"),
            ("list", "secrets", ""),
            ("update", "modelendpoints.modelroute.dev/x", "default"),
            ("get", "configmaps/kube-root-ca.crt", "default"),
            ("update", "leases.coordination.k8s.io/x", "default"),
        ]
        assert denied_and_granted(kubectl, sa, grant, deny) == ([], [])


# --- Secrets: `kubectl auth can-i` as the operator, and the creation guard -------------------------

SECRET_CHECKS: list[tuple[str, str]] = [
    ("get", "secrets/modelroute-sidecar-admin"),
    ("get", "secrets/openai-key"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "secrets"),
    ("update", "secrets/modelroute-sidecar-admin"),
    ("delete", "secrets/openai-key"),
]


def can_i(kubectl: Kubectl, service_account: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` impersonating the operator (exit 0 "yes", exit 1 "no")."""
    proc = kubectl.run(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={service_account}", check=False
    )
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def secret_table(
    kubectl: Kubectl, service_account: str, columns: dict[str, str]
) -> dict[tuple[str, str], str]:
    """{(verb resource, column): "yes"/"no"} for every check in every column's namespace; printed as the
    Markdown table the README shows (run pytest with -s to see it)."""
    table = {
        (f"{verb} {resource}", column): "yes" if can_i(kubectl, service_account, verb, resource, ns) else "no"
        for verb, resource in SECRET_CHECKS
        for column, ns in columns.items()
    }
    print(f"\n| `kubectl auth can-i ... --as={service_account}` | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for verb, resource in SECRET_CHECKS:
        row = [table[(f"{verb} {resource}", c)] for c in columns]
        print(f"| `{verb} {resource}` | " + " | ".join(row) + " |")
    return table


def expect(rows: dict[str, str], columns: list[str]) -> dict[tuple[str, str], str]:
    """Expected answers written as one string per check, one letter per column (y/n)."""
    return {
        (check, column): "yes" if letters[i] == "y" else "no"
        for check, letters in rows.items()
        for i, column in enumerate(columns)
    }


def test_the_operator_reads_no_secret_outside_what_it_manages_or_is_granted(kubectl: Kubectl) -> None:
    """Namespaced mode: only the watched namespace (its admin token, credentials by its RoleBinding) and a
    namespace listed in rbac.credentials.namespaces; nothing in kube-system or default, and in its own
    namespace only the webhook certificate it keeps."""
    release_ns = new_namespace(kubectl, "chart-sec")
    watched = new_namespace(kubectl, "chart-sec-w")
    granted = new_namespace(kubectl, "chart-sec-g")
    release = f"sec{os.getpid() % 10000}"
    sets = [f"watchNamespaces={{{watched}}}", f"rbac.credentials.namespaces={{{granted}}}"]
    for _ in apply_rbac(kubectl, release, release_ns, sets):
        sa = f"system:serviceaccount:{release_ns}:{release}-modelroute"
        columns = {"watched": watched, "credentials-only": granted, "default": "default",
                   "kube-system": "kube-system", "release": release_ns}  # fmt: skip
        rows = {
            "get secrets/modelroute-sidecar-admin": "yyn" + "nn",
            "get secrets/openai-key": "yyn" + "nn",
            "get secrets": "yyn" + "nn",  # any name, where a credentials RoleBinding says so
            "list secrets": "nnnnn",
            "watch secrets": "nnnnn",
            "create secrets": "ynnny",  # release: only its webhook certificate gets past the secret guard
            "update secrets/modelroute-sidecar-admin": "nnnnn",
            "delete secrets/openai-key": "nnnnn",
        }
        assert secret_table(kubectl, sa, columns) == expect(rows, list(columns))
        cert = f"secrets/{release}-modelroute-webhook-tls"
        # its webhook certificate: in its own namespace only (`get` elsewhere is the credentials grant)
        assert [can_i(kubectl, sa, "update", cert, ns) for ns in columns.values()] == [False] * 4 + [True]
        assert [can_i(kubectl, sa, "get", cert, ns) for ns in columns.values()] == [True, True, False, False, True]


def test_cluster_wide_mode_reads_only_the_admin_token_and_granted_namespaces(kubectl: Kubectl) -> None:
    release_ns = new_namespace(kubectl, "chart-sec-cw")
    granted = new_namespace(kubectl, "chart-sec-cwg")
    release = f"seccw{os.getpid() % 10000}"
    for _ in apply_rbac(kubectl, release, release_ns, [f"rbac.credentials.namespaces={{{granted}}}"]):
        sa = f"system:serviceaccount:{release_ns}:{release}-modelroute"
        columns = {"credentials-granted": granted, "default": "default", "kube-system": "kube-system"}
        rows = {
            # RBAC cannot leave a namespace out of a ClusterRoleBinding: the one managed name is readable
            # everywhere, and the secret guard keeps the operator from creating it in kube-system.
            "get secrets/modelroute-sidecar-admin": "yyy",
            "get secrets/openai-key": "ynn",
            "get secrets": "ynn",
            "list secrets": "nnn",
            "watch secrets": "nnn",
            "create secrets": "yyy",
            "update secrets/modelroute-sidecar-admin": "nnn",
            "delete secrets/openai-key": "nnn",
        }
        assert secret_table(kubectl, sa, columns) == expect(rows, list(columns))


def secret_document(name: str, namespace: str, secret_type: str = "Opaque", **annotations: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "type": secret_type,
            "stringData": {"token": "x"}
            if secret_type == "Opaque"
            else {"tls.crt": "", "tls.key": ""}
            if secret_type == "kubernetes.io/tls"
            else {},
        }
    )


def create_as(kubectl: Kubectl, user: str, document: str) -> tuple[bool, str]:
    proc = kubectl.run("create", "-f", "-", f"--as={user}", stdin=document, check=False)
    return proc.returncode == 0, proc.stderr


def test_the_secret_guard_refuses_every_secret_but_the_admin_token(kubectl: Kubectl) -> None:
    """`create secrets` cannot be narrowed by RBAC; the ValidatingAdmissionPolicy narrows it. Without it, a
    service-account-token Secret named modelroute-sidecar-admin would be filled with a token the operator
    could then read (it may `get` that name)."""
    release_ns = new_namespace(kubectl, "chart-guard")
    served = new_namespace(kubectl, "chart-guard-s")
    release = f"guard{os.getpid() % 10000}"
    for _ in apply_rbac(kubectl, release, release_ns, []):  # cluster-wide: create secrets everywhere
        sa = f"system:serviceaccount:{release_ns}:{release}-modelroute"

        token_trick = secret_document(
            "modelroute-sidecar-admin", served, "kubernetes.io/service-account-token",
            **{"kubernetes.io/service-account.name": "default"},
        )  # fmt: skip

        # The policy takes effect once the API server has loaded it: poll with a harmless probe (one
        # that got through before is deleted and tried again).
        def guarded(user: str = sa, ns: str = served) -> bool:
            ok, error = create_as(kubectl, user, secret_document("guard-probe", ns))
            if ok:
                kubectl.run("delete", "secret", "guard-probe", "-n", ns)
            return "may only create the Secret modelroute-sidecar-admin" in error

        wait_for(guarded, "the secret guard to load", 30)
        ok, error = create_as(kubectl, sa, token_trick)
        assert not ok and "may only create Opaque Secrets" in error, error
        ok, error = create_as(kubectl, sa, secret_document("someone-elses", served))
        assert not ok and "may only create the Secret modelroute-sidecar-admin" in error, error
        ok, error = create_as(kubectl, sa, secret_document("modelroute-sidecar-admin", "kube-system"))
        assert not ok and "creates no Secrets in" in error and "kube-system" in error, error
        ok, error = create_as(kubectl, sa, secret_document("modelroute-sidecar-admin", served))
        assert ok, error  # what the operator really creates still goes through
        # ... and its webhook certificate: of its type, under its name, in the release namespace only
        cert = f"{release}-modelroute-webhook-tls"
        ok, error = create_as(kubectl, sa, secret_document(cert, release_ns, "kubernetes.io/tls"))
        assert ok, error
        ok, error = create_as(kubectl, sa, secret_document(cert, served, "kubernetes.io/tls"))
        assert not ok and "may only create the Secret modelroute-sidecar-admin" in error, error
        ok, error = create_as(kubectl, sa, secret_document(cert, release_ns, "Opaque"))
        assert not ok and "may only create the Secret modelroute-sidecar-admin" in error, error
        # Nobody else is held to it.
        assert (
            kubectl.run("create", "-f", "-", stdin=secret_document("someone-elses", served)).returncode == 0
        )
