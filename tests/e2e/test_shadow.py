"""Shadow traffic end to end: a RoutingPolicy with `shadow` applied to the API server, compiled by the real
operator, run by a real sidecar process in front of fake upstream processes. The shadow upstream gets a
copy of public requests and none of an EU-personal one (it runs in us-east-1 without gdpr); a shadow that
never answers changes nothing for the clients; the sidecar's `/stats` compares the two sides."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Cluster
from tests.kube_harness import wait_for
from tests.manifests import local_endpoint as endpoint
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e


def setup(cluster: Cluster) -> None:
    llama, nxt = cluster.upstream("llama"), cluster.upstream("llama-next")
    policy = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "support"},
        "spec": {
            "virtualModels": ["support-bot"],
            "residency": {
                "dataClasses": [
                    {"name": "eu-personal", "allowedRegions": ["eu-west-1"], "requiredCompliance": ["gdpr"]}
                ]
            },
            "rules": [
                {
                    "name": "default",
                    "targets": [{"endpoint": "llama"}],
                    "shadow": {"endpoint": "llama-next", "percent": 100, "maxConcurrent": 4},
                }
            ],
        },
    }
    objects = [
        endpoint("llama", llama.url, "eu-west-1", ["gdpr"]),
        endpoint("llama-next", nxt.url, "us-east-1", []),
        policy,
    ]
    cluster.kubectl.apply(to_yaml(*objects), cluster.namespace)
    wait_for(lambda: "llama-next" in cluster.live_config_json(), "the config with the shadow")


def stats(cluster: Cluster, name: str) -> dict[str, Any]:
    sidecar = cluster.sidecars[name]
    request = urllib.request.Request(
        f"{sidecar.admin_url}/stats", headers={"authorization": f"Bearer {cluster.token()}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def test_public_requests_are_mirrored_eu_personal_ones_never_and_clients_never_wait(cluster: Cluster) -> None:
    setup(cluster)
    sidecar = cluster.sidecar("app-0", "eu-west-1")
    client = openai.OpenAI(base_url=sidecar.base_url, api_key="t", max_retries=0, timeout=20)
    nxt = cluster.upstreams["llama-next"]

    def ask(text: str, **headers: str) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="support-bot", messages=[{"role": "user", "content": text}], extra_headers=headers
        )
        assert not [k for k in raw.headers if "shadow" in k.lower()]  # nothing about the copy leaks
        return str(raw.parse().system_fingerprint)

    public = [f"public question {n}" for n in range(3)]
    for text in public:
        assert ask(text) == "llama"
    wait_for(lambda: len(nxt.requests()) == 3, "three copies at the shadow")
    copies = nxt.requests()
    assert {c["model"] for c in copies} == {"org/llama-next"}
    assert all(c["headers"].get("x-modelroute-shadow") == "1" for c in copies)
    assert sorted(c["body"]["messages"][0]["content"] for c in copies) == public

    marker = f"customer record {uuid.uuid4()}"
    for _ in range(3):
        assert ask(marker, **{"x-modelroute-data-class": "eu-personal"}) == "llama"

    def figures() -> dict[str, Any]:
        shadows = stats(cluster, "app-0").get("shadows") or [{}]
        return dict(shadows[0])

    wait_for(lambda: figures().get("skipped") == {"residency": 3}, "three residency skips")
    assert [c for c in nxt.requests() if marker in json.dumps(c["body"])] == []
    shown = figures()
    assert (shown["policy"], shown["rule"], shown["endpoint"]) == ("support", "default", "llama-next")
    assert shown["primary"]["requests"] == 3 and shown["shadow"]["requests"] == 3
    assert shown["shadow"]["errors"] == 0 and shown["shadow"]["tokensOut"] > 0

    # a shadow that never answers: the clients are answered all the same
    behavior = urllib.request.Request(
        f"http://127.0.0.1:{nxt.port}/_fake/behavior",
        data=json.dumps({"hang": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(behavior, timeout=5).close()
    for n in range(6):
        assert ask(f"while the shadow hangs {n}") == "llama"
    # four copies are held (maxConcurrent), the other two skipped as busy
    wait_for(lambda: len(nxt.requests()) == 7, "four held copies")
    wait_for(lambda: figures().get("skipped") == {"busy": 2, "residency": 3}, "two busy skips")

    def audit() -> list[dict[str, Any]]:
        path = sidecar.audit_path
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    wait_for(lambda: len(audit()) == 12, "twelve audit lines")
    assert [a["shadow"]["outcome"] for a in audit() if a["shadow"]] == ["sent"] * 3 + ["residency"] * 3 + [
        "sent"
    ] * 4 + ["busy"] * 2
