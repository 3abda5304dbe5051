"""The operator's clocks: active health probes of every replica and the canary controller's steps.

Both work from the latest bodies the watch delivered (kept by `observe`), decide with the pure
`health.observe` and `canary.step`, and write only the status fields they own: the health monitor owns
`ModelEndpoint.status.replicas`, the canary runner owns a Canary's progress fields. A write changes
status, the watch delivers it, the reconciler recompiles: an unhealthy replica or a new canary weight
reaches the sidecars through the normal path. State needed to continue lives in status, so a restart
resumes; probe times alone stay in memory (a restart probes at once, which is harmless).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from modelroute_contract import RouterConfig, replica_url_problem
from modelroute_operator.clients import metrics
from modelroute_operator.clients import probe as pr
from modelroute_operator.clients.kube import KubeApi, SecretForbiddenError, TransientApiError
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.logic import canary as cn
from modelroute_operator.logic import health as hl
from modelroute_operator.logic import status as st
from modelroute_operator.logic.resources import (
    Canary,
    CanarySpec,
    CanaryStatus,
    HealthCheck,
    ModelEndpoint,
    ModelEndpointSpec,
    ReplicaHealth,
    ReplicaStatus,
    seconds,
)
from modelroute_operator.logic.traffic import CanaryStats, sum_stats

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
"""How often the loops look for work; probes and steps keep their own schedules."""
MAX_CONCURRENT_PROBES = 64

Key = tuple[str, str]


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def spawn(tasks: set[asyncio.Task[None]], coro: Any, name: str) -> None:
    """Start a task and hold a reference until it ends (the loop keeps only weak ones)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class ObjectCache:
    """Latest body of each object of one kind, as the watch delivered it."""

    def __init__(self) -> None:
        self.bodies: dict[Key, dict[str, Any]] = {}

    def observe(self, body: Mapping[str, Any], deleted: bool) -> Key:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self.bodies.pop(key, None)
        else:
            self.bodies[key] = copy.deepcopy(dict(body))
        return key


