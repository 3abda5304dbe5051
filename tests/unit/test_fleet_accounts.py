"""The fleet accounts' edge (sidecar `fleetstore`) against a scripted store client: background refills are
held and their failures logged and counted, and metrics carry no tenant label however many tenants come."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from modelroute_contract import FleetLimits, PolicyConfig, RuleConfig, Target
from modelroute_sidecar.fleet import Ticket
from modelroute_sidecar.fleetstore import FleetAccounts, StoreSettings
from modelroute_sidecar.metrics import Metrics
from modelroute_sidecar.proxy import Exchange


class ScriptedStore:
    """What `StoreClient` offers, answering from memory; `grant` raises a bug's exception once told to."""

    def __init__(self) -> None:
        self.broken = False
        self.spend: dict[str, dict[str, float]] = {}

    async def ping(self) -> None:
        return None

    async def grant(self, key: str, args: list[Any]) -> tuple[int, int]:
        if self.broken:
            raise ValueError("a bug in the grant path")
        return int(args[0]), int(args[1])

    async def sync(self, grants: list[Any], spends: list[tuple[str, list[Any]]]) -> list[Any]:
        answers: list[Any] = [[0, 0] for _ in grants]
        for key, (field, own, _ttl) in spends:
            fields = self.spend.setdefault(key, {})
            if float(own) > 0:
                fields[field] = float(own)
            answers.append([str(sum(fields.values())), str(fields.get(field, 0.0))])  # as SPEND_SCRIPT
        return answers

    async def close(self) -> None:
        return None


def policy(fleet: dict[str, object]) -> PolicyConfig:
    return PolicyConfig(
        name="chat",
        virtual_models=("auto",),
        rules=(RuleConfig(name="all", targets=(Target(endpoint="e", weight=1),)),),
        fleet_limits=FleetLimits.model_validate(fleet),
    )


def accounts(store: ScriptedStore) -> FleetAccounts:
    fleet = FleetAccounts(
        StoreSettings(url="redis://127.0.0.1:9/0", sync_seconds=60), Metrics(), namespace="ns", worker="w"
    )
    fleet.client = store  # type: ignore[assignment]
    return fleet


async def until(check: Any, what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_failed_background_refill_is_held_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ScriptedStore()
    fleet = accounts(store)
    p = policy({"tenants": [{"requestsPerMinute": 160}]})  # a chunk of 10
    try:
        exchange = Exchange("r", "chat")
        await fleet.admit(p, "acme", "", 0, exchange)  # the first grant, awaited
        assert isinstance(exchange.fleet, Ticket)
        store.broken = True
        with caplog.at_level(logging.ERROR, logger="modelroute_sidecar.fleetstore"):
            for _ in range(6):  # the lease runs low: a refill goes in the background
                await fleet.admit(p, "acme", "", 0, Exchange("r", "chat"))
            assert fleet._refills, "the refill task is referenced while it runs"
            await until(lambda: fleet.task_failures == 1, "the refill's failure to be counted")
        assert not fleet._refills
        assert "a fleet lease refill failed" in caplog.text and "a bug in the grant path" in caplog.text
        assert fleet.metrics.fleet_store_errors.value() == 1
        [lease] = fleet.ledger.leases.values()
        assert lease.refilling is False, "a later refill may try again"
    finally:
        await fleet.close()


async def test_many_tenants_add_no_metric_series_and_stats_stay_bounded() -> None:
    store = ScriptedStore()
    fleet = accounts(store)
    p = policy({"tenants": [{"daily": {"hardUsd": 100.0}}], "policy": {"daily": {"hardUsd": 1000.0}}})
    try:
        for i in range(300):
            exchange = Exchange("r", "chat")
            await fleet.admit(p, f"tenant-{i}", "", 0, exchange)
            exchange.cost_usd = 0.01 * (i + 1)
            fleet.settle(exchange)
        await fleet.sync_once()
        text = fleet.metrics.render().decode()
    finally:
        await fleet.close()
    series = [line for line in text.splitlines() if line.startswith("modelroute_fleet_spend_usd{")]
    assert len(series) == 2 and not any("tenant=" in line for line in series), series
    assert 'subject="tenant-max"' in text and 'subject="policy"' in text
    assert fleet.metrics.fleet_tenants.values == {("chat",): 300.0}
    figures = fleet.figures()
    assert figures is not None and len(figures.budgets) == 100  # per-tenant figures: /stats, top 100
    assert figures.budgets[0].tenant == "" and figures.budgets[1].tenant == "tenant-299"
    # every tenant's spend reached the store, in this process's field of its own subject
    assert len([k for k in store.spend if "/t/tenant-" in k]) == 300
