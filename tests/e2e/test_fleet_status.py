"""The operator reports fleet limits: a RoutingPolicy with `fleetLimits` gets a `FleetStore` condition,
`status.spend` and budget Events from its sidecars' `/stats`, a store killed turns the condition False,
and `modelroute spend` prints the spend (real kube-apiserver, real redis-server, sidecar processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.test_sync import endpoint_at
from tests.fleet_store import RedisServer
from tests.kube_harness import OperatorProcess, wait_for
from tests.manifests import policy, to_yaml

pytestmark = pytest.mark.e2e

COST = (12 * 1.0 + 5 * 2.0) / 1e6
"""One answer of the fake upstream on an endpoint priced 1 / 2 USD per 1M tokens."""


def chat(base_url: str, tenant: str) -> int:
    body = json.dumps({"model": "support-bot", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=body,
        headers={"content-type": "application/json", "x-modelroute-tenant": tenant},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_the_policy_reports_the_store_and_the_spend_and_the_cli_prints_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    store = RedisServer(tmp_path / "redis").start()
    try:
        cluster.operator.stop()
        cluster.operator = OperatorProcess(
            cluster.plane,
            tmp_path / "operator-fleet.log",
            namespaces=[cluster.namespace],
            extra_env={"MODELROUTE_FLEET_WATCH_SECONDS": "0.5"},
        )
        cluster.operator.start()
        eu = cluster.upstream("eu")
        endpoint = endpoint_at("llama", {"eu-west-1": eu.url})
        endpoint["spec"]["pricing"] = {"inputPerMillion": 1.0, "outputPerMillion": 2.0}  # type: ignore[index]
        limited = policy()
        limited["spec"]["fleetLimits"] = {
            "failMode": "open",
            "tenants": [{"daily": {"hardUsd": 10 * COST, "softUsd": 5 * COST}}],
        }
        cluster.kubectl.apply(to_yaml(endpoint, limited), cluster.namespace)
        wait_for(cluster.live_version, "the first config")
        fleet = ["--fleet-store-url", store.url, "--fleet-store-password-file", str(store.password_file)]
        sidecars = [cluster.sidecar(f"app-{i}", "eu-west-1", extra=fleet) for i in range(2)]
        wait_for(lambda: cluster.policy_status("support").get("sync") == "2/2", "sync 2/2")
        statuses = [chat(sidecars[i % 2].base_url, "acme") for i in range(40)]
        assert 10 <= statuses.count(200) < 40 and 429 in statuses

        def reported() -> dict[str, Any] | None:
            status = cluster.policy_status("support")
            spend = status.get("spend") or []
            ok = condition(status, "FleetStore").get("status") == "True" and spend
            return status if ok and spend[0]["state"] == "Exhausted" else None

        status = wait_for(reported, "FleetStore True and the budget reported spent", 30)
        assert condition(status, "FleetStore")["reason"] == "Reachable"
        [row] = status["spend"]
        assert (row["tenant"], row["period"], row["hardUsd"]) == ("acme", "day", pytest.approx(10 * COST))
        events = cluster.kubectl.json("get", "events", "-n", cluster.namespace)
        assert "BudgetExhausted" in {e["reason"] for e in events["items"]}

        cli = subprocess.run(
            [sys.executable, "-m", "modelroute_operator.runtime.cli", "spend", "-n", cluster.namespace],
            capture_output=True,
            text=True,
            env=cluster.plane.kubectl_env(),
            timeout=60,
            check=True,
        )
        assert "acme" in cli.stdout and "Exhausted" in cli.stdout and "support" in cli.stdout

        store.kill()
        chat(sidecars[0].base_url, "globex")  # a request finds the store gone

        def unreachable() -> dict[str, Any] | None:
            found = condition(cluster.policy_status("support"), "FleetStore")
            return found if found.get("status") == "False" else None

        found = wait_for(unreachable, "FleetStore False", 30)
        assert found["reason"] == "Unreachable" and "fail-open" in found["message"]
        assert store.password_file.read_text().strip() not in json.dumps(cluster.policy_status("support"))
    finally:
        store.kill()