class HealthMonitor:
    """Probes every replica per its endpoint's health check; writes `status.replicas` when it changes."""

    def __init__(
        self, kube: KubeApi, session: aiohttp.ClientSession, now: Callable[[], datetime] | None = None
    ):
        self._kube = kube
        self._session = session
        self._now = now or (lambda: datetime.now(UTC))
        self.endpoints = ObjectCache()
        self._specs: dict[Key, tuple[str, ModelEndpointSpec | None]] = {}
        """Parsed spec per endpoint, keyed by the resourceVersion it was parsed from."""
        self._last_probe: dict[tuple[str, str, str], datetime] = {}
        self._busy: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

    async def run(self) -> None:
        while True:
            now = self._now()
            for key, body in list(self.endpoints.bodies.items()):
                if key in self._busy:
                    continue
                spec = self._spec(key, body)
                # Most ticks find nothing due: decide that without parsing status or spawning a task.
                if spec is None or not any(
                    self._due(key, r.name, spec.health_check, now) for r in spec.replicas
                ):
                    continue
                self._busy.add(key)
                spawn(self._tasks, self._check(key, body), f"health:{key}")
            self._prune()
            await asyncio.sleep(TICK_SECONDS)

    def _prune(self) -> None:
        """Forget parsed specs and probe times of endpoints that went away."""
        live = self.endpoints.bodies
        for key in set(self._specs) - set(live):
            del self._specs[key]
        for probe in [p for p in self._last_probe if (p[0], p[1]) not in live]:
            del self._last_probe[probe]

    def forget(self, namespace: str) -> None:
        """Drop what is kept about a namespace's deleted endpoints. The bodies themselves follow the watch
        (a DELETED event removes one), so an object created meanwhile is never lost."""
        self._prune()

    def known(self) -> set[str]:
        """Namespaces this monitor keeps state for."""
        return {k[0] for k in [*self.endpoints.bodies, *self._specs, *self._last_probe]}

    def _spec(self, key: Key, body: Mapping[str, Any]) -> ModelEndpointSpec | None:
        """The endpoint's spec when probing is enabled, parsed once per resourceVersion."""
        version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        cached = self._specs.get(key)
        if cached is None or cached[0] != version:
            try:
                spec: ModelEndpointSpec | None = ModelEndpointSpec.model_validate(body.get("spec") or {})
            except ValidationError:
                spec = None  # the reconciler reports the invalid spec
            if spec is not None and not spec.health_check.enabled:
                spec = None
            cached = self._specs[key] = (version, spec)
        return cached[1]

    async def _check(self, key: Key, body: Mapping[str, Any]) -> None:
        try:
            await self.check_endpoint(key, body)
        except TransientApiError as exc:
            log.warning("health %s/%s: API server unavailable: %s", *key, exc)
        except Exception:
            log.exception("health %s/%s failed", *key)
        finally:
            self._busy.discard(key)

    async def check_endpoint(self, key: Key, body: Mapping[str, Any]) -> None:
        """Probe the replicas that are due, then write `status.replicas` if anything changed."""
        spec = self._spec(key, body)
        if spec is None:
            return
        current = [ReplicaStatus.model_validate(r) for r in (body.get("status") or {}).get("replicas") or []]
        by_name = {(r.name, r.region): r for r in current}
        now = self._now()
        due = [replica for replica in spec.replicas if self._due(key, replica.name, spec.health_check, now)]
        token, refusal = await self._credential(key[0], spec) if due else (None, None)
        tls = await self._tls(key[0], spec) if due else None
        if isinstance(tls, str):
            refusal, tls = refusal or tls, None
        results = await asyncio.gather(*(self._probe_replica(spec, r.url, token, refusal, tls) for r in due))
        outcome = dict(zip((r.name for r in due), results, strict=True))
        replicas, transitions = [], []
        for replica in sorted(spec.replicas, key=lambda r: r.name):
            previous = by_name.get((replica.name, replica.region)) or ReplicaStatus(
                name=replica.name, region=replica.region, health=ReplicaHealth.UNKNOWN
            )
            result = outcome.get(replica.name)
            if isinstance(result, str):
                # Not probed: health stays as it was (the sidecars hold their own credentials), the
                # reason is shown where a platform engineer looks.
                previous = previous.model_copy(update={"last_error": result[:1024], "last_probe_time": now})
                self._last_probe[(*key, replica.name)] = now
            elif result is not None:
                ok, error = result
                previous, transition = hl.observe(previous, ok, error, spec.health_check, now)
                self._last_probe[(*key, replica.name)] = now
                if transition is not None:
                    transitions.append(transition)
            replicas.append(previous)
        if not self._differs(current, replicas):
            return
        await self._kube.patch_status(
            ModelEndpoint, key[0], key[1], {"replicas": [_dump(r) for r in replicas]}
        )
        for t in transitions:
            log.info("health %s/%s: %s", *key, t.message)
            await self._kube.record_event(body, t.reason, t.message, warning=t.warning)

    def _due(self, key: Key, replica: str, check: HealthCheck, now: datetime) -> bool:
        last = self._last_probe.get((*key, replica))
        if last is None:
            return True  # never probed by this process: resume at once from what status says
        return (now - last).total_seconds() >= seconds(check.interval)

    async def _probe(
        self,
        check: HealthCheck,
        url: str,
        path: str,
        headers: dict[str, str],
        tls: ssl.SSLContext | None,
        server_name: str | None,
    ) -> tuple[bool, str | None]:
        async with self._slots:
            result = await pr.probe(
                self._session, url, path, seconds(check.timeout), None, tls, server_name, headers
            )
        metrics.PROBES.labels("ok" if result[0] else "failed").inc()
        return result

    async def _tls(self, namespace: str, spec: ModelEndpointSpec) -> ssl.SSLContext | str | None:
        """The endpoint's `tls` as a context for probes, like the sidecar's upstream client: its CA
        bundle (system trust without one) and its client certificate. None without `tls`; a string
        saying why the replicas are not probed when a Secret cannot be read or loaded (probing without
        the endpoint's trust or certificate would only mark healthy replicas unhealthy)."""
        tls = spec.tls
        if tls is None or (tls.ca_bundle is None and tls.client_certificate is None):
            return None
        try:
            ca = tls.ca_bundle
            bundle = await self._kube.read_secret_key(namespace, ca.name, ca.key) if ca else None
            cert = tls.client_certificate
            chain = await self._kube.read_secret_key(namespace, cert.name, "tls.crt") if cert else None
            key = await self._kube.read_secret_key(namespace, cert.name, "tls.key") if cert else None
        except SecretForbiddenError as exc:
            log.warning("health: %s", exc)
            return f"not probed: {exc}"
        except (TransientApiError, KeyError) as exc:
            log.warning("health: TLS Secret of %s unreadable: %s", namespace, exc)
            return f"not probed: TLS Secret unreadable: {exc}"
        try:
            return pr.client_context(bundle, chain, key)
        except (ssl.SSLError, ValueError, OSError) as exc:
            # The message of a failed load names no key material.
            which = f"{namespace}/{tls.client_certificate.name}" if tls.client_certificate else namespace
            log.warning("health: TLS material of %s unusable: %s", which, exc)
            return f"not probed: TLS material unusable ({type(exc).__name__}: {exc})"

    async def _probe_replica(
        self,
        spec: ModelEndpointSpec,
        url: str,
        token: str | None,
        refusal: str | None,
        tls: ssl.SSLContext | None,
    ) -> tuple[bool, str | None] | str:
        """A probe's (ok, error), or why the replica was not probed."""
        # The operator's own pod must not be pointed at a metadata service either (SSRF via probes).
        problem = replica_url_problem(url, spec.allow_private_targets)
        if problem:
            return f"not probed: url {problem}"
        if refusal:
            return refusal
        server_name = spec.tls.server_name if spec.tls else None
        request = hl.probe_request(spec, token)  # each provider's own cheap authenticated GET
        if isinstance(request, str):
            return request
        return await self._probe(spec.health_check, url, request[0], request[1], tls, server_name)

    async def _credential(self, namespace: str, spec: ModelEndpointSpec) -> tuple[str | None, str | None]:
        """(the API key, or why probing waits instead of running without it)."""
        if spec.credentials is None:
            return None, None
        try:
            token = await self._kube.read_secret_key(namespace, spec.credentials.name, spec.credentials.key)
            return token, None
        except SecretForbiddenError as exc:
            # RBAC, not the replica: probing without the key would only mark healthy replicas unhealthy.
            log.warning("health: %s", exc)
            return None, f"not probed: {exc}"
        except (TransientApiError, KeyError) as exc:
            log.warning("health: credentials %s/%s unreadable: %s", namespace, spec.credentials.name, exc)
            return None, None

    @staticmethod
    def _differs(before: list[ReplicaStatus], after: list[ReplicaStatus]) -> bool:
        """Whether a write is worth it: probe times alone never are."""

        def essence(items: list[ReplicaStatus]) -> list[Any]:
            return [_dump(r.model_copy(update={"last_probe_time": None})) for r in items]

        return essence(before) != essence(after)


