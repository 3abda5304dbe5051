"""Every example applies to a real API server, becomes Ready, and the operator's live config is the one
the compiler produces offline (the golden file), so `modelroute render` and the cluster agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelroute_contract import SCHEMA_VERSION, RouterConfig, config_key
from tests.kube_harness import REPO, ControlPlane, Kubectl, OperatorProcess, new_namespace, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = sorted(p for p in (REPO / "examples").iterdir() if p.is_dir())
GOLDEN = REPO / "tests" / "unit" / "golden"


@pytest.fixture(scope="module")
def example_operator(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(plane, tmp_path_factory.mktemp("operator") / "operator.log", namespaces=["ex-*"])
    op.start()
    yield op
    op.stop()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_and_goes_live(
    kubectl: Kubectl, example_operator: OperatorProcess, example: Path
) -> None:
    ns = new_namespace(kubectl, "ex-" + example.name[:20])
    kubectl.run("apply", "-n", ns, "--server-side", "-f", str(example))
    kubectl.run("wait", "-n", ns, "--for=condition=Ready", "modelroute", "--all", "--timeout=60s")
    cm = wait_for(lambda: kubectl.get("configmap", "modelroute-router-config", ns), "the ConfigMap")
    live = RouterConfig.from_json(cm["data"][config_key(SCHEMA_VERSION)])
    golden = RouterConfig.model_validate(json.loads((GOLDEN / f"{example.name}.json").read_text()))
    # The golden file is compiled for another namespace name and from objects without status; beyond the
    # parts status drives (replica health, canary weight) the content must be identical.
    assert static_part(live.model_copy(update={"namespace": golden.namespace})) == static_part(golden)


def static_part(config: RouterConfig) -> dict[str, object]:
    """The config without what status drives (health of replicas, the canary's current weight) and what
    the namespace's history sets (the sequence, and with it the version)."""
    doc = config.model_dump(mode="json", by_alias=True, exclude={"version", "sequence"})
    for endpoint in doc["endpoints"]:
        for replica in endpoint["replicas"]:
            replica["health"] = "Unknown"
    for policy in doc["policies"]:
        for rule in policy["rules"]:
            if rule.get("canary"):
                rule["canary"]["candidateWeight"] = 0
    return doc
