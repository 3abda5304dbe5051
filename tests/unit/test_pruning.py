"""Per-namespace state goes away with the namespace's last object: the reconciler's and syncer's records,
the queues' workers, the inventory's caches, the health monitor's probe times and the canary runner's
timers."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from tests.kube_harness import wait_for
from tests.manifests import endpoint, policy

from modelroute_contract import RouterConfig
from modelroute_contract.schemas import SCHEMA_VERSION, config_key
from modelroute_operator.clients.inventory import Inventory, config_view
from modelroute_operator.clients.namespace_queue import NamespaceQueue
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.logic.cache import key_of
from modelroute_operator.runtime.monitor import CanaryRunner, HealthMonitor
from modelroute_operator.runtime.reconciler import Reconciler

NS = "team-a"


class FakeKube:
    """The KubeApi writes these parts make, over dicts in memory (reads come from the inventory)."""

    def __init__(self) -> None:
        self.configs: dict[str, dict[str, Any]] = {}

    async def apply_config(
        self, namespace: str, config: RouterConfig, sources: Mapping[str, int]
    ) -> dict[str, Any]:
        cm = {
            "metadata": {"name": "modelroute-router-config", "namespace": namespace, "resourceVersion": "1"},
            "data": {config_key(SCHEMA_VERSION): config.to_json(), "sources.json": "{}"},
        }
        self.configs[namespace] = cm
        return copy.deepcopy(cm)

    async def delete_config(self, namespace: str) -> bool:
        return self.configs.pop(namespace, None) is not None

    async def patch_status(self, *_: Any) -> None:
        return None

    async def record_event(self, *_: Any, **__: Any) -> None:
        return None

    async def ensure_secret_key(self, *_: Any) -> str:
        return "token"


def put_objects(inventory: Inventory, objects: list[dict[str, Any]]) -> None:
    """What the watches would deliver for `objects` in NS."""
    for obj in copy.deepcopy(objects):
        obj["metadata"].update(namespace=NS, generation=1, uid=obj["metadata"]["name"])
        inventory.of_kind(obj["kind"]).observe(obj)


async def test_a_namespace_without_objects_leaves_no_state_behind() -> None:
    kube = FakeKube()
    inventory = Inventory()
    async with aiohttp.ClientSession() as session:
        syncer = Syncer(kube, inventory, session)  # type: ignore[arg-type]
        health = HealthMonitor(kube, session, inventory.endpoints)  # type: ignore[arg-type]
        canaries = CanaryRunner(kube, syncer, inventory)  # type: ignore[arg-type]
        forgotten: list[str] = []

        def forget(namespace: str) -> None:
            forgotten.append(namespace)
            syncer.forget(namespace)
            health.forget(namespace)
            canaries.forget(namespace)
            inventory.forget(namespace)

        async def announce(namespace: str, _: RouterConfig) -> None:
            syncer.schedule(namespace)

        reconciler = Reconciler(kube, inventory, announce, forget)  # type: ignore[arg-type]
        put_objects(inventory, [endpoint(), policy()])
        reconciler.schedule(NS)
        await asyncio.to_thread(wait_for, lambda: NS in syncer.known(), "the first sync", 10)
        assert NS in reconciler.last_reports
        assert inventory.live_config(NS) is not None  # the pass put its own write in the inventory

        for body in [*inventory.endpoints.in_namespace(NS), *inventory.policies.in_namespace(NS)]:
            inventory.of_kind(body["kind"]).observe(body, deleted=True)  # the last object is deleted
        reconciler.schedule(NS)
        await asyncio.to_thread(wait_for, lambda: forgotten == [NS], "the empty pass", 10)
        assert inventory.namespaces() == set()
        syncer.schedule(NS)  # e.g. a sidecar pod event in the now empty namespace
        await asyncio.to_thread(
            wait_for, lambda: not syncer._queue.namespaces(), "the sync worker to finish", 10
        )
        assert NS not in kube.configs
        assert NS not in reconciler.last_reports and NS not in reconciler._announced
        assert syncer.known() == set()
        assert reconciler._queue.namespaces() == []
        assert health.known() == set() and canaries.known() == set()
        assert inventory.namespaces() == set()
        await reconciler.close()
        await syncer.close()


def test_a_deleted_live_config_leaves_the_inventory() -> None:
    inventory = Inventory()
    cm = {"metadata": {"name": "modelroute-router-config", "namespace": NS, "resourceVersion": "7"}}
    inventory.configs.observe(config_view({**cm, "data": {"sources.json": "{}"}}))
    assert NS in inventory.namespaces()
    inventory.configs.observe(cm, deleted=True)
    assert inventory.live_config(NS) is None and inventory.namespaces() == set()


async def test_a_queue_keeps_no_worker_for_a_namespace_with_nothing_to_do() -> None:
    runs: list[str] = []

    async def work(namespace: str) -> bool:
        runs.append(namespace)
        return False

    queue = NamespaceQueue("test", work)
    for n in range(50):
        queue.schedule(f"ns-{n}")
    await asyncio.to_thread(wait_for, lambda: len(runs) == 50 and not queue.namespaces(), "the runs", 10)
    assert queue._dirty == {}
    queue.schedule("ns-0")  # a namespace can come back
    await asyncio.to_thread(wait_for, lambda: runs.count("ns-0") == 2, "a second run", 10)


async def test_probe_times_and_canary_timers_of_deleted_objects_are_dropped() -> None:
    kube = FakeKube()
    inventory = Inventory()
    async with aiohttp.ClientSession() as session:
        health = HealthMonitor(kube, session, inventory.endpoints)  # type: ignore[arg-type]
        syncer = Syncer(kube, inventory, session)  # type: ignore[arg-type]
        canaries = CanaryRunner(kube, syncer, inventory)  # type: ignore[arg-type]
        body = {**endpoint(), "metadata": {"name": "llama", "namespace": NS, "resourceVersion": "1"}}
        key = inventory.endpoints.observe(body)
        health._last_probe[(*key, "eu-west-1-0")] = datetime.now(UTC)
        health.poke(key)
        canary = {"kind": "Canary", "metadata": {"name": "c", "namespace": NS}}
        canaries.poke(inventory.canaries.observe(canary))
        assert health.known() == {NS} and canaries.known() == {NS}
        inventory.endpoints.observe(body, deleted=True)
        inventory.canaries.observe(canary, deleted=True)
        health.poke(key)  # what the DELETED events do
        canaries.poke(key_of(canary))
        health.forget(NS)
        canaries.forget(NS)
        assert health.known() == set() and canaries.known() == set()
        assert inventory.namespaces() == set()
