"""Config push to the sidecars of a namespace, with acknowledgements and the sync figure in status.

The sidecars of a namespace are its Ready pods labelled `modelroute.dev/router=sidecar` that have a pod
IP; each listens for pushes on its admin port (pod annotation `modelroute.dev/admin-port`, default 9901)
and checks a bearer token kept in a per-namespace Secret the operator creates. A pod that already holds
the live version is only asked (`GET /config/version`), never sent the config again. Pushes run
concurrently with a per-pod timeout, so one slow pod never holds back the others; lagging pods are
retried with backoff. RoutingPolicy status shows `sync: ready/total` and the pods that lag. Pods, the
live config and the policies are read from the watch-fed inventory, not listed per pass.

Each pod gets the live config in the newest schema its sidecar reads (`acceptedSchemaVersions` in its
version answer; schema 1 when it does not say), and counts as in sync only when it runs that rendering.
When the config cannot be rendered faithfully for what a pod reads, nothing is sent to it: status lists
it under `skewedPods` with the reason, and a Warning Event on the pod says the same. Such a pod is not
retried until the config or the pod changes (a retry cannot help; a restart with a newer sidecar can).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from modelroute_contract import RouterConfig, admin, short_version
from modelroute_contract.admin import DEFAULT_ADMIN_PORT, TOKEN_KEY, TOKEN_SECRET
from modelroute_contract.constants import ADMIN_PORT_ANNOTATION
from modelroute_contract.schemas import Rendering, SchemaGap, accepted_schemas
from modelroute_contract.stats import StatsSnapshot
from modelroute_operator.clients import metrics
from modelroute_operator.clients.inventory import Inventory
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
    incarnation: str = ""
    """Which run of the pod's containers this is (`st.pod_incarnation`): a restarted sidecar process
    boots from its mounted file, which may be older than what it acknowledged before."""

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
        out.append(
            SidecarPod(
                str(meta.get("name")), str(meta.get("uid")), str(status["podIP"]), admin_port,
                st.pod_incarnation(status),
            )
        )  # fmt: skip
    return sorted(out, key=lambda p: p.name)


Plan = Rendering | SchemaGap
"""What a pod is meant to run (the live config in a schema it reads), or why it cannot."""

SKEW_REASON_MAX = 2048
"""Longest reason status carries (the CRD's bound); the pod's Event has the full text up to 1 KiB."""


def sync_fields(
    pods: Sequence[SidecarPod], acked: Mapping[str, str], plans: Mapping[str, Plan], version: str
) -> dict[str, Any]:
    """The status fields describing how many sidecars run the live `version` (each in the rendering
    meant for it), which lag, and which cannot be sent it and why."""
    lagging = [p.name for p in pods if not in_sync(p, acked, plans)]
    groups: dict[tuple[tuple[int, ...], str], list[str]] = {}
    for pod in pods:
        plan = plans.get(pod.uid)
        if isinstance(plan, SchemaGap):
            groups.setdefault((plan.reads, plan.message()), []).append(pod.name)
    return {
        "sync": f"{len(pods) - len(lagging)}/{len(pods)}",
        "syncedVersion": short_version(version),
        "laggingPods": lagging[:64],
        "skewedPods": [
            {"pods": names[:64], "reads": list(reads), "reason": _bounded(reason, SKEW_REASON_MAX)}
            for (reads, reason), names in list(groups.items())[:8]
        ],
    }


def in_sync(pod: SidecarPod, acked: Mapping[str, str], plans: Mapping[str, Plan]) -> bool:
    """Whether the pod runs the rendering of the live config meant for it."""
    plan = plans.get(pod.uid)
    return isinstance(plan, Rendering) and acked.get(pod.uid) == plan.version


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class SyncReport:
    namespace: str
    version: str = ""
    pushed: list[str] = field(default_factory=list)
    lagging: list[str] = field(default_factory=list)
    skewed: list[str] = field(default_factory=list)
    """Pods the live config cannot be sent to (their sidecar reads only older schemas)."""
    status_writes: int = 0


@dataclass(frozen=True)
class PodAnswer:
    """What one pod said and whether it was sent a config."""

    version: str = ""
    """The version it runs now; "" when unknown."""
    reads: tuple[int, ...] | None = None
    """The schemas its sidecar reads; None when it did not answer."""
    pushed: bool = False


def _wants_push(pod: SidecarPod, acked: Mapping[str, str], plans: Mapping[str, Plan]) -> bool:
    return isinstance(plans.get(pod.uid), Rendering) and not in_sync(pod, acked, plans)


class _Renderings:
    """The live config rendered per set of schemas a sidecar reads, each computed once per pass."""

    def __init__(self, config: RouterConfig) -> None:
        self._config = config
        self._plans: dict[tuple[int, ...], Plan] = {}

    def plan(self, reads: tuple[int, ...]) -> Plan:
        if reads not in self._plans:
            self._plans[reads] = self._config.render_for(reads)
        return self._plans[reads]


class Syncer:
    """Pushes each namespace's live config to its sidecars; one pass at a time per namespace."""

    def __init__(self, kube: KubeApi, inventory: Inventory, session: aiohttp.ClientSession) -> None:
        self._kube = kube
        self._inventory = inventory
        self._session = session
        self._acked: dict[str, dict[str, str]] = {}
        """namespace → pod uid → version the pod acknowledged."""
        self._reads: dict[str, dict[str, tuple[int, ...]]] = {}
        """namespace → pod uid → the schemas its sidecar reads."""
        self._incarnations: dict[str, dict[str, str]] = {}
        """namespace → pod uid → the incarnation its acknowledgement was given by."""
        self._warned: dict[str, set[tuple[str, str]]] = {}
        """namespace → (pod uid, live version) whose skew an Event reported."""
        self._parsed: dict[str, RouterConfig] = {}
        """namespace → the live config as a model (re-parsed when its version changes)."""
        self._tokens: dict[str, str] = {}
        self._namespaces: set[str] = set()
        """Namespaces with a live config, re-read on every periodic resync."""
        self._queue = NamespaceQueue("sync", self._pass)

    def schedule(self, namespace: str) -> None:
        self._queue.schedule(namespace)

    def forget_acks(self) -> None:
        """Make the next pass re-read every sidecar's version (periodic resync)."""
        self._acked.clear()
        self._reads.clear()
        for namespace in sorted(self._namespaces):
            self.schedule(namespace)

    def forget(self, namespace: str) -> None:
        """Drop what is kept about a namespace that has no objects left."""
        self._acked.pop(namespace, None)
        self._reads.pop(namespace, None)
        self._incarnations.pop(namespace, None)
        self._warned.pop(namespace, None)
        self._parsed.pop(namespace, None)
        self._tokens.pop(namespace, None)
        self._namespaces.discard(namespace)

    def known(self) -> set[str]:
        """Namespaces the syncer keeps state for (tests check the pruning)."""
        kept = (self._acked, self._reads, self._incarnations, self._warned, self._parsed, self._tokens)
        return self._namespaces.union(*(set(k) for k in kept))

    async def close(self) -> None:
        await self._queue.close()

    async def _pass(self, namespace: str) -> bool:
        report = await self.sync(namespace)
        if report.pushed or report.status_writes:
            log.info(
                "sync %s: version=%s pushed=%s lagging=%s skewed=%s",
                namespace,
                short_version(report.version),
                ",".join(report.pushed) or "-",
                ",".join(report.lagging) or "-",
                ",".join(report.skewed) or "-",
            )
        # lagging pods are retried with backoff; skewed ones wait for a new config or a new pod
        return bool(set(report.lagging) - set(report.skewed))

    async def sync(self, namespace: str) -> SyncReport:
        """Bring every ready sidecar of `namespace` to the live version; write the sync figure."""
        live = self._inventory.live_config(namespace)
        config = self._live_model(namespace, live)
        report = SyncReport(namespace, version=live.version if live else "")
        if live is None:
            self.forget(namespace)  # nothing to push: keep nothing either
        else:
            self._namespaces.add(namespace)
        pods = ready_sidecars(self._inventory.sidecar_pods(namespace))
        acked = self._acked.setdefault(namespace, {}) if live is not None else {}
        reads = self._reads.setdefault(namespace, {}) if live is not None else {}
        incarnations = self._incarnations.setdefault(namespace, {}) if live is not None else {}
        for pod in pods:
            # A container restarted since it acknowledged: what it runs now is unknown until it is asked.
            if incarnations.get(pod.uid, pod.incarnation) != pod.incarnation:
                acked.pop(pod.uid, None)
                reads.pop(pod.uid, None)
            incarnations[pod.uid] = pod.incarnation
        for kept in (acked, reads, incarnations):
            for uid in set(kept) - {p.uid for p in pods}:
                del kept[uid]
        plans: dict[str, Plan] = {}
        if config is not None:
            renderings = _Renderings(config)
            plans = {uid: renderings.plan(schemas) for uid, schemas in reads.items()}
            token = await self._token(namespace)
            # not asked: pods known to run their rendering, and skewed pods (asking cannot help)
            pending = [p for p in pods if p.uid not in plans or _wants_push(p, acked, plans)]
            answers = await asyncio.gather(*(self._bring_up_to_date(p, renderings, token) for p in pending))
            for pod, answer in zip(pending, answers, strict=True):
                if answer.pushed:
                    metrics.PUSHES.labels("acknowledged" if answer.version else "refused").inc()
                if answer.version:
                    metrics.ACKNOWLEDGED.inc()
                    acked[pod.uid] = answer.version
                if answer.reads is not None:
                    reads[pod.uid] = answer.reads
                    plans[pod.uid] = renderings.plan(answer.reads)
                if answer.pushed:
                    report.pushed.append(pod.name)
            report.skewed = [p.name for p in pods if isinstance(plans.get(p.uid), SchemaGap)]
            await self._warn_skewed(namespace, live.version if live else "", pods, plans, acked)
        fields = (
            sync_fields(pods, acked, plans, report.version)
            if live
            else {"sync": None, "syncedVersion": None, "laggingPods": [], "skewedPods": []}
        )
        report.lagging = list(fields["laggingPods"])
        metrics.LAGGING_SIDECARS.set(len(report.lagging))
        report.status_writes = await self._write_status(namespace, fields)
        return report

    @property
    def inventory(self) -> Inventory:
        """The watch-fed inventory the syncer reads (the fleet watch reads it too)."""
        return self._inventory

    def live_model(self, namespace: str) -> RouterConfig | None:
        """The namespace's live config as a model (parsed once per version), None when there is none."""
        return self._live_model(namespace, self._inventory.live_config(namespace))

    def _live_model(self, namespace: str, live: LiveConfig | None) -> RouterConfig | None:
        """The live config as a model, parsed once per version; None when there is none or it cannot be
        read (a development build's document: the reconciler replaces it, nothing is pushed meanwhile)."""
        if live is None:
            return None
        cached = self._parsed.get(namespace)
        if cached is not None and cached.version == live.version:
            return cached
        try:
            parsed = RouterConfig.model_validate_json(live.config_json)
        except ValueError as exc:
            log.warning("sync %s: stored config %s is not readable: %s", namespace, live.version, exc)
            return None
        self._parsed[namespace] = parsed
        return parsed

    async def _warn_skewed(
        self,
        namespace: str,
        version: str,
        pods: Sequence[SidecarPod],
        plans: Mapping[str, Plan],
        acked: Mapping[str, str],
    ) -> None:
        """A Warning Event on each pod the live config cannot be sent to, once per pod and version."""
        warned = self._warned.setdefault(namespace, set())
        warned &= {(p.uid, version) for p in pods}  # forget pods gone and older versions
        for pod in pods:
            plan = plans.get(pod.uid)
            if not isinstance(plan, SchemaGap) or (pod.uid, version) in warned:
                continue
            warned.add((pod.uid, version))
            running = short_version(acked.get(pod.uid, "")) or "none"
            message = (
                f"config {short_version(version)} not sent: the sidecar {plan.message()}. "
                f"It keeps running config {running} until the pod restarts with a newer sidecar."
            )
            log.warning("sync %s: pod %s %s", namespace, pod.name, message)
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": namespace, "uid": pod.uid},
            }
            await self._kube.record_event(body, "ConfigSchemaSkew", message, warning=True)

    async def fetch_stats(self, namespace: str) -> list[StatsSnapshot]:
        """The `/stats` documents of the namespace's ready sidecars (unreachable ones are left out).

        Raises ValueError (pydantic's ValidationError) when a sidecar answers with a document that is not
        a `StatsSnapshot`: the canary then holds, as it does for figures that cannot be summed."""
        pods = ready_sidecars(self._inventory.sidecar_pods(namespace))
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

    async def _bring_up_to_date(self, pod: SidecarPod, renderings: _Renderings, token: str) -> PodAnswer:
        """Ask the pod what it runs and reads; push the rendering meant for it when it runs another."""
        headers = admin.authorization(token)
        timeout = aiohttp.ClientTimeout(total=PUSH_TIMEOUT_SECONDS)
        try:
            async with self._session.get(
                f"{pod.base_url}{admin.VERSION_PATH}", headers=headers, timeout=timeout
            ) as r:
                if r.status != 200:
                    # without its answer the schema it reads is unknown: nothing is sent blind
                    log.warning("version of %s: HTTP %d %s", pod.name, r.status, (await r.text())[:300])
                    return PodAnswer()
                answer = await r.json()
            running = str(answer.get("version") or "")
            reads = accepted_schemas(answer)
            plan = renderings.plan(reads)
            if isinstance(plan, SchemaGap) or running == plan.version:
                return PodAnswer(running, reads)
            async with self._session.put(
                f"{pod.base_url}{admin.CONFIG_PATH}",
                data=plan.text,
                headers={**headers, "Content-Type": "application/json"},
                timeout=timeout,
            ) as r:
                body = await r.text()
                if r.status != 200:
                    log.warning("push to %s refused: HTTP %d %s", pod.name, r.status, body[:300])
                    return PodAnswer(running, reads, pushed=True)
                return PodAnswer(plan.version, reads, pushed=True)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("push to %s (%s) failed: %s", pod.name, pod.base_url, exc or type(exc).__name__)
            metrics.PUSHES.labels("failed").inc()
            return PodAnswer()

    async def _token(self, namespace: str) -> str:
        if namespace not in self._tokens:
            self._tokens[namespace] = await self._kube.ensure_secret_key(
                namespace, TOKEN_SECRET, TOKEN_KEY, lambda: secrets.token_urlsafe(32)
            )
        return self._tokens[namespace]

    async def _write_status(self, namespace: str, fields: Mapping[str, Any]) -> int:
        """Write the figure (and the `Synced`/`Ready` conditions it decides) on every policy whose
        `configVersion` is the version counted. The patch is conditional on the resourceVersion read:
        a reconciler write in between (a new config version) makes it a conflict, not a stale `n/n`."""
        writes = 0
        now = datetime.now(UTC)
        for body in self._inventory.policies.in_namespace(namespace):
            patch = st.policy_sync_patch(body, fields, now)
            if not patch:
                continue
            meta = body["metadata"]
            stored = await self._kube.patch_status(
                RoutingPolicy, namespace, meta["name"], patch, resource_version=meta.get("resourceVersion")
            )
            if stored is not None:
                self._inventory.policies.put(stored)
                writes += 1
            else:
                # Changed since it was read: count again on what it is now (acks are kept, so the next
                # pass asks no sidecar that is known to run the live version).
                self.schedule(namespace)
        return writes
