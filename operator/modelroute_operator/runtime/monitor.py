"""The operator's clocks: active health probes of every replica and the canary controller's steps.

Both work from the latest bodies the watch delivered (the inventory's caches), each object on a timer
of its own (set when its body changes and after each probe or step; nothing scans every object on a
tick, so 10,000 endpoints without health checks cost nothing), decide with the pure
`health.observe` and `canary.step`, and write only the status fields they own: the health monitor owns
`ModelEndpoint.status.replicas`, the canary runner owns a Canary's progress fields. A write changes
status, the watch delivers it, the reconciler recompiles: an unhealthy replica or a new canary weight
reaches the sidecars through the normal path. State needed to continue lives in status, so a restart
resumes; probe times alone stay in memory (a restart probes at once, which is harmless).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import ValidationError

from modelroute_contract import replica_url_problem
from modelroute_operator.clients import metrics
from modelroute_operator.clients import probe as pr
from modelroute_operator.clients.inventory import Inventory
from modelroute_operator.clients.kube import KubeApi, SecretForbiddenError, TransientApiError
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.logic import canary as cn
from modelroute_operator.logic import health as hl
from modelroute_operator.logic import status as st
from modelroute_operator.logic.cache import Key, ObjectCache, key_of
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

MAX_CONCURRENT_PROBES = 64


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def spawn(tasks: set[asyncio.Task[None]], coro: Any, name: str) -> None:
    """Start a task and hold a reference until it ends (the loop keeps only weak ones)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(report_failure)


def report_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback of a background task: an exception that ends it is logged at once, not lost with
    the task (nothing awaits these tasks but the cleanup that cancels them)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


class Timers:
    """One timer per key on the running loop; setting a key's timer replaces the one it had."""

    def __init__(self) -> None:
        self._handles: dict[Key, asyncio.TimerHandle] = {}

    def start(self, key: Key, delay: float, callback: Callable[[Key], None]) -> None:
        self.cancel(key)
        self._handles[key] = asyncio.get_running_loop().call_later(max(0.0, delay), self._fire, key, callback)

    def cancel(self, key: Key) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def held(self) -> set[Key]:
        return set(self._handles)

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _fire(self, key: Key, callback: Callable[[Key], None]) -> None:
        self._handles.pop(key, None)
        callback(key)


