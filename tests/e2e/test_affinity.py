"""Session affinity end to end: a RoutingPolicy with `affinity` applied to the API server, compiled by the
real operator, run by a real sidecar process in front of three fake upstream processes (one endpoint's
replicas, one region, so without affinity each turn is a weighted pick). A conversation stays on one
replica for 100 turns; when that replica's process is killed, the session moves once, says why, and
stays on its new replica."""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.kube_harness import wait_for
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e

REPLICAS = ("eu-a", "eu-b", "eu-c")


def manifests(cluster: Cluster) -> list[dict[str, Any]]:
    upstreams = {name: cluster.upstream(name) for name in REPLICAS}
    endpoint = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": "llama"},
        "spec": {
            "model": "org/llama",
            "healthCheck": {"enabled": False},
            "replicas": [
                {"name": name, "region": "eu-west-1", "url": up.url} for name, up in upstreams.items()
            ],
        },
    }
    policy = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "chat"},
        "spec": {
            "virtualModels": ["chat"],
            "resilience": {
                "maxAttempts": 3,
                "perTryTimeout": "5s",
                "deadline": "15s",
                "ejectAfterFailures": 1,
            },
            "rules": [
                {
                    "name": "default",
                    "targets": [{"endpoint": "llama"}],
                    "affinity": {"header": "x-session-id", "ttlSeconds": 600},
                }
            ],
        },
    }
    return [endpoint, policy]


def test_a_conversation_keeps_its_replica_for_100_turns_and_moves_once_when_it_dies(cluster: Cluster) -> None:
    cluster.kubectl.apply(to_yaml(*manifests(cluster)), cluster.namespace)
    wait_for(cluster.live_version, "the config")
    sidecar = cluster.sidecar("app-0", "eu-west-1")
    client = openai.OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)

    def turn(session: str) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-session-id": session},
        )
        return raw.headers.get("x-modelroute-replica", ""), raw.headers.get("x-modelroute-affinity", "")

    pinned, how = turn("conversation-1")
    assert how == "new" and pinned in REPLICAS
    turns = Counter(turn("conversation-1") for _ in range(99))
    assert turns == Counter({(pinned, "kept"): 99})
    served = {name: len(cluster.upstreams[name].requests()) for name in REPLICAS}
    assert served[pinned] == 100 and sum(served.values()) == 100  # every turn reached the pinned replica

    cluster.upstreams[pinned].kill()
    moved, how = turn("conversation-1")
    assert how == "broken; reason=attempt-failed" and moved in REPLICAS and moved != pinned
    after = Counter(turn("conversation-1") for _ in range(20))
    assert after == Counter({(moved, "kept"): 20})  # re-pinned once, and kept from then on
