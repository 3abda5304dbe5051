"""Alerts, dashboard and kube-state-metrics config stay true to what the code exports.

Every `modelroute_*` series a rule or panel queries exists (a sidecar metric from metrics.py or a
kube-state-metrics series from the chart's own config), every `by (...)` label is one those series
carry, every `outcome` value matched is one the sidecar writes, and the kube-state-metrics paths exist
in the CRD schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from modelroute_operator.logic.resources import CanaryPhase
from modelroute_sidecar.metrics import Metrics
from tests.chart.helm import CHART, CI_VALUES, PROMETHEUS_APIS, Doc, render
from tests.kube_harness import REPO

MONITORING = next(p for p in CI_VALUES if p.name == "monitoring-on-values.yaml")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
TARGET_LABELS = {"namespace", "pod", "le", "job", "instance", "container"}
"""Labels Prometheus adds to every scraped series (and `le` on histogram buckets)."""
REQUIRED_ALERTS = {
    "ModelrouteSidecarConfigOutOfSync",
    "ModelrouteResidencyBlocksSpike",
    "ModelrouteUpstreamErrorRateHigh",
    "ModelrouteCanaryRolledBack",
    "ModelrouteNoHealthyEndpoint",
}


def sidecar_series() -> dict[str, set[str]]:
    """Series name → label names, for every metric the sidecar exports."""
    out: dict[str, set[str]] = {}
    for metric in Metrics().families():
        for suffix in SUFFIXES[metric.kind]:
            out[metric.name + suffix] = set(metric.label_names)
    return out


def ksm_config() -> dict[str, Any]:
    rendered = render(MONITORING, api_versions=PROMETHEUS_APIS)
    cm = rendered.one("ConfigMap", "mr-modelroute-kube-state-metrics")
    config: dict[str, Any] = yaml.safe_load(cm["data"]["modelroute.yaml"])
    return config


def ksm_series() -> dict[str, set[str]]:
    """Series name → label names, for what kube-state-metrics exports with the chart's config."""
    out: dict[str, set[str]] = {}
    for resource in ksm_config()["spec"]["resources"]:
        common = set(resource.get("labelsFromPath", {}))
        for metric in resource["metrics"]:
            each = metric["each"]
            labels = set(common)
            if each["type"] == "StateSet":
                labels.add(each["stateSet"]["labelName"])
            else:
                labels |= set(each["gauge"].get("labelsFromPath", {}))
            out[f"{resource['metricNamePrefix']}_{metric['name']}"] = labels
    return out


KNOWN = {**sidecar_series(), **ksm_series()}
KNOWN["kube_deployment_status_replicas_available"] = {"namespace", "deployment"}


def prometheus_rule() -> Doc:
    return render(MONITORING, api_versions=PROMETHEUS_APIS).one("PrometheusRule")


def rules() -> Iterator[Doc]:
    for group in prometheus_rule()["spec"]["groups"]:
        yield from group["rules"]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "dashboards" / "modelroute.json").read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    out = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            out.append(var["definition"])
    return out


def all_exprs() -> list[tuple[str, str]]:
    return [(str(r.get("alert", r.get("record", "?"))), str(r["expr"])) for r in rules()] + [
        ("dashboard", e) for e in dashboard_exprs()
    ]


@pytest.mark.parametrize(("where", "expr"), all_exprs())
def test_queries_use_series_and_labels_that_exist(where: str, expr: str) -> None:
    names = set(re.findall(r"\b((?:modelroute|kube)_[a-z_]+)\b", expr))
    assert names, f"{where}: no metric in {expr}"
    unknown = names - set(KNOWN)
    assert not unknown, f"{where}: unknown series {unknown}"
    available = set().union(*(KNOWN[n] for n in names)) | TARGET_LABELS
    for group in re.findall(r"\bby \(([^)]*)\)", expr):
        labels = {label.strip() for label in group.split(",")}
        assert labels <= available, f"{where}: grouping by unknown labels {labels - available}"
    for label in re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)", expr):
        assert label in available, f"{where}: matcher on unknown label {label}"


