"""Per-namespace state goes away with the namespace's last object: the reconciler's and syncer's records,
the queues' workers, the health monitor's probe times and the canary runner's timers."""

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
from modelroute_operator.clients.kube import LiveConfig, RawObjects
from modelroute_operator.clients.namespace_queue import NamespaceQueue
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.runtime.monitor import CanaryRunner, HealthMonitor
from modelroute_operator.runtime.reconciler import Reconciler

NS = "team-a"


class FakeKube:
    """The KubeApi calls these parts make, over dicts in memory."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.configs: dict[str, LiveConfig] = {}

    async def list_objects(self, namespace: str) -> RawObjects:
        items = copy.deepcopy(self.objects.get(namespace, []))
        for item in items:
            item["metadata"].update(namespace=namespace, generation=1)
        by_kind = {
            k: [o for o in items if o["kind"] == k] for k in ("ModelEndpoint", "RoutingPolicy", "Canary")
        }
        return RawObjects(by_kind["ModelEndpoint"], by_kind["RoutingPolicy"], by_kind["Canary"])

    async def read_live_config(self, namespace: str) -> LiveConfig | None:
        return self.configs.get(namespace)

    async def apply_config(self, namespace: str, config: RouterConfig, sources: Mapping[str, int]) -> None:
        self.configs[namespace] = LiveConfig(config.to_json(), config.version, dict(sources))

    async def delete_config(self, namespace: str) -> bool:
        return self.configs.pop(namespace, None) is not None

    async def patch_status(self, *_: Any) -> None:
        return None

    async def record_event(self, *_: Any, **__: Any) -> None:
        return None

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    async def ensure_secret_key(self, *_: Any) -> str:
        return "token"


async def test_a_namespace_without_objects_leaves_no_state_behind() -> None:
    kube = FakeKube()
    async with aiohttp.ClientSession() as session:
        syncer = Syncer(kube, session)  # type: ignore[arg-type]
        health = HealthMonitor(kube, session)  # type: ignore[arg-type]
        canaries = CanaryRunner(kube, syncer)  # type: ignore[arg-type]
        forgotten: list[str] = []

        def forget(namespace: str) -> None:
            forgotten.append(namespace)
            syncer.forget(namespace)
            health.forget(namespace)
            canaries.forget(namespace)

        async def announce(namespace: str, _: RouterConfig) -> None:
            syncer.schedule(namespace)

        reconciler = Reconciler(kube, announce, forget)  # type: ignore[arg-type]
        kube.objects[NS] = [endpoint(), policy()]
        reconciler.schedule(NS)
        await asyncio.to_thread(wait_for, lambda: NS in syncer.known(), "the first sync", 10)
        assert NS in reconciler.last_reports

        kube.objects[NS] = []  # the last object is deleted
        reconciler.schedule(NS)
        await asyncio.to_thread(wait_for, lambda: forgotten == [NS], "the empty pass", 10)
        syncer.schedule(NS)  # e.g. a sidecar pod event in the now empty namespace
        await asyncio.to_thread(
            wait_for, lambda: not syncer._queue.namespaces(), "the sync worker to finish", 10
        )
        assert NS not in kube.configs
        assert NS not in reconciler.last_reports and NS not in reconciler._announced
        assert syncer.known() == set()
        assert reconciler._queue.namespaces() == []
        assert health.known() == set() and canaries.known() == set()
        await reconciler.close()
        await syncer.close()


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
    async with aiohttp.ClientSession() as session:
        health = HealthMonitor(kube, session)  # type: ignore[arg-type]
        syncer = Syncer(kube, session)  # type: ignore[arg-type]
        canaries = CanaryRunner(kube, syncer)  # type: ignore[arg-type]
        body = {**endpoint(), "metadata": {"name": "llama", "namespace": NS, "resourceVersion": "1"}}
        key = health.endpoints.observe(body, deleted=False)
        health._last_probe[(*key, "eu-west-1-0")] = datetime.now(UTC)
        canary = {"kind": "Canary", "metadata": {"name": "c", "namespace": NS}}
        canaries.poke(canaries.canaries.observe(canary, deleted=False))
        assert health.known() == {NS} and canaries.known() == {NS}
        health.endpoints.observe(body, deleted=True)
        canaries.canaries.observe(canary, deleted=True)
        health.forget(NS)
        canaries.forget(NS)
        assert health.known() == set() and canaries.known() == set()
