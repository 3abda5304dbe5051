"""The start-up listing's sweep against a real API server: an object the watches have not delivered
within the confirm window is asked about, not presumed deleted. A quiet ModelEndpoint stays in the
inventory and in the compiled config however many windows pass; one deleted between the start-up
listing and the watch's own is dropped. The window is injected (`every`), not waited for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import config as kconfig

from modelroute_contract import SCHEMA_VERSION, RouterConfig, config_key
from modelroute_operator.clients.inventory import Inventory
from modelroute_operator.clients.kube import KubeApi
from modelroute_operator.runtime import handlers
from modelroute_operator.runtime.reconciler import Reconciler
from tests.kube_harness import ControlPlane, Kubectl, new_namespace
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


class CountingKube(KubeApi):
    """The operator's client, counting the sweep's reads per object."""

    reads: dict[str, int]

    async def read_object(self, list_path: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads[name] = self.reads.get(name, 0) + 1
        return await super().read_object(list_path, namespace, name)


@pytest.fixture
async def kube(plane: ControlPlane) -> AsyncIterator[CountingKube]:
    api = CountingKube(kconfig.new_client_from_config(config_file=str(plane.kubeconfig)))
    api.reads = {}
    yield api
    await api.aclose()


class Scheduled:
    def __init__(self) -> None:
        self.namespaces: list[str] = []

    def schedule(self, namespace: str) -> None:
        self.namespaces.append(namespace)


async def until(check: Any, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_quiet_endpoint_outlives_the_confirm_window_and_a_deleted_one_goes(
    kubectl: Kubectl, kube: CountingKube
) -> None:
    ns = new_namespace(kubectl, "quiet")
    kubectl.apply(to_yaml(endpoint(), endpoint(name="gone"), policy()), ns)
    inventory = Inventory()
    await inventory.load(kube, [ns])  # the start-up listing
    kubectl.run("delete", "modelendpoint", "gone", "-n", ns)  # before any watch delivered it
    reconciler, syncer = Scheduled(), Scheduled()
    ctx = SimpleNamespace(inventory=inventory, kube=kube, reconciler=reconciler, syncer=syncer)
    # No watch event comes for `llama` or `support` (quiet objects, a watch late at start-up): windows
    # of 10 ms pass one after another.
    sweeping = asyncio.get_running_loop().create_task(handlers._confirm_later(ctx, every=0.01))  # type: ignore[arg-type]
    try:
        await until(lambda: kube.reads.get("llama", 0) >= 3, "three sweeps")
        assert (ns, "gone") not in inventory.endpoints.bodies
        assert reconciler.namespaces and set(reconciler.namespaces) == {ns}
        assert (ns, "llama") in inventory.endpoints.bodies and (ns, "support") in inventory.policies.bodies
        assert not sweeping.done(), "it keeps asking while the watch has not delivered them"
        report = await Reconciler(kube, inventory).reconcile(ns)
        assert report.config_written and not report.errors, report.errors
        cm = kubectl.get("configmap", "modelroute-router-config", ns)
        assert cm is not None
        config = RouterConfig.from_json(cm["data"][config_key(SCHEMA_VERSION)])
        assert [e.name for e in config.endpoints] == ["llama"]
        # the watches deliver them at last: the sweep is over
        inventory.confirm(inventory.endpoints, (ns, "llama"))
        inventory.confirm(inventory.policies, (ns, "support"))
        inventory.confirm(inventory.configs, (ns, "modelroute-router-config"))
        await asyncio.wait_for(sweeping, 5)
    finally:
        sweeping.cancel()
