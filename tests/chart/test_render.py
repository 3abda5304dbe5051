"""`helm template` per values file: the switches that matter render what they promise.

Replicas and leader election, security context, RBAC scope, webhook configurations and their
certificate (kept by the operator, or cert-manager), health probes, PDB, injector settings, and
monitoring objects only when enabled and their API exists. Every values file renders the same bytes
every time (no certificate made at render time), so GitOps sees no drift.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    CI_VALUES,
    NAMESPACE,
    PROMETHEUS_APIS,
    RELEASE,
    Doc,
    Rendered,
    env_of,
    render,
    render_error,
    run_helm,
    walk,
)
from tests.chart.helm import _template_args as template_args

CI = {p.name.removesuffix("-values.yaml"): p for p in CI_VALUES}
FULLNAME = f"{RELEASE}-modelroute"
OUR_KINDS = ["modelendpoints", "routingpolicies", "modelcanaries"]


def default() -> Rendered:
    return render(CI["default"])


def webhooks(rendered: Rendered, kind: str) -> dict[str, Doc]:
    return {w["name"]: w for w in rendered.one(kind)["webhooks"]}


def match_expressions(selector: Doc) -> dict[str, tuple[str, list[str]]]:
    """Selector expressions as key → (operator, values); a key may appear twice (In and NotIn)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for expr in selector.get("matchExpressions", []):
        key = expr["key"] if expr["key"] not in out else f"{expr['key']}#2"
        out[key] = (expr["operator"], expr.get("values", []))
    return out


# --- every values file ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_every_document_is_named_labelled_and_placed(values: Path) -> None:
    rendered = render(values, api_versions=PROMETHEUS_APIS)
    assert rendered.docs
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    # Rendered into the namespaces the operator serves, not the release namespace.
    per_namespace = {
        ("Role", ""),
        ("RoleBinding", ""),
        ("NetworkPolicy", f"{RELEASE}-modelroute-sidecar-admin"),
    }
    for doc in rendered.docs:
        meta = doc["metadata"]
        where = f"{doc['kind']}/{meta['name']}"
        assert doc["apiVersion"] and meta["name"], where
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE, where
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", where
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in meta, where
        elif (doc["kind"], "") not in per_namespace and (doc["kind"], meta["name"]) not in per_namespace:
            assert meta["namespace"] == NAMESPACE, where
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in rendered.docs]
    assert len(names) == len(set(names)), "two documents share kind, namespace and name"


# --- operator Deployment --------------------------------------------------------------------------


def test_default_deployment_runs_two_replicas_with_leader_election() -> None:
    rendered = default()
    deployment = rendered.one("Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = rendered.container()
    assert container["image"] == "modelroute/operator:0.1.0"
    args = container["args"]
    assert "--leader-elect" in args
    assert "--lease-namespace=$(POD_NAMESPACE)" in args
    assert f"--lease-name={FULLNAME}" in args
    assert not [a for a in args if a.startswith("--namespace")], "default watches every namespace"
    env = env_of(container)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def mounts_of(rendered: Rendered) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in rendered.container()["volumeMounts"]}


