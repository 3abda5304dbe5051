"""Health-driven failover across regions under load, and residency that fails closed."""

from __future__ import annotations

import uuid

import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.load import Load
from tests.kube_harness import wait_for
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e

REGIONS = ("eu-west-1", "eu-central-1", "us-east-1")


def regional_setup(cluster: Cluster) -> None:
    """One endpoint with a replica per region (each its own fake upstream), a policy with EU residency."""
    for region in REGIONS:
        cluster.upstream(region)
    endpoint = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": "llama"},
        "spec": {
            "model": "org/llama",
            "healthCheck": {
                "interval": "1s",
                "timeout": "500ms",
                "healthyThreshold": 1,
                "unhealthyThreshold": 2,
            },
            "replicas": [
                {
                    "name": region,
                    "region": region,
                    "url": cluster.upstreams[region].url,
                    "compliance": ["gdpr"] if region.startswith("eu") else [],
                }
                for region in REGIONS
            ],
        },
    }
    policy = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "support"},
        "spec": {
            "virtualModels": ["support-bot"],
            "residency": {
                "dataClasses": [
                    {
                        "name": "eu-personal",
                        "allowedRegions": ["eu-west-1", "eu-central-1"],
                        "requiredCompliance": ["gdpr"],
                    }
                ]
            },
            "locality": {"failoverOrder": list(REGIONS)},
            "resilience": {"maxAttempts": 3, "perTryTimeout": "5s", "deadline": "15s"},
            "rules": [{"name": "default", "targets": [{"endpoint": "llama"}]}],
        },
    }
    cluster.kubectl.apply(to_yaml(endpoint, policy), cluster.namespace)
    wait_for(cluster.live_version, "the config")


def replica_health(cluster: Cluster, replica: str) -> str:
    body = cluster.kubectl.get("modelendpoint", "llama", cluster.namespace) or {}
    return next((r["health"] for r in body.get("status", {}).get("replicas", []) if r["name"] == replica), "")


def test_a_dying_region_fails_over_without_client_errors_and_traffic_returns(cluster: Cluster) -> None:
    regional_setup(cluster)
    sidecar = cluster.sidecar("app-0", "eu-west-1")
    wait_for(lambda: replica_health(cluster, "eu-west-1") == "Healthy", "eu-west-1 healthy")
    load = Load(sidecar.base_url).start()
    try:
        wait_for(lambda: load.regions_since(0)["eu-west-1"] >= 20, "local traffic")
        assert set(load.regions_since(0)) == {"eu-west-1"}, "the local region is preferred"

        eu = cluster.upstreams["eu-west-1"]
        eu.kill()
        wait_for(
            lambda: replica_health(cluster, "eu-west-1") == "Unhealthy", "eu-west-1 unhealthy in status", 20
        )
        mark = len(load.outcomes)
        wait_for(
            lambda: load.regions_since(mark)["eu-central-1"] >= 20, "traffic on the next region in order"
        )
        assert set(load.regions_since(mark)) == {"eu-central-1"}

        eu.start()  # same port: the region comes back
        wait_for(lambda: replica_health(cluster, "eu-west-1") == "Healthy", "eu-west-1 healthy again", 20)
        mark = len(load.outcomes)
        wait_for(lambda: load.regions_since(mark)["eu-west-1"] >= 20, "traffic back on the local region", 20)
    finally:
        load.stop()
    assert load.failures() == [], f"client-visible failures: {load.failures()[:3]}"
    assert len(load.outcomes) >= 60


def test_residency_fails_closed_when_every_compliant_region_is_down(cluster: Cluster) -> None:
    regional_setup(cluster)
    sidecar = cluster.sidecar("app-0", "eu-west-1")
    marker = f"customer record {uuid.uuid4()}"
    eu_personal = {"x-modelroute-data-class": "eu-personal"}
    client = openai.OpenAI(base_url=sidecar.base_url, api_key="t", max_retries=0, timeout=20)

    def ask() -> openai.APIStatusError | str:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="support-bot", messages=[{"role": "user", "content": marker}], extra_headers=eu_personal
            )
            return raw.headers.get("x-modelroute-region", "")
        except openai.APIStatusError as exc:
            return exc

    assert ask() == "eu-west-1"
    for region in ("eu-west-1", "eu-central-1"):
        cluster.upstreams[region].kill()
    for region in ("eu-west-1", "eu-central-1"):
        wait_for(lambda r=region: replica_health(cluster, r) == "Unhealthy", f"{region} unhealthy", 20)
    # Wait for the drained config to reach the sidecar, then every EU request fails closed.
    wait_for(lambda: isinstance(ask(), openai.APIStatusError), "EU personal data to fail closed", 20)
    for _ in range(5):
        answer = ask()
        assert isinstance(answer, openai.APIStatusError)
        assert answer.status_code == 503
        assert "eu-personal" in str(answer.body)
    # Public traffic still flows, to the US.
    public = Load(sidecar.base_url).send({})
    assert (public.status, public.region) == (200, "us-east-1")
    seen_in_us = [r for r in cluster.upstreams["us-east-1"].requests() if marker in str(r.get("body"))]
    assert seen_in_us == [], "EU personal data reached a non-compliant region"
