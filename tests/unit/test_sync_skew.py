"""The sync figure under version skew: a pod counts as in sync only when it runs the rendering of the live
config meant for the schema its sidecar reads; pods the config cannot be sent to are listed with the
reason, grouped; the operator still reads a stored document it cannot parse as a config (a development
build's) well enough to replace it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.contract.reference import schema1

from modelroute_contract import (
    CredentialRef,
    EndpointConfig,
    Rendering,
    ReplicaConfig,
    RouterConfig,
    SchemaGap,
    TlsConfig,
)
from modelroute_operator.clients.kube import LiveConfig
from modelroute_operator.clients.sync import SidecarPod, sync_fields
from modelroute_operator.runtime import cli
from modelroute_operator.runtime.reconciler import previous_config, stored_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def config(tls: bool = False) -> RouterConfig:
    endpoint = EndpointConfig(
        name="llm",
        model="org/llm",
        tls=TlsConfig(ca_bundle=CredentialRef(secret="ca", key="ca.crt")) if tls else None,
        replicas=(ReplicaConfig(name="eu", region="eu-west-1", url="https://eu.llm.test/v1"),),
    )
    return RouterConfig(namespace="team", sequence=3, endpoints=(endpoint,)).seal()


PODS = [SidecarPod(f"app-{i}", f"uid-{i}", f"10.0.0.{i}", 9901) for i in range(4)]


def test_each_pod_is_counted_against_the_rendering_meant_for_it() -> None:
    live = config()
    v1, v2 = live.render_for((1,)), live.render_for((1, 2))
    assert isinstance(v1, Rendering) and isinstance(v2, Rendering) and v1.version != v2.version
    plans = {"uid-0": v2, "uid-1": v1, "uid-2": v1, "uid-3": v2}
    # app-2 runs the schema-2 document although its sidecar reads only schema 1: impossible, and not
    # counted; app-3 acknowledged the schema-1 rendering although it reads 2: not what is meant for it
    acked = {"uid-0": v2.version, "uid-1": v1.version, "uid-2": v2.version, "uid-3": v1.version}
    fields = sync_fields(PODS, acked, plans, live.version)
    assert fields["sync"] == "2/4"
    assert fields["laggingPods"] == ["app-2", "app-3"]
    assert fields["skewedPods"] == []


def test_pods_the_config_cannot_be_sent_to_are_listed_with_the_reason() -> None:
    live = config(tls=True)
    gap = live.render_for((1,))
    assert isinstance(gap, SchemaGap)
    v2 = live.render_for((1, 2))
    assert isinstance(v2, Rendering)
    plans = {"uid-0": v2, "uid-1": gap, "uid-2": gap}  # app-3 has not answered yet: no plan
    acked = {"uid-0": v2.version, "uid-1": "sha256:older"}
    fields = sync_fields(PODS, acked, plans, live.version)
    assert fields["sync"] == "1/4"
    assert fields["laggingPods"] == ["app-1", "app-2", "app-3"]
    assert fields["skewedPods"] == [
        {
            "pods": ["app-1", "app-2"],
            "reads": [1],
            "reason": "reads schema 1; the config needs schema 2: ModelEndpoint llm uses tls (schema 2): "
            "a schema-1 sidecar would connect with the system trust store, without the CA bundle, "
            "client certificate and server name it names",
        }
    ]


def test_a_stored_document_of_a_development_build_is_replaced_keeping_its_sequence() -> None:
    # between schema 1 and 2 development builds wrote schema-2 fields under schemaVersion 1
    document = json.loads(config().to_json())
    document["schemaVersion"] = 1
    live = LiveConfig(json.dumps(document), document["version"], {}, sequence=document["sequence"])
    assert stored_config(live) is None  # not a config of either schema: the pass compiles a new one
    assert previous_config(live).sequence == 3  # and numbers it after the stored one
    assert stored_config(LiveConfig(config().to_json(), config().version, {}, 3)) == config()


def test_render_shows_what_a_schema_1_sidecar_is_sent_or_why_not(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", "-q", "-f", str(EXAMPLES / "tiered-routing"), "--schema", "1"]) == cli.EXIT_OK
    document = json.loads(capsys.readouterr().out)
    assert document["schemaVersion"] == 1 and "sequence" not in document
    assert schema1.RouterConfig.from_json(json.dumps(document)).version == document["version"]
    code = cli.main(["render", "-q", "-f", str(EXAMPLES / "multi-region-eu-residency"), "--schema", "1"])
    assert code == cli.EXIT_INVALID
    assert "RoutingPolicy assistant uses residency.precedence (schema 2)" in capsys.readouterr().err
