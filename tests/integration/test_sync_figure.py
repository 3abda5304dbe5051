"""The SYNC figure never shows `n/n` next to a config version no sidecar was counted on.

The syncer counts the sidecars on the live config it read at the start of its pass; the reconciler may
move the policy to a newer `configVersion` before the syncer writes. Written as it was counted, the
figure would read `1/1` beside the new version while the sidecar still runs the old one (what
`bench/closed_loop_bench.py --only ack` catches as "n/n ahead of the last acknowledgement"). Real
kube-apiserver, a real sidecar process, the operator's own Syncer in this process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes import config as kconfig

from modelroute_contract import RouterConfig, short_version
from modelroute_contract.admin import TOKEN_KEY, TOKEN_SECRET
from modelroute_operator.clients.inventory import Inventory
from modelroute_operator.clients.kube import KubeApi
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object
from modelroute_operator.logic.resources import ModelEndpoint, RoutingPolicy
from tests.kube_harness import (
    ControlPlane,
    Kubectl,
    SidecarProcess,
    create_pod,
    free_port,
    new_namespace,
    set_pod_status,
)
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def compiled(ns: str, models: list[str]) -> tuple[RouterConfig, dict[str, int]]:
    bodies = [endpoint(), policy(models=models)]
    for body in bodies:
        body["metadata"].update(namespace=ns, generation=1)
    parsed = [parse_object(b) for b in bodies]
    result = compile_namespace(
        NamespaceObjects(
            ns,
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [],
        )
    )
    assert result.config is not None, result.errors
    return result.config, {"ModelEndpoint/llama": 1, "RoutingPolicy/support": 1}


@pytest.fixture
async def kube(plane: ControlPlane) -> AsyncIterator[KubeApi]:
    api = KubeApi(kconfig.new_client_from_config(config_file=str(plane.kubeconfig)))
    yield api
    await api.aclose()


def policy_status(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    body = kubectl.get("routingpolicy", "support", ns) or {}
    status: dict[str, Any] = body.get("status") or {}
    return status


async def test_a_figure_counted_on_the_old_config_is_not_written_next_to_the_new_one(
    plane: ControlPlane, kubectl: Kubectl, kube: KubeApi, tmp_path: Any
) -> None:
    ns = new_namespace(kubectl, "sync-figure")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    old, sources = compiled(ns, ["support-bot"])
    new, _ = compiled(ns, ["support-bot", "helpdesk"])
    assert old.version != new.version
    await kube.apply_config(ns, old, sources)  # what the syncer reads as live
    token = await kube.ensure_secret_key(ns, TOKEN_SECRET, TOKEN_KEY, lambda: "sync-figure-token")
    sidecar = SidecarProcess(
        name="app-0", ip="127.0.4.1", port=free_port(), admin_port=free_port(), region="eu-west-1",
        workdir=tmp_path, namespace=ns, token=token, config_json=old.to_json(),
    )  # fmt: skip
    create_pod(kubectl, ns, "app-0", sidecar.admin_port)
    sidecar.start()
    try:
        set_pod_status(kubectl, ns, "app-0", sidecar.ip, True)
        assert sidecar.version() == old.version
        # The reconciler has moved the policy on to the new config since the syncer read the live one.
        kubectl.run(
            "patch", "routingpolicy", "support", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"configVersion": short_version(new.version)}}),
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            inventory = Inventory()  # what the operator's watches would hold: listed before each pass
            syncer = Syncer(kube, inventory, session)
            try:
                await inventory.load(kube, [ns])
                report = await syncer.sync(ns)
                assert report.version == old.version and not report.pushed  # it already runs `old`
                status = policy_status(kubectl, ns)
                assert status.get("configVersion") == short_version(new.version)
                shown = (status.get("sync"), status.get("syncedVersion"))
                assert status.get("sync") is None, f"SYNC {shown} beside CONFIG {short_version(new.version)}"

                # Counted on the version the policy names, the figure and its condition are written.
                kubectl.run(
                    "patch", "routingpolicy", "support", "-n", ns, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"configVersion": short_version(old.version)}}),
                )  # fmt: skip
                await inventory.load(kube, [ns])
                await syncer.sync(ns)
                status = policy_status(kubectl, ns)
                assert (status.get("sync"), status.get("syncedVersion")) == ("1/1", short_version(old.version))
                synced = {c["type"]: c for c in status.get("conditions") or []}["Synced"]
                assert (synced["status"], synced["reason"]) == ("True", "Synced"), synced
            finally:
                await syncer.close()
    finally:
        sidecar.stop()


async def test_a_status_write_conditional_on_a_stale_resource_version_is_refused(
    kubectl: Kubectl, kube: KubeApi
) -> None:
    ns = new_namespace(kubectl, "sync-rv")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    body = kubectl.get("routingpolicy", "support", ns)
    assert body is not None
    stale = body["metadata"]["resourceVersion"]
    assert await kube.patch_status(RoutingPolicy, ns, "support", {"configVersion": "aaaa"}, stale)
    # The write above moved the object on: a patch still conditional on `stale` is a conflict.
    assert not await kube.patch_status(RoutingPolicy, ns, "support", {"sync": "9/9"}, stale)
    status = policy_status(kubectl, ns)
    assert status.get("configVersion") == "aaaa" and "sync" not in status


def container_restarted(kubectl: Kubectl, ns: str, pod: str, restarts: int) -> None:
    """What a kubelet reports after the pod's container restarted in place (same pod, still Ready)."""
    status = {
        "name": "app", "ready": True, "restartCount": restarts, "image": "example.invalid/app:1",
        "imageID": "", "containerID": f"containerd://run-{restarts}",
        "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}},
    }  # fmt: skip
    kubectl.run(
        "patch", "pod", pod, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"containerStatuses": [status]}}),
    )  # fmt: skip


