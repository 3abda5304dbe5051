"""Namespace reconciliation: gather → compile → store → report, coalesced per namespace.

Any change to one of our objects schedules its namespace. A pass reads the namespace from the watch-fed
inventory (no API reads), and puts its own writes back there as the API answered them. Bursts (a
`kubectl apply -f dir/`) collapse into one pass, and a pass that changes nothing writes nothing: the
ConfigMap is applied only when the compiled version or its sources differ, and status only where a
field differs. A namespace with any invalid object keeps its last good config; the invalid object
says why on its status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelroute_contract import RouterConfig, short_version
from modelroute_contract.constants import CONFIGMAP_NAME
from modelroute_operator.clients import metrics
from modelroute_operator.clients.inventory import Inventory
from modelroute_operator.clients.kube import KubeApi, LiveConfig, RawObjects
from modelroute_operator.clients.namespace_queue import NamespaceQueue
from modelroute_operator.logic import status as st
from modelroute_operator.logic.compiler import (
    CompileResult,
    NamespaceObjects,
    ObjectInvalid,
    PreviousConfig,
    compile_namespace,
    parse_object,
)
from modelroute_operator.logic.learned import referenced_config_maps
from modelroute_operator.logic.resources import KIND_BY_NAME, Canary, ModelEndpoint, Resource, RoutingPolicy

log = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 0.05
"""Collects the events of one `kubectl apply` of several objects into one pass."""
MAX_CONCURRENT_PASSES = 32
"""Passes in flight at once. They wait on the API server's answers, so more do not finish sooner; each
holds its namespace's parsed objects and compiled config, so 1,000 at once (a start) held hundreds of
MiB. A bounded number also finishes namespaces one by one instead of all of them at the end."""


@dataclass
class PassReport:
    """What one reconcile pass did; the operator logs it and tests assert on it."""

    namespace: str
    version: str = ""
    config_written: bool = False
    config_deleted: bool = False
    status_writes: int = 0
    errors: list[str] = field(default_factory=list)
    empty: bool = False
    """The namespace has none of our objects left."""


def stored_config(live: LiveConfig | None) -> RouterConfig | None:
    """The stored config as a model, or None when there is none or it is not one this operator reads
    (a document of a development build; the pass compiles and stores a new one, keeping the sequence)."""
    if live is None:
        return None
    try:
        return RouterConfig.model_validate_json(live.config_json)
    except ValueError as exc:
        log.warning("stored config %s is not readable, it will be replaced: %s", live.version, exc)
        return None


def _parse_all(raw: RawObjects) -> tuple[NamespaceObjects, dict[str, list[str]]]:
    """Parse every object; objects that do not parse are left out and reported by key."""
    parsed: dict[type[Resource], list[Any]] = {ModelEndpoint: [], RoutingPolicy: [], Canary: []}
    invalid: dict[str, list[str]] = {}
    namespace = ""
    for body in raw.all():
        namespace = body.get("metadata", {}).get("namespace", namespace)
        try:
            obj = parse_object(body)
        except ObjectInvalid as exc:
            key = st.object_key(str(body.get("kind")), str(body.get("metadata", {}).get("name")))
            invalid[key] = [f"{error.field}: {error.message}" for error in exc.errors]
            continue
        parsed[type(obj)].append(obj)
    objects = NamespaceObjects(
        namespace, parsed[ModelEndpoint], parsed[RoutingPolicy], parsed[Canary], raw.config_maps
    )
    return objects, invalid


def _errors_by_object(result: CompileResult, invalid: Mapping[str, list[str]]) -> dict[str, list[str]]:
    by_key: dict[str, list[str]] = {key: list(lines) for key, lines in invalid.items()}
    for error in result.errors:
        by_key.setdefault(st.object_key(error.kind, error.name), []).append(f"{error.field}: {error.message}")
    return by_key


def _sources(raw: RawObjects) -> dict[str, int]:
    return {
        st.object_key(body["kind"], body["metadata"]["name"]): int(body["metadata"].get("generation") or 0)
        for body in raw.all()
    }


def previous_config(live: LiveConfig | None) -> PreviousConfig:
    """Where the namespace's next config stands in order: after the stored one, or, when none is
    stored, after the wall clock in milliseconds. The stored ConfigMap is the state (in the API, so it
    survives restarts and leader changes); the clock floor covers a namespace emptied (its ConfigMap
    deleted) and filled again, whose sidecars still run the old config and would refuse a restart at 1."""
    if live is not None:
        return PreviousConfig(sequence=live.sequence, version=live.version)
    return PreviousConfig(sequence=int(time.time() * 1000), version="")


class Reconciler:
    """Reconciles namespaces on demand; one pass at a time per namespace, the latest request wins."""

    def __init__(
        self,
        kube: KubeApi,
        inventory: Inventory,
        on_config: Callable[[str, RouterConfig], Awaitable[None]] | None = None,
        on_empty: Callable[[str], None] | None = None,
        sidecar_ports: Sequence[int] = (),
    ):
        self._kube = kube
        self._inventory = inventory
        self._sidecar_ports = tuple(sidecar_ports)
        """Ports the injected sidecars listen on (from the injection settings), refused as replica
        URLs on loopback like the contract's defaults."""
        self._on_config = on_config
        self._on_empty = on_empty
        """Told when a namespace has no objects left, so every part drops what it keeps about it."""
        self._announced: set[str] = set()
        """Namespaces whose live config was handed to `on_config` since this process started."""
        self._queue = NamespaceQueue("reconcile", self._pass, DEBOUNCE_SECONDS)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PASSES)
        self.last_reports: dict[str, PassReport] = {}

    def schedule(self, namespace: str) -> None:
        """Ask for a pass over `namespace`; returns at once."""
        self._queue.schedule(namespace)

    async def close(self) -> None:
        """Cancel running passes (operator shutdown)."""
        await self._queue.close()

    async def _pass(self, namespace: str) -> bool:
        async with self._slots:
            return await self._bounded_pass(namespace)

    async def _bounded_pass(self, namespace: str) -> bool:
        started = time.perf_counter()
        try:
            report = await self.reconcile(namespace)
        except Exception:
            metrics.RECONCILE_PASSES.labels("error").inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        metrics.RECONCILE_PASSES.labels("invalid" if report.errors else "ok").inc()
        for key in {error.split(" ", 1)[0] for error in report.errors}:
            metrics.RECONCILE_ERRORS.labels(metrics.kind_of(key)).inc()
        if report.empty:
            self.last_reports.pop(namespace, None)
            self._announced.discard(namespace)
            if self._on_empty is not None:
                self._on_empty(namespace)
        else:
            self.last_reports[namespace] = report
        # One line per pass: operators read it, and tests wait on it instead of sleeping.
        log.info(
            "pass %s: version=%s config_written=%s config_deleted=%s status_writes=%d errors=%d",
            namespace,
            short_version(report.version) or "-",
            report.config_written,
            report.config_deleted,
            report.status_writes,
            len(report.errors),
        )
        return False

    async def reconcile(self, namespace: str) -> PassReport:
        """One full pass: gather, compile, store the config if it changed, write status where it differs."""
        report = PassReport(namespace)
        raw = self._inventory.objects(namespace)
        named = referenced_config_maps(raw.policies)
        if named:
            # Difficulty model heads are read by name when a policy names one (never listed or watched:
            # RBAC grants only the names the chart lists).
            heads = await self._kube.read_config_maps(namespace, named)
            raw = RawObjects(raw.endpoints, raw.policies, raw.canaries, heads)
        live = self._inventory.live_config(namespace)
        if not raw.all():
            report.empty = True
            report.config_deleted = await self._kube.delete_config(namespace)
            gone = {"metadata": {"namespace": namespace, "name": CONFIGMAP_NAME}}
            self._inventory.configs.observe(gone, deleted=True)
            return report
        objects, invalid = _parse_all(raw)
        result = compile_namespace(objects, previous_config(live), self._sidecar_ports)
        errors = _errors_by_object(result, invalid)
        report.errors = [f"{key} {line}" for key, lines in sorted(errors.items()) for line in lines]
        live_config = stored_config(live)
        if result.config is not None and not errors:
            sources = _sources(raw)
            if live is None or live.version != result.config.version or dict(live.sources) != sources:
                stored = await self._kube.apply_config(namespace, result.config, sources)
                # its watch event is no news: the pass that wrote it has announced it
                self._inventory.configs.put(stored, create=True, compare_before=False)
                report.config_written = True
            live = LiveConfig(result.config.to_json(), result.config.version, sources, result.config.sequence)
            live_config = result.config
        report.version = live.version if live else ""
        # Status first: it clears sync figures that count an older version, and the push announced next
        # counts the sidecars again on top of that (never the other way round).
        report.status_writes = await self._report(raw, errors, live, live_config)
        # Announce a new version, and every namespace once after a restart (its sidecars may lag).
        announce = report.config_written or namespace not in self._announced
        if live_config is not None and self._on_config is not None and announce:
            self._announced.add(namespace)
            await self._on_config(namespace, live_config)
        return report

    async def _report(
        self,
        raw: RawObjects,
        errors: Mapping[str, list[str]],
        live: LiveConfig | None,
        live_config: RouterConfig | None,
    ) -> int:
        now = datetime.now(UTC)
        blocking = sorted(errors)
        writes = 0
        for body in raw.all():
            kind = KIND_BY_NAME[body["kind"]]
            meta = body["metadata"]
            key = st.object_key(kind.kind_name, meta["name"])
            verdict = st.Verdict(
                key=key,
                generation=int(meta.get("generation") or 0),
                own_errors=errors.get(key, []),
                live_generation=live.sources.get(key) if live else None,
                blocking=[b for b in blocking if b != key],
                live_version=live.version if live else "",
            )
            if kind is ModelEndpoint:
                desired = st.endpoint_status(body, verdict, now)
            elif kind is RoutingPolicy:
                desired = st.policy_status(body, verdict, live_config, now)
            else:
                target = (body.get("spec") or {}).get("target") or {}
                policy = next(
                    (p for p in raw.policies if p["metadata"]["name"] == target.get("policy")), None
                )
                desired = st.canary_status(body, verdict, now, live_config, policy)
            current = body.get("status") or {}
            patch = st.status_patch(current, desired)
            if not patch:
                continue
            stored = await self._kube.patch_status(kind, meta["namespace"], meta["name"], patch)
            if stored is not None:
                self._inventory.of(kind).put(stored)
            metrics.STATUS_WRITES.labels(kind.kind_name).inc()
            writes += 1
            transition = st.ready_transition(current, {**current, **patch})
            if transition is not None:
                await self._kube.record_event(
                    body,
                    str(transition["reason"]),
                    str(transition["message"]),
                    transition["status"] != "True",
                )
        return writes
