"""Config push to the sidecars of a namespace, with acknowledgements and the sync figure in status.

The sidecars of a namespace are its Ready pods labelled `modelroute.dev/router=sidecar` that have a pod
IP; each listens for pushes on its admin port (pod annotation `modelroute.dev/admin-port`, default 9901)
and checks a bearer token kept in a per-namespace Secret the operator creates. A pod that already holds
the live version is only asked (`GET /config/version`), never sent the config again. Pushes run
concurrently with a per-pod timeout, so one slow pod never holds back the others; lagging pods are
retried with backoff. RoutingPolicy status shows `sync: ready/total` and the pods that lag.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from modelroute_contract import admin, short_version
from modelroute_contract.admin import DEFAULT_ADMIN_PORT, TOKEN_KEY, TOKEN_SECRET
from modelroute_contract.constants import ADMIN_PORT_ANNOTATION, SIDECAR_LABEL, SIDECAR_LABEL_VALUE
from modelroute_contract.stats import StatsSnapshot
from modelroute_operator.clients import metrics
from modelroute_operator.clients.kube import KubeApi, LiveConfig
from modelroute_operator.clients.namespace_queue import NamespaceQueue
from modelroute_operator.logic import status as st
from modelroute_operator.logic.resources import RoutingPolicy

log = logging.getLogger(__name__)

PUSH_TIMEOUT_SECONDS = 3.0
RESYNC_SECONDS = 30.0
"""How often every sidecar's version is re-read, to notice a restarted sidecar process."""


@dataclass(frozen=True)
class SidecarPod:
    """Where to reach one sidecar."""

    name: str
    uid: str
    ip: str
    admin_port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.ip}:{self.admin_port}"


def ready_sidecars(pods: Sequence[Mapping[str, Any]]) -> list[SidecarPod]:
    """The pods that can take a push: Ready, with an IP, not being deleted; sorted by name."""
    out = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or not status.get("podIP"):
            continue
        conditions = status.get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            continue
        port = (meta.get("annotations") or {}).get(ADMIN_PORT_ANNOTATION, DEFAULT_ADMIN_PORT)
        try:
            admin_port = int(port)
        except ValueError:
            log.warning(
                "pod %s: annotation %s=%r is not a port", meta.get("name"), ADMIN_PORT_ANNOTATION, port
            )
            continue
        out.append(SidecarPod(str(meta.get("name")), str(meta.get("uid")), str(status["podIP"]), admin_port))
    return sorted(out, key=lambda p: p.name)


def sync_fields(pods: Sequence[SidecarPod], acked: Mapping[str, str], version: str) -> dict[str, Any]:
    """The status fields describing how many sidecars run `version` and which lag."""
    lagging = [p.name for p in pods if acked.get(p.uid) != version]
    return {
        "sync": f"{len(pods) - len(lagging)}/{len(pods)}",
        "syncedVersion": short_version(version),
        "laggingPods": lagging[:64],
    }


@dataclass
class SyncReport:
    namespace: str
    version: str = ""
    pushed: list[str] = field(default_factory=list)
    lagging: list[str] = field(default_factory=list)
    status_writes: int = 0


