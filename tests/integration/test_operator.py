"""The operator against a real API server: compile on create/update/delete, honest status, Events,
the last good config kept while an object is broken, idempotence, and zero writes after a restart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelroute_contract import SCHEMA_VERSION, RouterConfig, config_key, short_version
from tests.kube_harness import ControlPlane, Kubectl, OperatorProcess, new_namespace, wait_for
from tests.manifests import canary, endpoint, policy, to_yaml, with_change

pytestmark = pytest.mark.integration

CONFIGMAP = "modelroute-router-config"
CUSTOM_ADMIN_PORT = 19931
"""The sidecar admin port this module's operator is configured to inject (not the default 9901)."""


@pytest.fixture(scope="module")
def watched(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for this module, watching namespaces named `op-*`, injecting a custom admin port."""
    op = OperatorProcess(
        plane,
        tmp_path_factory.mktemp("operator") / "operator.log",
        namespaces=["op-*"],
        extra_env={"MODELROUTE_SIDECAR_ADMIN_PORT": str(CUSTOM_ADMIN_PORT)},
    )
    op.start()
    yield op
    op.stop()


def live_config(kubectl: Kubectl, ns: str) -> RouterConfig | None:
    cm = kubectl.get("configmap", CONFIGMAP, ns)
    if cm is None:
        return None
    return RouterConfig.from_json(cm["data"][config_key(SCHEMA_VERSION)])


def condition(obj: dict[str, Any] | None, ctype: str = "Ready") -> dict[str, Any] | None:
    if obj is None:
        return None
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def ready_status(kubectl: Kubectl, kind: str, name: str, ns: str) -> str | None:
    cond = condition(kubectl.get(kind, name, ns))
    return cond["status"] if cond else None


def passes(op: OperatorProcess, ns: str, since: int = 0) -> list[dict[str, str]]:
    """Reconcile passes the operator logged for `ns` after log offset `since`."""
    pattern = re.compile(rf"pass {re.escape(ns)}: (.*)")
    out = []
    for match in pattern.finditer(op.log()[since:]):
        out.append(dict(kv.split("=", 1) for kv in match.group(1).split()))
    return out


def resource_versions(kubectl: Kubectl, ns: str) -> dict[str, str]:
    items = kubectl.json("get", "modelroute,configmap", "-n", ns)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def quiesce(kubectl: Kubectl, op: OperatorProcess, ns: str, obj: str) -> None:
    """Touch `obj`'s metadata (a pass we can wait for) and wait until a pass after it wrote nothing."""
    offset = len(op.log())
    kubectl.run("annotate", "--overwrite", "-n", ns, obj, f"touched={offset}")
    settle(op, ns, offset)


def synced(kubectl: Kubectl, ns: str, policy_name: str = "support") -> None:
    """Wait until the syncer has counted the sidecars on the live config: it writes the policy's sync
    figure after the reconciler's pass, so a quiet pass alone does not mean the namespace is at rest."""

    def counted() -> bool:
        live = live_config(kubectl, ns)
        obj = kubectl.get("routingpolicy", policy_name, ns) or {}
        status = obj.get("status") or {}
        return live is not None and status.get("syncedVersion") == short_version(live.version)

    wait_for(counted, f"the sync figure of {ns} on the live config")


def settle(op: OperatorProcess, ns: str, since: int) -> None:
    """Wait until a pass for `ns` after `since` wrote nothing (the namespace has converged)."""
    wait_for(
        lambda: any(
            p["config_written"] == "False" and p["status_writes"] == "0" for p in passes(op, ns, since)
        ),
        f"a quiet pass over {ns}",
    )


def test_create_update_delete_converge(kubectl: Kubectl, watched: OperatorProcess) -> None:
    ns = new_namespace(kubectl, "op-converge")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    config = wait_for(lambda: live_config(kubectl, ns), "the ConfigMap")
    assert [p.name for p in config.policies] == ["support"]
    assert config.policies[0].virtual_models == ("support-bot",)
    kubectl.run(
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "routingpolicy/support",
        "modelendpoint/llama",
        "--timeout=30s",
    )

    rp = kubectl.get("routingpolicy", "support", ns)
    assert rp is not None
    assert rp["status"]["configVersion"] == config.version.removeprefix("sha256:")
    assert rp["status"]["routes"] == 1
    assert rp["status"]["endpoints"] == ["llama"]
    assert rp["status"]["observedGeneration"] == rp["metadata"]["generation"]
    me = kubectl.get("modelendpoint", "llama", ns)
    assert me is not None
    # Probes are off in these manifests: no replica was probed, so none counts as ready.
    assert me["status"]["readySummary"] == "0/2 (probes off)"
    assert me["status"]["regions"] == "eu-west-1=0/1,us-east-1=0/1"

    # Printer columns show through kubectl get.
    table = kubectl.run("get", "routingpolicy", "-n", ns).stdout
    assert re.search(r"NAME\s+MODELS\s+READY\s+ROUTES\s+CONFIG\s+SYNC\s+AGE", table), table
    assert re.search(rf"support\s+\[\"support-bot\"\]\s+True\s+1\s+{config.version[7:]}", table), table
    table = kubectl.run("get", "modelendpoint", "-n", ns).stdout
    assert re.search(r"llama\s+org/llama\s+True\s+0/2 \(probes off\)\s+eu-west-1=0/1,us-east-1=0/1", table), table
    assert "llama" in kubectl.run("get", "modelroute", "-n", ns).stdout

    # Update: a new virtual model → a new version.
    kubectl.apply(to_yaml(policy(models=["support-bot", "helpdesk"])), ns)
    updated = wait_for(
        lambda: (c := live_config(kubectl, ns)) and c.version != config.version and c, "the updated config"
    )
    assert updated.policies[0].virtual_models == ("helpdesk", "support-bot")
    wait_for(
        lambda: (
            (kubectl.get("routingpolicy", "support", ns) or {}).get("status", {}).get("configVersion")
            == updated.version[7:]
        ),
        "status to show the new version",
    )

    # Delete everything → the ConfigMap goes.
    kubectl.run("delete", "-n", ns, "routingpolicy/support", "modelendpoint/llama")
    wait_for(lambda: kubectl.get("configmap", CONFIGMAP, ns) is None, "the ConfigMap to be deleted")


def test_broken_object_keeps_last_good_config(kubectl: Kubectl, watched: OperatorProcess) -> None:
    ns = new_namespace(kubectl, "op-broken")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    good = wait_for(lambda: live_config(kubectl, ns), "the first config")

    broken = with_change(policy(), "spec.rules.0.targets.0.endpoint", "gpt-missing")
    kubectl.apply(to_yaml(broken), ns)
    cond = wait_for(
        lambda: (
            (c := condition(kubectl.get("routingpolicy", "support", ns))) and c["reason"] == "Invalid" and c
        ),
        "Ready=False/Invalid on the broken policy",
    )
    assert cond["status"] == "False"
    assert "spec.rules[0].targets[0].endpoint" in cond["message"]
    assert "gpt-missing" in cond["message"]
    live = live_config(kubectl, ns)
    assert live is not None and live.version == good.version, "the last good config must keep serving"

    # The endpoint is fine and still live; its generation is in the live config.
    assert ready_status(kubectl, "modelendpoint", "llama", ns) == "True"

    events = kubectl.json("get", "events", "-n", ns, "--field-selector", "involvedObject.name=support")[
        "items"
    ]
    reasons = {(e["reason"], e["type"]) for e in events}
    assert ("Invalid", "Warning") in reasons, reasons

    # Fixing it brings the policy back to Ready with a new config.
    kubectl.apply(to_yaml(policy(models=["support-bot", "fixed"])), ns)
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", "routingpolicy/support", "--timeout=30s")
    fixed = live_config(kubectl, ns)
    assert fixed is not None and fixed.version != good.version


def test_a_replica_at_the_configured_sidecar_admin_port_is_refused(
    kubectl: Kubectl, watched: OperatorProcess
) -> None:
    ns = new_namespace(kubectl, "op-ownport")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    good = wait_for(lambda: live_config(kubectl, ns), "the first config")
    looped = with_change(endpoint(), "spec.replicas.0.url", f"http://127.0.0.1:{CUSTOM_ADMIN_PORT}/v1")
    kubectl.apply(to_yaml(looped), ns)
    cond = wait_for(
        lambda: (
            (c := condition(kubectl.get("modelendpoint", "llama", ns))) and c["reason"] == "Invalid" and c
        ),
        "Ready=False/Invalid on the endpoint pointing at the sidecar's admin port",
    )
    assert "spec.replicas[0].url" in cond["message"] and f"own port {CUSTOM_ADMIN_PORT}" in cond["message"]
    live = live_config(kubectl, ns)
    assert live is not None and live.version == good.version


def test_endpoint_change_blocked_by_another_broken_object_reports_blocked(
    kubectl: Kubectl, watched: OperatorProcess
) -> None:
    ns = new_namespace(kubectl, "op-blocked")
    kubectl.apply(to_yaml(endpoint(), policy(), endpoint("other")), ns)
    good = wait_for(lambda: live_config(kubectl, ns), "the first config")
    kubectl.apply(to_yaml(canary(candidate="not-there")), ns)
    # A valid change elsewhere cannot go live while the canary is broken: it says so.
    kubectl.apply(to_yaml(with_change(endpoint("other"), "spec.model", "org/other-v2")), ns)
    cond = wait_for(
        lambda: (
            (c := condition(kubectl.get("modelendpoint", "other", ns))) and c["reason"] == "Blocked" and c
        ),
        "Ready=False/Blocked on the valid endpoint",
    )
    assert "Canary/llama-next" in cond["message"]
    live = live_config(kubectl, ns)
    assert live is not None and live.version == good.version
    canary_cond = condition(kubectl.get("modelcanary", "llama-next", ns))
    assert canary_cond is not None and canary_cond["reason"] == "Invalid"
    assert "spec.candidate" in canary_cond["message"]


def test_reapply_is_idempotent_and_restart_writes_nothing(
    plane: ControlPlane, kubectl: Kubectl, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "restart")
    op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
    op.start()
    try:
        # Probes run (against a closed port) so the restart also covers the health monitor's state.
        probed = with_change(
            endpoint("small", {"eu-west-1": ["gdpr"]}, url_base="http://127.0.0.1:9/{region}/v1"),
            "spec.healthCheck",
            {"interval": "1s", "timeout": "500ms", "unhealthyThreshold": 1},
        )
        manifest = to_yaml(endpoint(), probed, policy())
        kubectl.apply(manifest, ns)
        wait_for(lambda: live_config(kubectl, ns), "the ConfigMap")
        wait_for(
            lambda: (
                (live := live_config(kubectl, ns))
                and {r.health for e in live.endpoints if e.name == "small" for r in e.replicas}
                == {"Unhealthy"}
            ),
            "the probed replica to be drained from the config",
        )
        quiesce(kubectl, op, ns, "modelendpoint/llama")
        synced(kubectl, ns)
        before = resource_versions(kubectl, ns)

        # The same manifests again: nothing changes anywhere.
        kubectl.apply(manifest, ns)
        quiesce(kubectl, op, ns, "modelendpoint/small")
        synced(kubectl, ns)
        after = resource_versions(kubectl, ns)
        assert after.pop("ModelEndpoint/small") != before.pop("ModelEndpoint/small")
        assert after == before, "re-applying the same manifests must not write anything"
        before = resource_versions(kubectl, ns)
    finally:
        op.stop()

    restarted = OperatorProcess(plane, tmp_path / "operator2.log", namespaces=[ns])
    restarted.start()
    try:
        settle(restarted, ns, 0)
        assert resource_versions(kubectl, ns) == before, "a restart must not write anything"
        assert all(
            p["config_written"] == "False" and p["status_writes"] == "0" for p in passes(restarted, ns)
        )
    finally:
        restarted.stop()


def test_sequence_counts_changes_and_continues_after_a_restart(
    plane: ControlPlane, kubectl: Kubectl, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "sequence")
    op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
    op.start()
    try:
        kubectl.apply(to_yaml(endpoint(), policy()), ns)
        first = wait_for(lambda: live_config(kubectl, ns), "the ConfigMap")
        assert first.sequence > 1  # nothing stored yet: starts above the clock (ms)
        kubectl.apply(to_yaml(policy(models=["support-bot", "helpdesk"])), ns)
        second = wait_for(
            lambda: (c := live_config(kubectl, ns)) and c.version != first.version and c, "the update"
        )
        assert second.sequence == first.sequence + 1
        quiesce(kubectl, op, ns, "routingpolicy/support")
        assert live_config(kubectl, ns) == second  # a pass without a change keeps the sequence
    finally:
        op.stop()

    restarted = OperatorProcess(plane, tmp_path / "operator2.log", namespaces=[ns])
    restarted.start()
    try:
        settle(restarted, ns, 0)
        assert live_config(kubectl, ns) == second, "a restart must not renumber"
        kubectl.apply(to_yaml(policy(models=["support-bot", "helpdesk", "faq"])), ns)
        third = wait_for(
            lambda: (c := live_config(kubectl, ns)) and c.version != second.version and c, "the change"
        )
        assert third.sequence == second.sequence + 1, "the sequence continues from the stored config"
    finally:
        restarted.stop()
