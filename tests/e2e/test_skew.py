"""Version skew: today's operator (schema 2) against a real sidecar of the previous schema, the sidecar of
commit 7a48ff9 built into its own venv (`tests.sidecar_builds`), beside a sidecar of today.

The old sidecar boots from the ConfigMap key its pods mount (`config.json`), is pushed the schema-1
rendering of each config it can carry and serves it; a config that needs what schema 1 lacks (here a
pattern detector) is not pushed to it at all: status names the pod and the reason, an Event on the pod
says the same, and it goes on serving its last config, while today's sidecar runs the new one.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from modelroute_contract import config_key
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS, SCHEMA_VERSION
from tests.e2e.conftest import Cluster
from tests.kube_harness import wait_for
from tests.manifests import policy, to_yaml
from tests.sidecar_builds import SCHEMA_1_COMMIT, ensure_sidecar_build

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def schema1_python() -> Path:
    return ensure_sidecar_build(SCHEMA_1_COMMIT)


def endpoint_at(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "ModelEndpoint",
        "metadata": {"name": "llama"},
        "spec": {
            "model": "org/llama",
            "replicas": [{"name": "eu", "region": "eu-west-1", "url": url, "compliance": ["gdpr"]}],
            "healthCheck": {"enabled": False},
        },
    }


def with_pattern_detector(body: dict[str, Any]) -> dict[str, Any]:
    body["spec"]["residency"]["detectors"] = [
        {"kind": "pattern", "dataClass": "eu-personal", "name": "employee-id", "pattern": r"\bEMP-[0-9]{6}\b"}
    ]
    return body


def ask(base_url: str, model: str = "support-bot") -> str:
    client = openai.OpenAI(base_url=base_url, api_key="t", max_retries=0, timeout=20)
    answer = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    return str(answer.headers.get("x-modelroute-endpoint"))


def configmap_data(cluster: Cluster) -> dict[str, str]:
    cm = cluster.kubectl.get("configmap", "modelroute-router-config", cluster.namespace) or {}
    return dict(cm.get("data") or {})


def test_an_operator_of_schema_2_serves_a_sidecar_of_schema_1_what_it_can_read(
    cluster: Cluster, schema1_python: Path
) -> None:
    eu = cluster.upstream("eu")
    cluster.kubectl.apply(to_yaml(endpoint_at(eu.url), policy()), cluster.namespace)
    first = wait_for(cluster.live_version, "the first config")
    # the declared class is this policy's only residency signal: schema 1 classifies it the same way
    first_v1 = json.loads(wait_for(lambda: cluster.live_config_json(1), "the schema-1 key"))
    assert first_v1["schemaVersion"] == 1 and "sequence" not in first_v1

    old = cluster.sidecar("app-old", "eu-west-1", python=str(schema1_python), schema=1)
    new = cluster.sidecar("app-new", "eu-west-1")
    assert "acceptedSchemaVersions" not in old.version_document()  # a schema-1 sidecar does not say
    assert new.version_document()["acceptedSchemaVersions"] == list(ACCEPTED_SCHEMA_VERSIONS)
    status = wait_for(
        lambda: (s := cluster.policy_status("support")).get("sync") == "2/2" and s, "sync 2/2 across schemas"
    )
    assert status["skewedPods"] == [] and status["laggingPods"] == []
    assert old.version() == first_v1["version"]  # booted from config.json: the schema-1 rendering
    assert new.version() == first
    assert ask(old.base_url) == ask(new.base_url) == "llama"

    # A change schema 1 can carry reaches the old sidecar as a push of its rendering.
    cluster.kubectl.apply(to_yaml(policy(models=["support-bot", "helpdesk"])), cluster.namespace)
    second = wait_for(lambda: (v := cluster.live_version()) != first and v, "the second config")
    second_v1 = json.loads(configmap_data(cluster)[config_key(1)])
    wait_for(lambda: old.version() == second_v1["version"] and new.version() == second, "both pushed", 20)
    assert old.version_document()["source"] == "push"
    assert ask(old.base_url, "helpdesk") == "llama"

    # A change schema 1 cannot carry: a pattern detector. Never sent to the old sidecar, said per pod.
    cluster.kubectl.apply(to_yaml(with_pattern_detector(policy(models=["support-bot", "helpdesk"]))), cluster.namespace)
    third = wait_for(lambda: (v := cluster.live_version()) not in ("", second) and v, "the third config")
    status = wait_for(
        lambda: (
            (s := cluster.policy_status("support")).get("syncedVersion") == third.removeprefix("sha256:")
            and s.get("sync") == "1/2"
            and s.get("skewedPods")
            and s
        ),
        "sync 1/2 with the old pod skewed",
    )
    assert status["laggingPods"] == ["app-old"]
    [skew] = status["skewedPods"]
    assert skew["pods"] == ["app-old"] and skew["reads"] == [1]
    assert skew["reason"].startswith("reads schema 1; the config needs schema 2: ")
    assert "RoutingPolicy support uses a residency detector of kind pattern (schema 2)" in skew["reason"]
    assert new.version() == third
    old_answer = old.version_document()
    assert old_answer["version"] == second_v1["version"]  # still the last config it could read
    assert old_answer["lastError"] == ""  # nothing was pushed: a schema-2 document would have been refused
    assert config_key(1) not in configmap_data(cluster)  # and a restart of it cannot boot from a weaker one
    events = cluster.kubectl.json(
        "get", "events", "-n", cluster.namespace, "--field-selector", "involvedObject.name=app-old"
    )["items"]
    skew_events = [e for e in events if e["reason"] == "ConfigSchemaSkew"]
    assert len(skew_events) == 1 and skew_events[0]["type"] == "Warning"
    assert "kind pattern" in skew_events[0]["message"]
    assert ask(old.base_url, "helpdesk") == "llama"  # it goes on serving its last config

    # What the operator spares it: the schema-2 document, sent as is, is refused by the old sidecar.
    request = urllib.request.Request(
        f"{old.admin_url}/config",
        data=cluster.live_config_json().encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {old.token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.request.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 409 and f"schemaVersion {SCHEMA_VERSION}".encode() in refused.value.read()

    # Back to a config schema 1 can carry: the old sidecar is in sync again.
    cluster.kubectl.apply(to_yaml(policy(models=["support-bot"])), cluster.namespace)
    fourth = wait_for(lambda: (v := cluster.live_version()) not in ("", third) and v, "the fourth config")
    fourth_v1 = json.loads(wait_for(lambda: configmap_data(cluster).get(config_key(1)), "the schema-1 key again"))
    wait_for(
        lambda: (s := cluster.policy_status("support")).get("sync") == "2/2"
        and s.get("syncedVersion") == fourth.removeprefix("sha256:")
        and not s.get("skewedPods"),
        "sync 2/2 again",
    )
    assert old.version() == fourth_v1["version"] and new.version() == fourth