class CanaryRunner:
    """Steps every canary on its own schedule, reading traffic figures from the namespace's sidecars."""

    def __init__(self, kube: KubeApi, syncer: Syncer, now: Callable[[], datetime] | None = None):
        self._kube = kube
        self._syncer = syncer
        self._now = now or (lambda: datetime.now(UTC))
        self.canaries = ObjectCache()
        self._next: dict[Key, float] = {}
        self._busy: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self, key: Key) -> None:
        """Look at this canary on the next tick (its spec or status changed)."""
        self._next[key] = 0.0

    def forget(self, namespace: str) -> None:
        """Drop the timers of a namespace's deleted canaries (bodies follow the watch, as for health)."""
        for key in [k for k in self._next if k[0] == namespace and k not in self.canaries.bodies]:
            del self._next[key]

    def known(self) -> set[str]:
        """Namespaces this runner keeps state for."""
        return {k[0] for k in [*self.canaries.bodies, *self._next]}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for key in set(self._next) - set(self.canaries.bodies):
                del self._next[key]  # deleted canaries
            for key, body in list(self.canaries.bodies.items()):
                if key in self._busy or self._next.get(key, 0.0) > loop.time():
                    continue
                self._busy.add(key)
                spawn(self._tasks, self._step(key, body), f"canary:{key}")
            await asyncio.sleep(TICK_SECONDS)

    async def _step(self, key: Key, body: Mapping[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        try:
            requeue = await self.step_canary(key, body)
        except TransientApiError as exc:
            log.warning("canary %s/%s: API server unavailable: %s", *key, exc)
            requeue = 2.0
        except Exception:
            log.exception("canary %s/%s failed", *key)
            requeue = 5.0
        finally:
            self._busy.discard(key)
        # None: only a spec change matters; the watch pokes us then. Still look now and then.
        self._next[key] = loop.time() + (requeue if requeue is not None else 60.0)

    async def step_canary(self, key: Key, body: Mapping[str, Any]) -> float | None:
        """One controller step; writes the canary's progress fields and Events when they change."""
        if not self._accepted(body):
            return 5.0  # the reconciler reports why; wait for a valid spec
        try:
            spec = CanarySpec.model_validate(body.get("spec") or {})
            status = CanaryStatus.model_validate(body.get("status") or {})
        except ValidationError:
            return None
        stats: CanaryStats | None
        try:
            docs = await self._syncer.fetch_stats(key[0])
            stats = sum_stats(docs, spec.stable, spec.candidate) if docs else None
        except ValueError as exc:
            log.warning("canary %s/%s: stats not usable: %s", *key, exc)
            stats = None
        acknowledged = await self._acknowledged(key[0], body)
        outcome = cn.step(spec, status, self._now(), stats, status.step_baseline, acknowledged)
        if outcome.changed:
            new = outcome.status.model_copy(update={"step_baseline": outcome.baseline})
            patch = self._progress_patch(new)
            await self._kube.patch_status(Canary, key[0], key[1], patch)
            for event in outcome.events:
                metrics.CANARY_STEPS.labels(event.reason).inc()
                log.info("canary %s/%s: %s: %s", *key, event.reason, event.message)
                await self._kube.record_event(body, event.reason, event.message, warning=event.warning)
        return outcome.requeue_after

    async def _acknowledged(self, namespace: str, body: Mapping[str, Any]) -> int | None:
        """The canary's weight that every sidecar runs, read from what the API stores (the live
        ConfigMap and the target policy's sync figure, which the syncer writes per live version), so
        it holds across an operator restart and never counts a push that was not acknowledged."""
        live = await self._kube.read_live_config(namespace)
        if live is None:
            return None
        target = ((body.get("spec") or {}).get("target") or {}).get("policy")
        policies = (await self._kube.list_objects(namespace)).policies
        policy = next((p for p in policies if (p.get("metadata") or {}).get("name") == target), None)
        try:
            config = RouterConfig.model_validate_json(live.config_json)
        except ValidationError:
            return None
        return st.acknowledged_weight(body, config, policy)

    @staticmethod
    def _accepted(body: Mapping[str, Any]) -> bool:
        conditions = (body.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Accepted" and c.get("status") == "True" for c in conditions)

    @staticmethod
    def _progress_patch(status: CanaryStatus) -> dict[str, Any]:
        """The controller's fields (conditions and observedGeneration are the reconciler's)."""
        # Merge patch: None removes a field, so cleared fields really go away.
        dumped: dict[str, Any] = status.model_dump(
            mode="json", by_alias=True, exclude={"conditions", "observed_generation"}
        )
        return dumped