class Syncer:
    """Pushes each namespace's live config to its sidecars; one pass at a time per namespace."""

    def __init__(self, kube: KubeApi, session: aiohttp.ClientSession) -> None:
        self._kube = kube
        self._session = session
        self._acked: dict[str, dict[str, str]] = {}
        """namespace → pod uid → version the pod acknowledged."""
        self._tokens: dict[str, str] = {}
        self._namespaces: set[str] = set()
        """Namespaces with a live config, re-read on every periodic resync."""
        self._queue = NamespaceQueue("sync", self._pass)

    def schedule(self, namespace: str) -> None:
        self._queue.schedule(namespace)

    def forget_acks(self) -> None:
        """Make the next pass re-read every sidecar's version (periodic resync)."""
        self._acked.clear()
        for namespace in sorted(self._namespaces):
            self.schedule(namespace)

    def forget(self, namespace: str) -> None:
        """Drop what is kept about a namespace that has no objects left."""
        self._acked.pop(namespace, None)
        self._tokens.pop(namespace, None)
        self._namespaces.discard(namespace)

    def known(self) -> set[str]:
        """Namespaces the syncer keeps state for (tests check the pruning)."""
        return self._namespaces | set(self._acked) | set(self._tokens)

    async def close(self) -> None:
        await self._queue.close()

    async def _pass(self, namespace: str) -> bool:
        report = await self.sync(namespace)
        if report.pushed or report.status_writes:
            log.info(
                "sync %s: version=%s pushed=%s lagging=%s",
                namespace,
                short_version(report.version),
                ",".join(report.pushed) or "-",
                ",".join(report.lagging) or "-",
            )
        return bool(report.lagging)  # lagging pods are retried with backoff

    async def sync(self, namespace: str) -> SyncReport:
        """Bring every ready sidecar of `namespace` to the live version; write the sync figure."""
        live = await self._kube.read_live_config(namespace)
        report = SyncReport(namespace, version=live.version if live else "")
        if live is None:
            self.forget(namespace)  # nothing to push: keep nothing either
        else:
            self._namespaces.add(namespace)
        pods = ready_sidecars(await self._kube.list_pods(namespace, f"{SIDECAR_LABEL}={SIDECAR_LABEL_VALUE}"))
        acked = self._acked.setdefault(namespace, {}) if live is not None else {}
        for uid in set(acked) - {p.uid for p in pods}:
            del acked[uid]
        if live is not None:
            token = await self._token(namespace)
            pending = [p for p in pods if acked.get(p.uid) != live.version]
            results = await asyncio.gather(*(self._bring_up_to_date(p, live, token) for p in pending))
            for pod, (version, pushed) in zip(pending, results, strict=True):
                if pushed:
                    metrics.PUSHES.labels("acknowledged" if version else "refused").inc()
                if version:
                    metrics.ACKNOWLEDGED.inc()
                    acked[pod.uid] = version
                if pushed:
                    report.pushed.append(pod.name)
        fields = (
            sync_fields(pods, acked, report.version)
            if live
            else {"sync": None, "syncedVersion": None, "laggingPods": []}
        )
        report.lagging = list(fields["laggingPods"])
        metrics.LAGGING_SIDECARS.set(len(report.lagging))
        report.status_writes = await self._write_status(namespace, fields)
        return report

    async def fetch_stats(self, namespace: str) -> list[StatsSnapshot]:
        """The `/stats` documents of the namespace's ready sidecars (unreachable ones are left out).

        Raises ValueError (pydantic's ValidationError) when a sidecar answers with a document that is not
        a `StatsSnapshot`: the canary then holds, as it does for figures that cannot be summed."""
        pods = ready_sidecars(await self._kube.list_pods(namespace, f"{SIDECAR_LABEL}={SIDECAR_LABEL_VALUE}"))
        if not pods:
            return []
        token = await self._token(namespace)
        answers = await asyncio.gather(*(self._get_stats(p, token) for p in pods))
        return [StatsSnapshot.model_validate(doc) for doc in answers if doc is not None]

    async def _get_stats(self, pod: SidecarPod, token: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_SECONDS)
        try:
            async with self._session.get(
                f"{pod.base_url}{admin.STATS_PATH}", headers=admin.authorization(token), timeout=timeout
            ) as r:
                if r.status == 200:
                    return await r.json()
                log.warning("stats of %s: HTTP %d", pod.name, r.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("stats of %s failed: %s", pod.name, exc or type(exc).__name__)
        return None

    async def _bring_up_to_date(self, pod: SidecarPod, live: LiveConfig, token: str) -> tuple[str, bool]:
        """(version the pod now runs or "" when unknown, whether a push was sent)."""
        headers = admin.authorization(token)
        timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_SECONDS)
        try:
            async with self._session.get(
                f"{pod.base_url}{admin.VERSION_PATH}", headers=headers, timeout=timeout
            ) as r:
                if r.status == 200 and (await r.json()).get("version") == live.version:
                    return live.version, False
            async with self._session.put(
                f"{pod.base_url}{admin.CONFIG_PATH}",
                data=live.config_json,
                headers={**headers, "Content-Type": "application/json"},
                timeout=timeout,
            ) as r:
                body = await r.text()
                if r.status != 200:
                    log.warning("push to %s refused: HTTP %d %s", pod.name, r.status, body[:300])
                    return "", True
                return live.version, True
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("push to %s (%s) failed: %s", pod.name, pod.base_url, exc or type(exc).__name__)
            metrics.PUSHES.labels("failed").inc()
            return "", False

    async def _token(self, namespace: str) -> str:
        if namespace not in self._tokens:
            self._tokens[namespace] = await self._kube.ensure_secret_key(
                namespace, TOKEN_SECRET, TOKEN_KEY, lambda: secrets.token_urlsafe(32)
            )
        return self._tokens[namespace]

    async def _write_status(self, namespace: str, fields: Mapping[str, Any]) -> int:
        writes = 0
        for body in (await self._kube.list_objects(namespace)).policies:
            patch = st.status_patch(body.get("status") or {}, fields)
            if patch:
                await self._kube.patch_status(RoutingPolicy, namespace, body["metadata"]["name"], patch)
                writes += 1
        return writes