async def stop_all(timers: Timers, tasks: set[asyncio.Task[None]]) -> None:
    """No timer fires again, and running probes or steps end (shutdown: before the sessions close, so
    no probe fails on a closed session and writes that as the replica's error)."""
    timers.cancel_all()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class HealthMonitor:
    """Probes every replica per its endpoint's health check; writes `status.replicas` when it changes."""

    def __init__(
        self,
        kube: KubeApi,
        session: aiohttp.ClientSession,
        endpoints: ObjectCache | None = None,
        now: Callable[[], datetime] | None = None,
    ):
        self._kube = kube
        self._session = session
        self._now = now or (lambda: datetime.now(UTC))
        self.endpoints = endpoints if endpoints is not None else ObjectCache()
        self._specs: dict[Key, tuple[str, ModelEndpointSpec | None]] = {}
        """Parsed spec per endpoint, keyed by the uid and generation it was parsed from."""
        self._last_probe: dict[tuple[str, str, str], datetime] = {}
        self._busy: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers = Timers()
        self._closed = False
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

    def poke(self, key: Key) -> None:
        """The endpoint's body changed (or it went): set its timer to its next due probe."""
        body = self.endpoints.get(key)
        if body is None:
            self._timers.cancel(key)
            self._drop(key)
            return
        if key in self._busy:
            return  # the running check sets the timer when it ends
        spec = self._spec(key, body)
        if spec is None:
            self._timers.cancel(key)
            return
        now = self._now()
        if not spec.replicas:
            self._timers.cancel(key)
            return
        wait = min(self._wait(key, r.name, spec.health_check, now) for r in spec.replicas)
        self._timers.start(key, wait, self._start)

    async def close(self) -> None:
        self._closed = True
        await stop_all(self._timers, self._tasks)

    def _start(self, key: Key) -> None:
        body = self.endpoints.get(key)
        if body is None or key in self._busy or self._closed:
            return
        self._busy.add(key)
        spawn(self._tasks, self._check(key, body), f"health:{key}")

    def _drop(self, key: Key) -> None:
        self._specs.pop(key, None)
        for probe in [p for p in self._last_probe if (p[0], p[1]) == key]:
            del self._last_probe[probe]

    def forget(self, namespace: str) -> None:
        """Drop what is kept about a namespace's deleted endpoints. The bodies themselves follow the watch
        (a DELETED event removes one), so an object created meanwhile is never lost."""
        live = self.endpoints.bodies
        for key in {k for k in [*self._specs, *self._timers.held()] if k[0] == namespace and k not in live}:
            self._timers.cancel(key)
            self._drop(key)
        for probe in [p for p in self._last_probe if p[0] == namespace and (p[0], p[1]) not in live]:
            del self._last_probe[probe]

    def known(self) -> set[str]:
        """Namespaces this monitor keeps state for (beyond the shared cache of bodies)."""
        return {k[0] for k in [*self._specs, *self._last_probe, *self._timers.held()]}

    def _spec(self, key: Key, body: Mapping[str, Any]) -> ModelEndpointSpec | None:
        """The endpoint's spec when probing is enabled, parsed once per generation (status writes, ours
        included, change the resourceVersion, not the spec)."""
        meta = body.get("metadata") or {}
        # without a generation (tests' bodies), any change may be a spec change
        changes = meta.get("generation") or f"rv{meta.get('resourceVersion')}"
        version = f"{meta.get('uid')}/{changes}"
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
            self.poke(key)  # the next due probe (the body may have changed meanwhile)

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
        stored = await self._kube.patch_status(
            ModelEndpoint, key[0], key[1], {"replicas": [_dump(r) for r in replicas]}
        )
        if stored is not None:
            self.endpoints.put(stored)
        for t in transitions:
            log.info("health %s/%s: %s", *key, t.message)
            await self._kube.record_event(body, t.reason, t.message, warning=t.warning)

    def _due(self, key: Key, replica: str, check: HealthCheck, now: datetime) -> bool:
        return self._wait(key, replica, check, now) <= 0

    def _wait(self, key: Key, replica: str, check: HealthCheck, now: datetime) -> float:
        """Seconds until the replica's next probe is due (0 or less: due now)."""
        last = self._last_probe.get((*key, replica))
        if last is None:
            return 0.0  # never probed by this process: resume at once from what status says
        return seconds(check.interval) - (now - last).total_seconds()

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

    def __init__(
        self,
        kube: KubeApi,
        syncer: Syncer,
        inventory: Inventory | None = None,
        now: Callable[[], datetime] | None = None,
    ):
        self._kube = kube
        self._syncer = syncer
        self._inventory = inventory if inventory is not None else Inventory()
        self._now = now or (lambda: datetime.now(UTC))
        self.canaries = self._inventory.canaries
        self._timers = Timers()
        self._busy: set[Key] = set()
        self._again: set[Key] = set()
        """Canaries whose body changed during their step: they step again at once."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def poke(self, key: Key) -> None:
        """Look at this canary now (its spec or status changed, or it went)."""
        if key not in self.canaries.bodies:
            self._timers.cancel(key)
            self._again.discard(key)
        elif key in self._busy:
            self._again.add(key)
        else:
            self._timers.start(key, 0.0, self._start)

    def poke_namespace(self, namespace: str) -> None:
        """Look at the namespace's canaries now (the sidecars' sync figure moved)."""
        for body in self.canaries.in_namespace(namespace):
            self.poke(key_of(body))

    def forget(self, namespace: str) -> None:
        """Drop the timers of a namespace's deleted canaries (bodies follow the watch, as for health)."""
        for key in [k for k in self._timers.held() if k[0] == namespace and k not in self.canaries.bodies]:
            self._timers.cancel(key)
        self._again = {k for k in self._again if k in self.canaries.bodies}

    def known(self) -> set[str]:
        """Namespaces this runner keeps state for (beyond the shared cache of bodies)."""
        return {k[0] for k in [*self._timers.held(), *self._again]}

    async def close(self) -> None:
        self._closed = True
        await stop_all(self._timers, self._tasks)

    def _start(self, key: Key) -> None:
        body = self.canaries.get(key)
        if body is None or key in self._busy or self._closed:
            return
        self._busy.add(key)
        spawn(self._tasks, self._step(key, body), f"canary:{key}")

    async def _step(self, key: Key, body: Mapping[str, Any]) -> None:
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
        if key not in self.canaries.bodies:
            self._again.discard(key)
            return
        if key in self._again:
            self._again.discard(key)
            requeue = 0.0
        # None: only a spec change matters; the watch pokes us then. Still look now and then.
        self._timers.start(key, requeue if requeue is not None else 60.0, self._start)

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
            mirror_of = (spec.target.policy, spec.target.rule) if spec.mirror else None
            stats = sum_stats(docs, spec.stable, spec.candidate, mirror_of) if docs else None
        except ValueError as exc:
            log.warning("canary %s/%s: stats not usable: %s", *key, exc)
            stats = None
        acknowledged = await self._acknowledged(key[0], body)
        outcome = cn.step(spec, status, self._now(), stats, status.step_baseline, acknowledged)
        if outcome.changed:
            new = outcome.status.model_copy(update={"step_baseline": outcome.baseline})
            patch = self._progress_patch(new)
            stored = await self._kube.patch_status(Canary, key[0], key[1], patch)
            if stored is not None:
                self.canaries.put(stored)
            for event in outcome.events:
                metrics.CANARY_STEPS.labels(event.reason).inc()
                log.info("canary %s/%s: %s: %s", *key, event.reason, event.message)
                await self._kube.record_event(body, event.reason, event.message, warning=event.warning)
        return outcome.requeue_after

    async def _acknowledged(self, namespace: str, body: Mapping[str, Any]) -> int | None:
        """The canary's weight that every sidecar runs, read from what the API stores (the live
        ConfigMap and the target policy's sync figure, which the syncer writes per live version), so
        it holds across an operator restart and never counts a push that was not acknowledged."""
        config = self._syncer.live_model(namespace)
        if config is None:
            return None
        target = ((body.get("spec") or {}).get("target") or {}).get("policy")
        policy = self._inventory.policies.get((namespace, str(target)))
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
