"""What the operator knows of the cluster, fed by its watches: our objects, live configs, sidecar pods.

The reconciler, the syncer and the clocks read a namespace from here instead of listing it from the API
on every pass (at 1,000 namespaces the lists were most of the API calls of a cold start). Nothing here is
state of its own: a starting operator lists each watched resource once (`seed`, the informer pattern:
list, then watch), so the first pass over a namespace sees all of it; from then on Kopf's watches keep
it current. What must survive a restart lives in status and in the ConfigMaps.

An object listed at start-up that was deleted before Kopf's own listing would never be reported gone:
`sweep` asks the API about what no watch event confirmed within `CONFIRM_SECONDS` and drops only what
it says is gone (404). Silence is no evidence: Kopf delivers its listing late when the API server is
slow or away at start-up, or under a cold start's load, and an object dropped for that would vanish from
the compiled config until its next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from modelroute_contract.constants import (
    ADMIN_PORT_ANNOTATION,
    CONFIGMAP_NAME,
    SIDECAR_LABEL,
    SIDECAR_LABEL_VALUE,
)
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS, config_key
from modelroute_operator.clients.kube import (
    MANAGED_BY,
    SOURCES_KEY,
    KubeApi,
    ListRefusedError,
    LiveConfig,
    RawObjects,
    TransientApiError,
    live_config_from,
)
from modelroute_operator.logic.cache import Key, ObjectCache, key_of
from modelroute_operator.logic.resources import (
    GROUP,
    KIND_BY_NAME,
    KINDS,
    VERSION,
    Canary,
    ModelEndpoint,
    Resource,
    RoutingPolicy,
)

log = logging.getLogger(__name__)


def sidecar_view(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields of a sidecar pod a push needs (pods carry kilobytes of spec; 10,000 of them
    would be most of the operator's memory)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
            "annotations": {k: v for k, v in annotations.items() if k == ADMIN_PORT_ANNOTATION},
        },
        "status": {
            "podIP": status.get("podIP"),
            "conditions": ready,
            # what `status.pod_incarnation` reads: a restarted container means a sidecar booted again
            **{
                key: [
                    {k: c.get(k) for k in ("name", "restartCount", "containerID")}
                    for c in status.get(key) or []
                ]
                for key in ("initContainerStatuses", "containerStatuses")
                if status.get(key)
            },
        },
    }


def config_view(configmap: Mapping[str, Any]) -> dict[str, Any]:
    """A live-config ConfigMap with only what is read back: the newest schema's document and the
    sources (the renderings for older sidecars are derived from it, never read)."""
    meta, data = configmap.get("metadata") or {}, configmap.get("data") or {}
    newest = next(
        (k for k in map(config_key, sorted(ACCEPTED_SCHEMA_VERSIONS, reverse=True)) if data.get(k)), None
    )
    kept = {k: data[k] for k in (newest, SOURCES_KEY) if k is not None and k in data}
    return {
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
        "data": kept,
    }


CONFIRM_SECONDS = 30.0
"""How long a start-up listing's object may go without a watch event before the API is asked about it
(and again every as long while the API cannot answer or the watch has still not delivered it)."""
SWEEP_READS = 16
"""API reads a sweep keeps in flight."""


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without `managedFields` (nothing reads them; they are a third of a small object)."""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping) or "managedFields" not in meta:
        return dict(body)
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _resource_version(body: Mapping[str, Any] | None) -> str:
    return str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")


