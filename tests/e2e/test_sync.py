"""Config push and sync: the operator brings every ready sidecar to the live version and proves it."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Cluster
from tests.kube_harness import set_pod_status, wait_for
from tests.manifests import policy, to_yaml

pytestmark = pytest.mark.e2e


def endpoint_at(name: str, replicas: dict[str, str]) -> dict[str, object]:
    """A ModelEndpoint whose replicas (region → base URL) point at fake upstreams."""
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": name},
        "spec": {
            "model": f"org/{name}",
            "replicas": [
                {
                    "name": region,
                    "region": region,
                    "url": url,
                    "compliance": ["gdpr"] if region.startswith("eu") else [],
                }
                for region, url in replicas.items()
            ],
            "healthCheck": {"enabled": False},
        },
    }


def test_policy_change_is_acknowledged_by_three_sidecars(cluster: Cluster) -> None:
    eu = cluster.upstream("eu")
    cluster.kubectl.apply(to_yaml(endpoint_at("llama", {"eu-west-1": eu.url}), policy()), cluster.namespace)
    wait_for(cluster.live_version, "the first config")
    sidecars = [cluster.sidecar(f"app-{i}", "eu-west-1") for i in range(3)]
    first = cluster.live_version()
    wait_for(lambda: cluster.policy_status("support").get("sync") == "3/3", "sync 3/3")
    assert all(sc.version() == first for sc in sidecars)

    started = time.monotonic()
    cluster.kubectl.apply(to_yaml(policy(models=["support-bot", "helpdesk"])), cluster.namespace)
    second = wait_for(lambda: (v := cluster.live_version()) != first and v, "the second config")
    wait_for(
        lambda: all(sc.version() == second for sc in sidecars), "all sidecars at the new version", 10, 0.02
    )
    elapsed = time.monotonic() - started
    status = wait_for(
        lambda: (
            (s := cluster.policy_status("support")).get("sync") == "3/3"
            and s.get("configVersion") == second.removeprefix("sha256:")
            and s
        ),
        "status 3/3 at the new version",
    )
    assert status["laggingPods"] == []
    print(f"apply -> 3 sidecars acknowledged in {elapsed * 1000:.0f} ms")


def test_new_ready_sidecar_receives_the_current_config(cluster: Cluster) -> None:
    eu = cluster.upstream("eu")
    cluster.kubectl.apply(to_yaml(endpoint_at("llama", {"eu-west-1": eu.url}), policy()), cluster.namespace)
    version = wait_for(cluster.live_version, "the config")
    first = cluster.sidecar("app-0", "eu-west-1")
    wait_for(lambda: cluster.policy_status("support").get("sync") == "1/1", "sync 1/1")
    assert first.version() == version

    # A new pod starts without the mounted config and is not Ready yet: it is not counted or pushed to.
    late = cluster.sidecar("app-late", "eu-west-1", ready=False, bootstrap=False)
    assert late.version() == ""
    set_pod_status(cluster.kubectl, cluster.namespace, "app-late", late.ip, True)
    wait_for(lambda: late.version() == version, "the late sidecar to receive the config", 15)
    wait_for(lambda: cluster.policy_status("support").get("sync") == "2/2", "sync 2/2")


def test_a_sidecar_that_refuses_pushes_shows_as_lagging(cluster: Cluster) -> None:
    eu = cluster.upstream("eu")
    cluster.kubectl.apply(to_yaml(endpoint_at("llama", {"eu-west-1": eu.url}), policy()), cluster.namespace)
    wait_for(cluster.live_version, "the config")
    good = cluster.sidecar("app-good", "eu-west-1")
    bad = cluster.sidecar("app-bad", "eu-west-1", bootstrap=False, ready=False)
    bad.stop()
    bad.token = "not-the-token"
    bad.start()
    set_pod_status(cluster.kubectl, cluster.namespace, "app-bad", bad.ip, True)
    status = wait_for(
        lambda: (s := cluster.policy_status("support")).get("sync") == "1/2" and s,
        "sync 1/2 with a lagging pod",
    )
    assert status["laggingPods"] == ["app-bad"]
    assert good.version() == cluster.live_version()
    assert cluster.operator.proc is not None and cluster.operator.proc.poll() is None, (
        "the operator must keep running"
    )