def test_outcome_values_matched_are_written_by_the_sidecar() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "sidecar" / "modelroute_sidecar").rglob("*.py"))
    matched: set[str] = set()
    for _, expr in all_exprs():
        for value in re.findall(r'outcome\s*(?:=~|!~|!=|=)\s*"([^"]*)"', expr):
            matched |= set(value.split("|"))
    assert matched, "no outcome matcher found"
    for value in matched:
        assert f'"{value}"' in source, f"the sidecar never writes outcome {value!r}"


def test_alerts_are_complete_and_labelled() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert alerts.keys() >= REQUIRED_ALERTS
    extra = {
        r["alert"]
        for r in yaml.safe_load(MONITORING.read_text())["monitoring"]["prometheusRule"]["additionalRules"]
    }
    for name, rule in alerts.items():
        assert rule["labels"].get("severity") in {"info", "warning", "critical", "page"}, name
        if name not in extra:
            assert rule["labels"]["team"] == "platform", f"{name}: alertLabels not applied"
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
            assert (
                "{{ $labels" in rule["annotations"]["description"] or name == "ModelrouteOperatorUnavailable"
            )
    assert "> 0.2" in str(alerts["ModelrouteUpstreamErrorRateHigh"]["expr"]), "threshold from values"
    assert alerts["ModelrouteUpstreamErrorRateHigh"]["labels"]["severity"] == "critical"
    assert "ModelrouteHighSpend" in alerts, "additionalRules are appended"


def test_alert_switches() -> None:
    rendered = render(
        MONITORING,
        sets=[
            "monitoring.kubeStateMetrics.enabled=false",
            "monitoring.prometheusRule.alerts.configRejected.enabled=false",
        ],
        api_versions=PROMETHEUS_APIS,
    )
    alerts = {r.get("alert") for g in rendered.one("PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert "ModelrouteCanaryRolledBack" not in alerts, "needs kube-state-metrics"
    assert "ModelrouteSidecarConfigRejected" not in alerts
    assert "ModelrouteNoHealthyEndpoint" in alerts


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "modelroute-overview"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "endpoint"} <= set(variables)
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, panel["title"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("latency", "residency", "error", "failover", "spend", "config"):
        assert topic in titles, f"no panel about {topic}"


def crd_schema(kind: str) -> dict[str, Any]:
    for path in (REPO / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind}")


def descend(schema: dict[str, Any], path: list[str]) -> dict[str, Any]:
    node = schema
    for part in path:
        if node.get("type") == "array":
            node = node["items"]
        assert part in node.get("properties", {}), f"{part} not in {sorted(node.get('properties', {}))}"
        node = node["properties"][part]
    return node


def test_kube_state_metrics_paths_exist_in_the_crds() -> None:
    for resource in ksm_config()["spec"]["resources"]:
        gvk = resource["groupVersionKind"]
        assert (gvk["group"], gvk["version"]) == ("modelroute.dev", "v1alpha1")
        schema = crd_schema(gvk["kind"])
        for path in resource["labelsFromPath"].values():
            if path[0] != "metadata":
                descend(schema, path)
        for metric in resource["metrics"]:
            each = metric["each"]
            spec = each["stateSet"] if each["type"] == "StateSet" else each["gauge"]
            node = descend(schema, spec["path"])
            if node.get("type") == "array":
                for sub in [*spec.get("labelsFromPath", {}).values(), spec.get("valueFrom")]:
                    if sub:
                        descend(node["items"], sub)
            if each["type"] == "StateSet":
                assert spec["list"] == [p.value for p in CanaryPhase]


def test_kube_state_metrics_rbac_is_read_only() -> None:
    rendered = render(MONITORING, api_versions=PROMETHEUS_APIS)
    role = rendered.one("ClusterRole", "mr-modelroute-kube-state-metrics")
    assert {v for r in role["rules"] for v in r["verbs"]} == {"list", "watch"}
    binding = rendered.one("ClusterRoleBinding", "mr-modelroute-kube-state-metrics")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kube-state-metrics", "namespace": "monitoring"}
    ]