def test_security_context_is_restricted() -> None:
    rendered = default()
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = rendered.container()["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["name"]: m["mountPath"] for m in rendered.container()["volumeMounts"]}
    assert mounts["tmp"] == "/tmp", "a read-only root needs a writable /tmp"
    assert "webhook-tls" not in mounts, "the operator writes the pair it keeps under /tmp"
    assert mounts_of(render(CI["cert-manager"]))["webhook-tls"] == "/etc/modelroute/webhook"


def test_replica_count_and_leader_election_switch() -> None:
    assert render(CI["default"], sets=["replicaCount=3"]).one("Deployment")["spec"]["replicas"] == 3
    minimal = render(CI["minimal"])
    assert minimal.one("Deployment")["spec"]["replicas"] == 1
    assert "args" not in minimal.container(), "no leader election, no namespaces: no flags at all"
    assert "PodDisruptionBudget" not in minimal.kinds(), "one replica must never block a drain"
    assert not [r for r in minimal.all("Role") if r["metadata"]["name"].endswith("leader-election")]


def test_several_replicas_without_leader_election_are_refused() -> None:
    error = render_error(sets=["leaderElection.enabled=false", "replicaCount=2"])
    assert "/replicaCount" in error


def test_the_health_server_is_on_by_default_and_probes_what_the_operator_does() -> None:
    healthy = default()
    container = healthy.container()
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["periodSeconds"] == 20
    assert {"name": "health", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = env_of(container)
    assert (env["MODELROUTE_HEALTH_PORT"], env["MODELROUTE_WEDGED_SECONDS"]) == ("8081", "15")
    service_ports = {p["name"]: p for p in healthy.one("Service")["spec"]["ports"]}
    assert service_ports["metrics"]["targetPort"] == "health"
    # off: the webhook port's TLS /healthz
    container = render(CI["default"], sets=["health.enabled=false"]).container()
    https = {"path": "/healthz", "port": "webhook", "scheme": "HTTPS"}
    assert container["livenessProbe"]["httpGet"] == https
    assert container["readinessProbe"]["httpGet"] == https
    assert "MODELROUTE_HEALTH_PORT" not in env_of(container)


def test_injector_settings_reach_the_operator() -> None:
    rendered = render(
        CI["default"],
        sets=["sidecar.image.tag=1.2.3", "sidecar.workers=2", "webhook.validating.missingReferences=Warn"],
    )
    env = env_of(rendered.container())
    assert env["MODELROUTE_SIDECAR_IMAGE"] == "modelroute/sidecar:1.2.3"
    assert env["MODELROUTE_SIDECAR_PORT"] == "15080"
    assert env["MODELROUTE_SIDECAR_ADMIN_PORT"] == "9901"
    assert env["MODELROUTE_SIDECAR_ADMIN_PORT_NAME"] == "mr-admin"
    assert env["MODELROUTE_SIDECAR_WORKERS"] == "2"
    assert env["MODELROUTE_SIDECAR_NATIVE"] == "true"
    assert env["MODELROUTE_SIDECAR_RUN_AS_USER"] == "65532"
    assert env["MODELROUTE_SIDECAR_REGION"] == ""
    assert env["MODELROUTE_WEBHOOK_PORT"] == "9443"
    assert env["MODELROUTE_WEBHOOK_CERT_DIR"] == "/tmp/webhook-tls"
    assert env["MODELROUTE_WEBHOOK_MISSING_REFERENCES"] == "Warn"
    assert env["MODELROUTE_WEBHOOK_REFERENCED_DELETES"] == "Refuse"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert json.loads(env["MODELROUTE_SIDECAR_RESOURCES"]) == values["sidecar"]["resources"]


def test_the_sidecar_ports_reach_the_operator_without_the_injector() -> None:
    """The reconciler refuses replica URLs at the sidecars' ports, also when sidecars are not injected."""
    rendered = render(CI["default"], sets=["webhook.enabled=false", "sidecar.adminPort=19901"])
    env = env_of(rendered.container())
    assert (env["MODELROUTE_SIDECAR_PORT"], env["MODELROUTE_SIDECAR_ADMIN_PORT"]) == ("15080", "19901")
    assert "MODELROUTE_WEBHOOK_PORT" not in env


def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    rendered = render(CI["default"], sets=[f"image.digest={digest}"])
    assert rendered.container()["image"] == f"modelroute/operator@{digest}"


def test_pod_disruption_budget() -> None:
    pdb = default().one("PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == (default().one("Deployment")["spec"]["selector"]["matchLabels"])
    )
    pdb = render(CI["default"], sets=["podDisruptionBudget.maxUnavailable=1"]).one("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


# --- RBAC -----------------------------------------------------------------------------------------


def rules_of(doc: Doc) -> list[Doc]:
    rules: list[Doc] = doc["rules"]
    return rules


def verbs_for(rules: list[Doc], group: str, resource: str, name: str | None = None) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            names = rule.get("resourceNames")
            if names is None or name in names:
                verbs |= set(rule["verbs"])
    return verbs


def test_rbac_is_cluster_wide_by_default_and_least_privilege() -> None:
    rendered = default()
    role = rendered.one("ClusterRole", FULLNAME)
    binding = rendered.one("ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    rules = rules_of(role)
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
    # Secrets: created (RBAC cannot narrow create by name) and read back by the one name it manages.
    assert verbs_for(rules, "", "secrets") == {"create"}, "no Secret is read, listed or changed"
    assert verbs_for(rules, "", "secrets", "modelroute-sidecar-admin") == {"create", "get"}
    # Cluster-wide mode binds credential reads nowhere by default.
    assert not [b for b in rendered.all("RoleBinding") if b["roleRef"]["name"] == f"{FULLNAME}-credentials"]
    assert not [
        b for b in rendered.all("ClusterRoleBinding") if b["roleRef"]["name"] == f"{FULLNAME}-credentials"
    ]
    assert verbs_for(rules, "", "configmaps") == {"create"}
    # list/watch by name: only with a metadata.name field selector (the operator's watch of its ConfigMaps)
    assert verbs_for(rules, "", "configmaps", "modelroute-router-config") == {
        "create",
        "get",
        "list",
        "watch",
        "patch",
        "delete",
    }
    assert verbs_for(rules, "", "pods") == {"list", "watch"}
    assert verbs_for(rules, "", "events") == {"create"}
    for kind in OUR_KINDS:
        assert verbs_for(rules, "modelroute.dev", kind) == {"get", "list", "watch"}, "specs are never written"
        assert verbs_for(rules, "modelroute.dev", f"{kind}/status") == {"patch"}
    discovery = rules_of(rendered.one("ClusterRole", f"{FULLNAME}-discovery"))
    assert verbs_for(discovery, "apiextensions.k8s.io", "customresourcedefinitions") == {
        "get",
        "list",
        "watch",
    }
    assert verbs_for(discovery, "", "namespaces") == {"get", "list", "watch"}
    lease_role = rendered.one("Role", f"{FULLNAME}-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert verbs_for(rules_of(lease_role), "coordination.k8s.io", "leases", FULLNAME) == {
        "create",
        "get",
        "update",
    }
    assert verbs_for(rules_of(lease_role), "coordination.k8s.io", "leases", "someone-else") == {"create"}


def test_rbac_is_per_namespace_when_namespaces_are_listed() -> None:
    rendered = render(CI["namespaced-rbac"])
    assert not [r for r in rendered.all("ClusterRole") if r["metadata"]["name"] == FULLNAME]
    assert sorted(r["metadata"]["name"] for r in rendered.all("ClusterRole")) == [
        f"{FULLNAME}-credentials",  # bound only by RoleBindings in the watched namespaces
        f"{FULLNAME}-discovery",
        f"{FULLNAME}-webhook-cert",  # its own two webhook configurations, by name
    ]
    credentials = {
        b["metadata"]["namespace"]
        for b in rendered.all("RoleBinding")
        if b["roleRef"]
        == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{FULLNAME}-credentials"}
    }
    assert credentials == {"team-a", "team-b"}
    roles = {r["metadata"]["namespace"]: r for r in rendered.all("Role") if r["metadata"]["name"] == FULLNAME}
    assert set(roles) == {"team-a", "team-b"}
    assert rules_of(roles["team-a"]) == rules_of(default().one("ClusterRole", FULLNAME))
    bindings = {
        b["metadata"]["namespace"] for b in rendered.all("RoleBinding") if b["metadata"]["name"] == FULLNAME
    }
    assert bindings == {"team-a", "team-b"}
    args = rendered.container()["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    validating = webhooks(rendered, "ValidatingWebhookConfiguration")["validate.modelroute.dev"]
    assert validating["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    ]
    for hook in webhooks(rendered, "MutatingWebhookConfiguration").values():
        exprs = hook["namespaceSelector"]["matchExpressions"]
        assert {
            "key": "kubernetes.io/metadata.name",
            "operator": "In",
            "values": ["team-a", "team-b"],
        } in exprs


def test_glob_namespaces_keep_cluster_wide_rbac() -> None:
    rendered = render(CI["default"], sets=["watchNamespaces={team-*,prod}"])
    assert rendered.one("ClusterRole", FULLNAME)
    assert not [r for r in rendered.all("Role") if r["metadata"]["name"] == FULLNAME]
    assert "--namespace=team-*" in rendered.container()["args"]


def test_no_rbac_when_disabled() -> None:
    rendered = render(CI["default"], sets=["rbac.create=false", "serviceAccount.create=false"])
    assert not rendered.kinds() & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


# --- webhooks -------------------------------------------------------------------------------------


def openssl(*args: str, stdin: bytes) -> str:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_validating_webhook_covers_our_three_kinds() -> None:
    rendered = default()
    hooks = webhooks(rendered, "ValidatingWebhookConfiguration")
    assert list(hooks) == ["validate.modelroute.dev"]
    hook = hooks["validate.modelroute.dev"]
    assert hook["rules"] == [
        {
            "apiGroups": ["modelroute.dev"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": OUR_KINDS,
            "scope": "Namespaced",
        }
    ]
    assert hook["clientConfig"]["service"] == {
        "name": FULLNAME,
        "namespace": NAMESPACE,
        "path": "/validate",
        "port": 443,
    }
    assert hook["failurePolicy"] == "Ignore", (
        "fails open: the operator re-checks and keeps the last good config"
    )
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    strict = render(CI["default"], sets=["webhook.validating.failurePolicy=Fail"])
    assert (
        webhooks(strict, "ValidatingWebhookConfiguration")["validate.modelroute.dev"]["failurePolicy"]
        == "Fail"
    )


def test_mutating_webhook_selects_labelled_namespaces_and_opted_in_pods() -> None:
    rendered = default()
    hooks = webhooks(rendered, "MutatingWebhookConfiguration")
    assert list(hooks) == ["namespace.inject.modelroute.dev", "pod.inject.modelroute.dev"]
    for hook in hooks.values():
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["failurePolicy"] == "Fail"
        assert hook["reinvocationPolicy"] == "IfNeeded"
    by_namespace = hooks["namespace.inject.modelroute.dev"]
    # The server injects every pod on this path, and only pods that ask on the other.
    assert by_namespace["clientConfig"]["service"]["path"] == "/mutate-pods/namespace-enabled"
    assert hooks["pod.inject.modelroute.dev"]["clientConfig"]["service"]["path"] == "/mutate-pods"
    assert match_expressions(by_namespace["namespaceSelector"]) == {
        "modelroute.dev/inject": ("In", ["enabled"]),
        "kubernetes.io/metadata.name": ("NotIn", [NAMESPACE]),
    }
    assert match_expressions(by_namespace["objectSelector"]) == {
        "modelroute.dev/inject": ("NotIn", ["false", "disabled"])
    }
    by_pod = hooks["pod.inject.modelroute.dev"]
    assert by_pod["objectSelector"] == {"matchLabels": {"modelroute.dev/inject": "true"}}
    selector = match_expressions(by_pod["namespaceSelector"])
    assert selector["modelroute.dev/inject"] == ("NotIn", ["enabled", "disabled"]), (
        "never twice in one namespace"
    )
    operator, excluded = selector["kubernetes.io/metadata.name"]
    assert operator == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(excluded), "never inject into the system or the operator itself"
    relaxed = render(CI["default"], sets=["webhook.mutating.failurePolicy=Ignore"])
    assert {h["failurePolicy"] for h in webhooks(relaxed, "MutatingWebhookConfiguration").values()} == {
        "Ignore"
    }


def test_annotated_pods_need_the_catch_all_webhook_which_never_blocks() -> None:
    rendered = render(CI["default"], sets=["webhook.mutating.matchAnnotatedPods=true"])
    hook = webhooks(rendered, "MutatingWebhookConfiguration")["annotated.inject.modelroute.dev"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"]["service"]["path"] == "/mutate-pods", "only pods that ask are injected"
    assert match_expressions(hook["objectSelector"]) == {"modelroute.dev/inject": ("DoesNotExist", [])}


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_two_renders_are_byte_identical(values: Path) -> None:
    """What `helm template` gives is what Argo CD and Flux compare with the cluster: a render that
    changed by itself (a new CA each time) would show the release out of sync on every refresh."""
    args = template_args([values], [], [], NAMESPACE, RELEASE)
    first, second = run_helm(*args), run_helm(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout


def test_the_operator_keeps_the_certificate_and_the_chart_renders_none() -> None:
    rendered = default()
    assert "Secret" not in rendered.kinds()
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in webhooks(rendered, kind).values():
            assert "caBundle" not in hook["clientConfig"], f"{kind} {hook['name']}: the operator patches it"
    container = rendered.container()
    env = env_of(container)
    assert env["MODELROUTE_WEBHOOK_MANAGE_CERT"] == "true"
    assert env["MODELROUTE_WEBHOOK_SECRET"] == f"{FULLNAME}-webhook-tls"
    assert env["MODELROUTE_WEBHOOK_CONFIGURATION"] == FULLNAME
    assert env["MODELROUTE_WEBHOOK_HOSTS"].split(",") == [
        FULLNAME,
        f"{FULLNAME}.{NAMESPACE}",
        f"{FULLNAME}.{NAMESPACE}.svc",
        f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
    ]
    assert env["MODELROUTE_WEBHOOK_CERT_DAYS"] == "3650"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["MODELROUTE_WEBHOOK_CERT_DIR"].startswith("/tmp/") and "/tmp" in mounts, "a writable emptyDir"
    volumes = {v["name"] for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert "webhook-tls" not in volumes
    role = rules_of(rendered.one("Role", f"{FULLNAME}-webhook-cert"))
    assert verbs_for(role, "", "secrets", f"{FULLNAME}-webhook-tls") == {"create", "get", "update"}
    assert verbs_for(role, "", "secrets", "other") == {"create"}
    cluster = rules_of(rendered.one("ClusterRole", f"{FULLNAME}-webhook-cert"))
    for resource in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        assert verbs_for(cluster, "admissionregistration.k8s.io", resource, FULLNAME) == {"get", "patch"}
        assert verbs_for(cluster, "admissionregistration.k8s.io", resource, "someone-elses") == set()
    with_cert_manager = render(CI["cert-manager"])
    assert "MODELROUTE_WEBHOOK_MANAGE_CERT" not in env_of(with_cert_manager.container())
    assert not [r for r in with_cert_manager.all("Role") if r["metadata"]["name"].endswith("-webhook-cert")]


def test_cert_manager_issues_the_certificate_and_injects_the_ca() -> None:
    rendered = render(CI["cert-manager"])
    assert "Secret" not in rendered.kinds(), "cert-manager owns the Secret"
    assert "Issuer" not in rendered.kinds(), "an issuerRef was given"
    certificate = rendered.one("Certificate", f"{FULLNAME}-webhook")
    spec = certificate["spec"]
    assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "internal-ca"}
    assert f"{FULLNAME}.{NAMESPACE}.svc" in spec["dnsNames"]
    volumes = {v["name"]: v for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == spec["secretName"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        config = rendered.one(kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{FULLNAME}-webhook"
        )
        for hook in config["webhooks"]:
            assert "caBundle" not in hook["clientConfig"], "cainjector fills it"
    self_signed = render(CI["default"], sets=["webhook.certManager.enabled=true"])
    issuer = self_signed.one("Issuer", f"{FULLNAME}-selfsigned")
    assert issuer["spec"] == {"selfSigned": {}}
    assert self_signed.one("Certificate")["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]


def test_webhooks_off_render_no_certificate_or_configuration() -> None:
    rendered = render(CI["minimal"])
    assert not rendered.kinds() & {
        "Secret",
        "Certificate",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    assert [p["name"] for p in rendered.one("Service")["spec"]["ports"]] == ["metrics"]
    container = rendered.container()
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert "MODELROUTE_WEBHOOK_PORT" not in env_of(container)
    bare = render(CI["minimal"], sets=["health.enabled=false"])
    assert "Service" not in bare.kinds()
    assert "livenessProbe" not in bare.container(), "nothing to probe without the webhook or health server"


# --- monitoring -----------------------------------------------------------------------------------


PROMETHEUS_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_no_monitoring_objects_by_default_even_when_the_api_exists() -> None:
    rendered = render(CI["default"], api_versions=PROMETHEUS_APIS)
    assert not rendered.kinds() & PROMETHEUS_KINDS
    assert "ConfigMap" not in rendered.kinds()


def test_prometheus_objects_only_when_enabled_and_the_api_exists() -> None:
    without_api = render(CI["monitoring-on"])
    assert not without_api.kinds() & PROMETHEUS_KINDS
    with_api = render(CI["monitoring-on"], api_versions=PROMETHEUS_APIS)
    assert with_api.kinds() >= PROMETHEUS_KINDS
    service_monitor = with_api.one("ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = with_api.one("Service")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    pod_monitor = with_api.one("PodMonitor")
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {"modelroute.dev/router": "sidecar"}}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "mr-admin"
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    only_rules = render(
        CI["default"], sets=["monitoring.prometheusRule.enabled=true"], api_versions=PROMETHEUS_APIS[2:]
    )
    assert only_rules.kinds() & PROMETHEUS_KINDS == {"PrometheusRule"}


def test_service_monitor_needs_the_health_server() -> None:
    error = render_error(sets=["monitoring.serviceMonitor.enabled=true", "health.enabled=false"])
    assert "monitoring.serviceMonitor.enabled needs health.enabled=true" in error


def test_grafana_dashboard_config_map() -> None:
    rendered = render(CI["monitoring-on"])
    cm = rendered.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    dashboard = json.loads(cm["data"]["modelroute.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "modelroute.json").read_text())
    elsewhere = render(CI["monitoring-on"], sets=["monitoring.grafanaDashboard.namespace=grafana"])
    assert elsewhere.one("ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == "grafana"


def test_no_secret_material_outside_the_webhook_secret() -> None:
    """Only the webhook Secret carries key material; nothing else embeds a private key."""
    rendered = default()
    for doc in rendered.docs:
        if doc["kind"] == "Secret":
            continue
        for node in walk(doc):
            if isinstance(node, str):
                assert "PRIVATE KEY" not in node and "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS" not in node


def _values_tree() -> Any:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_defaults_match_the_issue() -> None:
    values = _values_tree()
    assert values["replicaCount"] == 2
    assert values["leaderElection"]["enabled"] is True
    assert values["webhook"]["enabled"] is True
    assert values["monitoring"]["serviceMonitor"]["enabled"] is False
    assert values["monitoring"]["grafanaDashboard"]["labels"] == {"grafana_dashboard": "1"}


# --- Secrets: credentials grants and the creation guard --------------------------------------------


def _credential_bindings(rendered: Rendered) -> set[str]:
    return {
        b["metadata"]["namespace"]
        for b in rendered.all("RoleBinding")
        if b["roleRef"]["name"] == f"{FULLNAME}-credentials"
    }


def test_credentials_can_be_granted_in_more_namespaces_and_narrowed_by_name() -> None:
    rendered = render(
        CI["default"],
        sets=["rbac.credentials.namespaces={team-x,team-y}", "rbac.credentials.secretNames={openai-key}"],
    )
    assert _credential_bindings(rendered) == {"team-x", "team-y"}
    (rule,) = rules_of(rendered.one("ClusterRole", f"{FULLNAME}-credentials"))
    assert rule == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["openai-key"],
        "verbs": ["get"],
    }
    namespaced = render(CI["namespaced-rbac"], sets=["rbac.credentials.watchedNamespaces=false"])
    assert _credential_bindings(namespaced) == set()


def test_the_operator_is_told_its_credentials_role_and_service_account() -> None:
    env = {e["name"]: e.get("value") for e in default().container()["env"]}
    assert env["MODELROUTE_CREDENTIALS_CLUSTERROLE"] == f"{FULLNAME}-credentials"
    assert env["MODELROUTE_SERVICE_ACCOUNT"] == f"{NAMESPACE}:{FULLNAME}"


def test_the_secret_guard_limits_what_the_operator_may_create() -> None:
    rendered = default()
    policy = rendered.one("ValidatingAdmissionPolicy", f"{FULLNAME}-operator-secrets")
    (condition,) = policy["spec"]["matchConditions"]
    assert (
        condition["expression"]
        == f"request.userInfo.username == 'system:serviceaccount:{NAMESPACE}:{FULLNAME}'"
    )
    expressions = [v["expression"] for v in policy["spec"]["validations"]]
    # besides the admin Secret, the operator's own webhook certificate, in its namespace, of its type
    own = (
        f"(request.namespace == '{NAMESPACE}' && object.metadata.name == '{FULLNAME}-webhook-tls' "
        "&& object.type == 'kubernetes.io/tls') || "
    )
    assert expressions == [
        own + "object.metadata.name == 'modelroute-sidecar-admin'",
        own + "object.type == 'Opaque'",
        own + "!(request.namespace in ['kube-node-lease','kube-public','kube-system'])",
    ]
    with_cert_manager = render(CI["cert-manager"]).one(
        "ValidatingAdmissionPolicy", f"{FULLNAME}-operator-secrets"
    )
    assert [v["expression"] for v in with_cert_manager["spec"]["validations"]] == [
        "object.metadata.name == 'modelroute-sidecar-admin'",
        "object.type == 'Opaque'",
        "!(request.namespace in ['kube-node-lease','kube-public','kube-system'])",
    ]
    binding = rendered.one("ValidatingAdmissionPolicyBinding", f"{FULLNAME}-operator-secrets")
    assert binding["spec"] == {"policyName": f"{FULLNAME}-operator-secrets", "validationActions": ["Deny"]}
    assert (
        "ValidatingAdmissionPolicy"
        not in render(CI["default"], sets=["rbac.secretGuard.enabled=false"]).kinds()
    )


# --- NetworkPolicies ----------------------------------------------------------------------------------


def _allowed_tcp(policy: Doc, port: int) -> list[list[Doc] | None]:
    """The `from` of every ingress rule that admits TCP `port` (None: from anywhere)."""
    peers = []
    for rule in policy["spec"]["ingress"]:
        for p in rule.get("ports", []):
            if p.get("protocol", "TCP") == "TCP" and p["port"] <= port <= p.get("endPort", p["port"]):
                peers.append(rule.get("from"))
    return peers


OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/component": "operator",
            "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/name": "modelroute",
        }
    },
}
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def test_the_sidecar_admin_port_is_open_only_to_the_operator_and_monitoring() -> None:
    rendered = render(CI["namespaced-rbac"])
    policies = {
        p["metadata"]["namespace"]: p
        for p in rendered.all("NetworkPolicy")
        if p["metadata"]["name"] == f"{FULLNAME}-sidecar-admin"
    }
    assert set(policies) == {"team-a", "team-b"}
    policy = policies["team-a"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"modelroute.dev/router": "sidecar"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _allowed_tcp(policy, 9901) == [[OPERATOR_PEER], [PROMETHEUS_PEER]]
    # The application's own ports stay open to everyone (a NetworkPolicy can only allow).
    for port in (1, 80, 8080, 9900, 9902, 15080, 65535):
        assert _allowed_tcp(policy, port) == [None], port
    assert {"protocol": "UDP"} in policy["spec"]["ingress"][0]["ports"]


def test_the_sidecar_policy_follows_the_admin_port_and_the_monitoring_peers(tmp_path: Path) -> None:
    no_metrics = tmp_path / "no-metrics.yaml"
    no_metrics.write_text("networkPolicy:\n  metricsFrom: []\n")
    rendered = render(
        CI["default"],
        no_metrics,
        sets=[
            "sidecar.adminPort=15000",
            "networkPolicy.sidecar.namespaces={apps}",
        ],
    )
    (policy,) = [
        p for p in rendered.all("NetworkPolicy") if p["metadata"]["name"] == f"{FULLNAME}-sidecar-admin"
    ]
    assert policy["metadata"]["namespace"] == "apps"
    assert _allowed_tcp(policy, 15000) == [[OPERATOR_PEER]]  # no metrics peers: the operator only
    assert _allowed_tcp(policy, 9901) == [None]


def test_cluster_wide_mode_renders_sidecar_policies_only_where_told() -> None:
    names = [p["metadata"]["name"] for p in default().all("NetworkPolicy")]
    assert names == [f"{FULLNAME}-operator"]


def test_the_operator_pods_admit_the_webhook_from_anywhere_and_metrics_from_monitoring() -> None:
    rendered = render(CI["default"], sets=["health.enabled=true"])
    policy = rendered.one("NetworkPolicy", f"{FULLNAME}-operator")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"] == OPERATOR_PEER["podSelector"]["matchLabels"]
    assert _allowed_tcp(policy, 9443) == [None]  # the API server has no selectable identity
    assert _allowed_tcp(policy, 8081) == [[PROMETHEUS_PEER]]
    assert _allowed_tcp(policy, 8080) == []


def test_network_policies_can_be_turned_off() -> None:
    assert "NetworkPolicy" not in render(CI["namespaced-rbac"], sets=["networkPolicy.enabled=false"]).kinds()
    off = render(CI["namespaced-rbac"], sets=["networkPolicy.operator.enabled=false"])
    assert {p["metadata"]["name"] for p in off.all("NetworkPolicy")} == {f"{FULLNAME}-sidecar-admin"}


def test_the_fleet_store_reaches_the_injector_by_url_and_secret_names_only() -> None:
    rendered = render(
        CI["default"],
        sets=[
            "fleetStore.url=rediss://valkey.shared:6380/2",
            "fleetStore.username=router",
            "fleetStore.passwordSecret.name=fleet-store",
            "fleetStore.caSecret.name=fleet-ca",
        ],
    )
    env = env_of(rendered.container())
    assert env["MODELROUTE_SIDECAR_FLEET_STORE_URL"] == "rediss://valkey.shared:6380/2"
    assert env["MODELROUTE_SIDECAR_FLEET_STORE_USERNAME"] == "router"
    assert (
        env["MODELROUTE_SIDECAR_FLEET_STORE_PASSWORD_SECRET"],
        env["MODELROUTE_SIDECAR_FLEET_STORE_PASSWORD_KEY"],
    ) == (
        "fleet-store",
        "password",
    )
    assert env["MODELROUTE_SIDECAR_FLEET_STORE_CA_SECRET"] == "fleet-ca"
    assert not [d for d in rendered.docs if "fleet-store" in d["metadata"]["name"]]  # no store of our own
    plain = env_of(render(CI["default"]).container())
    assert not [name for name in plain if "FLEET" in name]


def test_the_charts_own_fleet_store_takes_its_password_from_the_secret() -> None:
    rendered = render(
        CI["default"], sets=["fleetStore.deploy.enabled=true", "fleetStore.passwordSecret.name=fleet-store"]
    )
    store = next(d for d in rendered.all("Deployment") if d["metadata"]["name"].endswith("-fleet-store"))
    container = store["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "fleet-store", "key": "password"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = next(d for d in rendered.all("Service") if d["metadata"]["name"].endswith("-fleet-store"))
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "fleet-store"
    operator = next(
        d for d in rendered.all("Deployment") if not d["metadata"]["name"].endswith("-fleet-store")
    )
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["MODELROUTE_SIDECAR_FLEET_STORE_URL"] == (
        f"redis://{store['metadata']['name']}.{store['metadata']['namespace']}.svc:6379/0"
    )
