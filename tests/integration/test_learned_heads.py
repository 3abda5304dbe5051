"""A difficulty head a user trained, kept in a ConfigMap and named by a RoutingPolicy, against a real API
server: the operator reads the ConfigMap the policy names and carries the head in the RouterConfig; a
policy whose pin does not match is Invalid on the field and the namespace keeps its last good config."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelroute_contract import SCHEMA_VERSION, RouterConfig, config_key
from modelroute_contract.schemas import canonical_json
from tests.kube_harness import ControlPlane, Kubectl, OperatorProcess, new_namespace, wait_for
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "contract" / "fixtures" / "v3" / "learned-routing-configmap-head.json"


@pytest.fixture(scope="module")
def watched(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    op = OperatorProcess(plane, tmp_path_factory.mktemp("operator") / "operator.log", namespaces=["lh-*"])
    op.start()
    yield op
    op.stop()


def head_text() -> str:
    document = json.loads(FIXTURE.read_text())
    return canonical_json(document["policies"][0]["difficultyModels"][0]["head"])


def learned_policy(sha256: str) -> dict[str, Any]:
    body = copy.deepcopy(policy())
    body["spec"]["difficultyModels"] = [
        {"name": "support", "version": "3", "configMap": {"name": "support-head"}, "sha256": sha256}
    ]
    body["spec"]["rules"].insert(
        0,
        {
            "name": "hard",
            "match": {"complexity": {"min": 60, "scorer": "support"}},
            "targets": [{"endpoint": "llama", "weight": 100}],
        },
    )
    return body


def live_config(kubectl: Kubectl, ns: str) -> RouterConfig | None:
    cm = kubectl.get("configmap", "modelroute-router-config", ns)
    text = (cm or {}).get("data", {}).get(config_key(SCHEMA_VERSION))
    return RouterConfig.from_json(text) if text else None


def test_a_configmap_head_goes_live_and_a_wrong_pin_keeps_the_last_good_config(
    kubectl: Kubectl, watched: OperatorProcess, tmp_path: Path
) -> None:
    ns = new_namespace(kubectl, "lh-heads")
    head = tmp_path / "head.json"
    head.write_text(head_text())
    kubectl.run("create", "configmap", "support-head", "-n", ns, f"--from-file=head.json={head}")
    sha = hashlib.sha256(head_text().encode()).hexdigest()
    kubectl.apply(to_yaml(endpoint(), learned_policy(sha)), ns)
    good = wait_for(lambda: live_config(kubectl, ns), "the config with the head")
    (model,) = good.policies[0].difficulty_models
    assert model.head is not None and model.sha256 == sha

    kubectl.apply(to_yaml(learned_policy("0" * 64)), ns)

    def invalid() -> dict[str, Any] | None:
        body = kubectl.get("routingpolicy", "support", ns) or {}
        for cond in body.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["reason"] == "Invalid":
                return dict(cond)
        return None

    cond = wait_for(invalid, "Ready=False/Invalid on the policy with a wrong pin")
    assert "spec.difficultyModels[0].sha256" in cond["message"]
    live = live_config(kubectl, ns)
    assert live is not None and live.version == good.version
