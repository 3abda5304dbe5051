"""A bandit rule on real traffic: the operator compiles `strategy: bandit` into the live config (and leaves it
out of the schema-2 document), a real sidecar process routes by it, and the quality feedback the client
posts through the data port moves the traffic to the endpoint whose answers score better."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.load import Load
from tests.kube_harness import wait_for
from tests.manifests import local_endpoint as endpoint
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e


def test_feedback_moves_a_bandit_rule_to_the_better_endpoint(cluster: Cluster) -> None:
    good, bad = cluster.upstream("good"), cluster.upstream("bad")
    policy = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "support"},
        "spec": {
            "virtualModels": ["support-bot"],
            "rules": [
                {
                    "name": "default",
                    "targets": [{"endpoint": "llama-good"}, {"endpoint": "llama-bad"}],
                    "strategy": "bandit",
                    "bandit": {"explore": 0.05},
                }
            ],
        },
    }
    cluster.kubectl.apply(
        to_yaml(endpoint("llama-good", good.url), endpoint("llama-bad", bad.url), policy), cluster.namespace
    )
    wait_for(cluster.live_version, "the config")
    live = json.loads(cluster.live_config_json())
    assert live["policies"][0]["rules"][0]["strategy"] == "bandit"
    assert live["policies"][0]["rules"][0]["bandit"] == {"costWeight": 0.0, "explore": 0.05}
    older = cluster.live_config_json(2)
    assert older and "bandit" not in older  # a schema-2 sidecar gets the rule routing by weight

    sidecar = cluster.sidecar("app-0", "eu-west-1")
    load = Load(sidecar.base_url, feedback={"llama-good": 0.9, "llama-bad": 0.1}).start()
    try:
        wait_for(lambda: len(load.outcomes) >= 300, "300 answered requests", 120)
    finally:
        load.stop()
    assert load.failures() == []
    assert set(load.feedback_answers) == {200}
    early, late = load.endpoints_since(0), load.endpoints_since(len(load.outcomes) - 100)
    assert early["llama-bad"] > 0  # both were tried
    assert late["llama-good"] >= 75, late  # ~95% expected once the evidence is in

    request = urllib.request.Request(
        f"{sidecar.admin_url}/stats", headers={"Authorization": f"Bearer {sidecar.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        stats = json.loads(response.read())
    arms = {a["endpoint"]: a for a in stats["bandit"]}
    assert set(arms) == {"llama-good", "llama-bad"}
    assert arms["llama-good"]["pulls"] > arms["llama-bad"]["pulls"]
    assert arms["llama-good"]["alpha"] > arms["llama-bad"]["alpha"]