class Inventory:
    """The watch-fed caches, one per kind, and the views passes read."""

    def __init__(self) -> None:
        self.endpoints = ObjectCache(slim)
        self.policies = ObjectCache(slim)
        self.canaries = ObjectCache(slim)
        self.configs = ObjectCache(config_view)
        """The live-config ConfigMaps, as `config_view`s."""
        self.pods = ObjectCache(sidecar_view)
        """Sidecar pods, as `sidecar_view`s."""
        self._live: dict[str, tuple[str, LiveConfig | None]] = {}
        """namespace → (the ConfigMap's resourceVersion, its config parsed)."""
        self._unconfirmed: dict[int, tuple[ObjectCache, set[Key]]] = {}
        """Objects of the start-up listing no watch event has delivered yet, per cache."""
        self._sources: dict[int, tuple[str, dict[str, str]]] = {}
        """Per cache, its list path and label selector (what `sweep` reads an object back with)."""

    def seed(self, cache: ObjectCache, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Take in a start-up listing's objects (no pass is owed for them: the start-up schedules one
        per namespace anyway, and the watch's first event of each compares with this body)."""
        _, unconfirmed = self._unconfirmed.setdefault(id(cache), (cache, set()))
        for body in bodies:
            key = cache.observe(body)
            cache.take_previous(key)
            unconfirmed.add(key)

    async def load(
        self,
        kube: KubeApi,
        namespaces: Sequence[str] | None = None,
        wanted: Callable[[str], bool] = lambda _: True,
    ) -> None:
        """List every resource the operator watches (cluster-wide, or in `namespaces`) and take it in:
        the start-up listing; tests that drive a part without Kopf call it to see what the API holds.
        A resource that cannot be listed (RBAC of an unusual install) is left to the watch."""
        managed = ",".join(f"{k}={v}" for k, v in sorted(MANAGED_BY.items()))
        listings: list[tuple[ObjectCache, str, str, str]] = [
            *((self.of(kind), f"/apis/{GROUP}/{VERSION}/{kind.plural}", "", "") for kind in KINDS),
            (self.configs, "/api/v1/configmaps", managed, f"metadata.name={CONFIGMAP_NAME}"),
            (self.pods, "/api/v1/pods", f"{SIDECAR_LABEL}={SIDECAR_LABEL_VALUE}", ""),
        ]
        for cache, path, labels, _ in listings:
            selector = dict(pair.split("=", 1) for pair in labels.split(",") if pair)
            self._sources[id(cache)] = (path, selector)

        async def take(cache: ObjectCache, path: str, labels: str, fields: str) -> None:
            try:
                async for page in kube.list_all(path, namespaces, labels, fields):
                    self.seed(cache, (b for b in page if wanted(key_of(b)[0])))
            except ListRefusedError as exc:
                log.warning("listing of %s refused (%s); the watch alone fills it", path, exc)
            except TransientApiError as exc:
                log.warning("listing of %s failed (%s); the watch alone fills it", path, exc)

        # at once: a standby taking over waits for the slowest listing, not for their sum
        await asyncio.gather(*(take(*listing) for listing in listings))

    def confirm(self, cache: ObjectCache, key: Key) -> None:
        """A watch event delivered the object (or its deletion)."""
        held = self._unconfirmed.get(id(cache))
        if held is not None:
            held[1].discard(key)

    async def sweep(self, kube: KubeApi) -> tuple[list[tuple[ObjectCache, Key]], int]:
        """Ask the API about the start-up listing's objects no watch event has confirmed yet. One it
        says is gone (deleted between that listing and the watch's own) is dropped; one it still has is
        kept with the body it holds now (a quiet object is not a deleted one) and stays unconfirmed
        until the watch delivers it, so a later sweep asks again; one it could not answer about is
        kept. Returns the objects dropped or changed (their namespaces get a pass) and how many are
        still unconfirmed."""
        limit = asyncio.Semaphore(SWEEP_READS)
        touched: list[tuple[ObjectCache, Key]] = []

        async def check(cache: ObjectCache, keys: set[Key], key: Key) -> None:
            path, selector = self._sources.get(id(cache), ("", {}))
            if not path:
                return
            async with limit:
                try:
                    body = await kube.read_object(path, key[0], key[1])
                except (TransientApiError, ListRefusedError) as exc:
                    log.warning("%s/%s: could not confirm it exists (%s); asked again later", *key, exc)
                    return
            if key not in keys:
                return  # the watch delivered it (or its deletion) meanwhile: that is newer
            labels = ((body or {}).get("metadata") or {}).get("labels") or {}
            if body is None or any(labels.get(k) != v for k, v in selector.items()):
                keys.discard(key)
                cache.observe({"metadata": {"namespace": key[0], "name": key[1]}}, deleted=True)
                touched.append((cache, key))
                return
            before = _resource_version(cache.get(key))
            cache.observe(body)
            cache.take_previous(key)
            if _resource_version(cache.get(key)) != before:  # changed while the watch was late
                touched.append((cache, key))

        await asyncio.gather(
            *(check(cache, keys, key) for cache, keys in self._unconfirmed.values() for key in list(keys))
        )
        for held_id, (_, keys) in list(self._unconfirmed.items()):
            if not keys:
                del self._unconfirmed[held_id]
        return touched, sum(len(keys) for _, keys in self._unconfirmed.values())

    def of(self, kind: type[Resource]) -> ObjectCache:
        if kind is ModelEndpoint:
            return self.endpoints
        if kind is RoutingPolicy:
            return self.policies
        if kind is Canary:
            return self.canaries
        raise KeyError(kind.kind_name)

    def of_kind(self, kind_name: str) -> ObjectCache:
        """The cache of a kind by its name (`ModelEndpoint`, ...)."""
        return self.of(KIND_BY_NAME[kind_name])

    def objects(self, namespace: str) -> RawObjects:
        """The namespace's objects of our kinds, as the watch last delivered them (or we wrote them)."""
        return RawObjects(
            self.endpoints.in_namespace(namespace),
            self.policies.in_namespace(namespace),
            self.canaries.in_namespace(namespace),
        )

    def has_objects(self, namespace: str) -> bool:
        return any(namespace in c.namespaces() for c in (self.endpoints, self.policies, self.canaries))

    def has_canaries(self, namespace: str) -> bool:
        return namespace in self.canaries.namespaces()

    def live_config(self, namespace: str) -> LiveConfig | None:
        """The namespace's stored RouterConfig (parsed once per ConfigMap version), None when none."""
        held = self.configs.in_namespace(namespace)
        if not held:
            self._live.pop(namespace, None)
            return None
        body = held[0]
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        cached = self._live.get(namespace)
        if cached is None or cached[0] != version or not version:
            cached = self._live[namespace] = (version, live_config_from(body.get("data") or {}))
        return cached[1]

    def forget(self, namespace: str) -> None:
        """Drop the parsed config of a namespace that has none of our objects left (the caches drop a
        namespace with its last object on their own)."""
        if not self.configs.in_namespace(namespace):
            self._live.pop(namespace, None)

    def sidecar_pods(self, namespace: str) -> list[dict[str, Any]]:
        return self.pods.in_namespace(namespace)

    def namespaces(self) -> set[str]:
        """Namespaces anything is held for (tests check that a namespace's state goes with it)."""
        caches = (self.endpoints, self.policies, self.canaries, self.configs, self.pods)
        return set(self._live).union(*(c.namespaces() for c in caches))
