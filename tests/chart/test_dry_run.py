"""The rendered chart, per values file, against the real API server: `kubectl apply --dry-run=server`.

Server-side apply with strict field validation, in a release namespace that warns on anything below the
`restricted` Pod Security Standard. The Prometheus Operator and cert-manager kinds are checked against
stub CRDs (tests/chart/stub-crds.yaml) carrying the upstream field names, so nothing is filtered out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.chart.helm import CI_VALUES, DEFAULT_VALUES, PROMETHEUS_APIS, Rendered, render
from tests.kube_harness import Kubectl, new_namespace, wait_for

pytestmark = pytest.mark.integration

STUB_CRDS = Path(__file__).with_name("stub-crds.yaml")


@pytest.fixture(scope="module")
def stub_crds(kubectl: Kubectl) -> list[str]:
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(STUB_CRDS.read_text())]
    kubectl.run("apply", "--server-side", "--field-manager=chart-tests", "-f", str(STUB_CRDS))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    plurals = ",".join(n.split(".", 1)[0] for n in names)
    wait_for(lambda: kubectl.run("get", plurals, "-A", check=False).returncode == 0, "stub CRD discovery")
    return names


def release_namespace(kubectl: Kubectl) -> str:
    ns = new_namespace(kubectl, "chart-dry")
    kubectl.run(
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/warn-version=latest",
    )
    return ns


def dry_run(kubectl: Kubectl, rendered: Rendered) -> tuple[int, str, str]:
    proc = kubectl.run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=chart-tests",
        "--validate=strict",
        "-f",
        "-",
        stdin=rendered.text,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_rendered_chart_is_accepted_by_the_api_server(
    kubectl: Kubectl, stub_crds: list[str], values: Path
) -> None:
    ns = release_namespace(kubectl)
    sets = []
    if "watchNamespaces" in (yaml.safe_load(values.read_text()) or {}):
        # Roles go into the watched namespaces, which must exist.
        watched = [new_namespace(kubectl, "chart-watched"), new_namespace(kubectl, "chart-watched")]
        sets.append("watchNamespaces={" + ",".join(watched) + "}")
    rendered = render(values, sets=sets, api_versions=PROMETHEUS_APIS, namespace=ns)
    code, stdout, stderr = dry_run(kubectl, rendered)
    assert code == 0, stderr
    assert "Warning" not in stderr, f"the API server warned:\n{stderr}"
    applied = [line for line in stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(rendered.docs), stdout


def test_pod_security_check_is_live(kubectl: Kubectl) -> None:
    """A weakened operator pod draws the restricted-profile warning, so its absence above means something."""
    ns = release_namespace(kubectl)
    rendered = render(
        DEFAULT_VALUES, sets=["securityContext.allowPrivilegeEscalation=true"], namespace=ns, release="weak"
    )
    code, _, stderr = dry_run(kubectl, rendered)
    assert code == 0, stderr
    assert "would violate PodSecurity" in stderr and "allowPrivilegeEscalation" in stderr, stderr


def test_stub_crds_refuse_a_misspelt_field(kubectl: Kubectl, stub_crds: list[str]) -> None:
    """Strict field validation against the stubs catches a typo the chart could make."""
    ns = release_namespace(kubectl)
    rendered = render(
        DEFAULT_VALUES,
        sets=["monitoring.prometheusRule.enabled=true"],
        api_versions=PROMETHEUS_APIS,
        namespace=ns,
    )
    rule = rendered.one("PrometheusRule")
    broken = yaml.safe_dump(
        {**rule, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "fore": "5m"}]}]}}
    )
    proc = kubectl.run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=broken,
        check=False,
    )
    assert proc.returncode != 0 and "fore" in proc.stderr, proc.stderr
