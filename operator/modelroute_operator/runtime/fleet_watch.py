"""The fleet watch: every few seconds, for each namespace whose live config has fleet limits, read the
sidecars' `/stats` and write each such RoutingPolicy's `FleetStore` condition and `status.spend`, with
Warning Events when a budget passes its soft threshold or is spent and when the store becomes
unreachable (`logic.fleet_report` decides; this loop only reads and writes)."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime

from modelroute_operator.clients.kube import KubeApi
from modelroute_operator.clients.sync import Syncer
from modelroute_operator.logic import status as st
from modelroute_operator.logic.fleet_report import fleet_report
from modelroute_operator.logic.resources import RoutingPolicy

log = logging.getLogger(__name__)

WATCH_SECONDS = 10.0
"""How often budgets and the store's reachability are reported (spend moves continuously: status is
written only when a figure or a state changed, rounded to 1/10,000 USD)."""


def fleet_watch_seconds() -> float:
    """The watch's interval: `MODELROUTE_FLEET_WATCH_SECONDS` (tests shorten it), else `WATCH_SECONDS`."""
    return float(os.environ.get("MODELROUTE_FLEET_WATCH_SECONDS") or WATCH_SECONDS)


class FleetWatch:
    """Reports fleet limits on the policies that have them."""

    def __init__(self, kube: KubeApi, syncer: Syncer, interval: float = WATCH_SECONDS) -> None:
        self._kube = kube
        self._syncer = syncer
        self._interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for namespace in sorted(self._syncer.known()):
                try:
                    await self.report(namespace)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one namespace's trouble must not stop the others
                    log.warning("fleet report of %s failed: %s", namespace, exc or type(exc).__name__)

    async def report(self, namespace: str) -> int:
        """Write the fleet status of the namespace's policies with fleet limits; the writes made."""
        # From the watch-fed inventory, parsed once per version: this runs for every namespace every
        # few seconds, and an API read and a parse each time were 1,000 of both per round.
        config = self._syncer.live_model(namespace)
        if config is None:
            return 0
        limited = {p.name: p for p in config.policies if p.fleet_limits is not None}
        if not limited:
            return 0
        snapshots = await self._syncer.fetch_stats(namespace)
        writes = 0
        for body in self._syncer.inventory.policies.in_namespace(namespace):
            name = body["metadata"]["name"]
            policy = limited.get(name)
            if policy is None:
                continue
            current = body.get("status") or {}
            result = fleet_report(policy, snapshots, current.get("spend") or [])
            before = {c.get("type"): c for c in current.get("conditions") or []}.get("FleetStore") or {}
            generation = int(body["metadata"].get("generation") or 0)
            conditions = st.merge_conditions(
                current.get("conditions") or [], [result.condition], generation, datetime.now(UTC)
            )
            patch = st.status_patch(current, {"conditions": conditions, "spend": result.spend})
            if patch:
                stored = await self._kube.patch_status(RoutingPolicy, namespace, name, patch)
                if stored is not None:
                    self._syncer.inventory.policies.put(stored)
                writes += 1
            if result.condition.status == "False" and before.get("status") != "False":
                await self._kube.record_event(body, "FleetStoreUnreachable", result.condition.message, True)
            for event in result.events:
                await self._kube.record_event(body, event.reason, event.message, event.warning)
        return writes