async def test_a_sidecar_that_restarted_on_an_older_file_is_asked_again_not_counted_from_memory(
    kubectl: Kubectl, kube: KubeApi, tmp_path: Any
) -> None:
    ns = new_namespace(kubectl, "sync-restart")
    kubectl.apply(to_yaml(endpoint(), policy()), ns)
    old, sources = compiled(ns, ["support-bot"])
    new, _ = compiled(ns, ["support-bot", "helpdesk"])
    new = new.model_copy(update={"sequence": old.sequence + 1}).seal()
    token = await kube.ensure_secret_key(ns, TOKEN_SECRET, TOKEN_KEY, lambda: "sync-restart-token")

    def sidecar(config: RouterConfig) -> SidecarProcess:
        return SidecarProcess(
            name="app-0", ip="127.0.4.2", port=free_port(), admin_port=admin_port, region="eu-west-1",
            workdir=tmp_path, namespace=ns, token=token, config_json=config.to_json(),
        )  # fmt: skip

    def policy_at(config: RouterConfig) -> None:
        kubectl.run(
            "patch", "routingpolicy", "support", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"configVersion": short_version(config.version)}}),
        )  # fmt: skip

    admin_port = free_port()
    create_pod(kubectl, ns, "app-0", admin_port)
    running = sidecar(old)
    running.start()
    try:
        set_pod_status(kubectl, ns, "app-0", running.ip, True)
        container_restarted(kubectl, ns, "app-0", 0)
        async with aiohttp.ClientSession() as session:
            inventory = Inventory()  # what the operator's watches would hold: listed before each pass
            syncer = Syncer(kube, inventory, session)
            try:
                await kube.apply_config(ns, new, sources)
                policy_at(new)
                await inventory.load(kube, [ns])
                report = await syncer.sync(ns)
                assert report.pushed == ["app-0"] and running.version() == new.version
                # The sidecar's container restarts and boots from an older mounted file.
                running.stop()
                running = sidecar(old)
                running.start()
                container_restarted(kubectl, ns, "app-0", 1)
                assert running.version() == old.version
                await inventory.load(kube, [ns])
                report = await syncer.sync(ns)
                assert report.pushed == ["app-0"], "asked again after the restart, and brought up to date"
                assert running.version() == new.version
                status = policy_status(kubectl, ns)
                assert (status.get("sync"), status.get("syncedVersion")) == ("1/1", short_version(new.version))
            finally:
                await syncer.close()
    finally:
        running.stop()
