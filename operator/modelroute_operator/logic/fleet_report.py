"""What a RoutingPolicy with fleet limits says about them: the `FleetStore` condition, the spend per
tenant, and the Events of transitions, from the sidecars' `/stats` (pure; `runtime.fleet_watch` reads
the stats and writes the status).

The sidecars know the fleet's totals (each reads them from the store every sync), so the highest figure
any sidecar reports for a budget is the freshest; the operator never talks to the store itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelroute_contract import PolicyConfig
from modelroute_contract.stats import BudgetFigures, StatsSnapshot

from .status import ConditionState

SPEND_LISTED = 100
"""Budgets listed in a policy's `status.spend` (highest spend first)."""


@dataclass(frozen=True)
class FleetEvent:
    reason: str
    message: str
    warning: bool = True


@dataclass(frozen=True)
class FleetReport:
    condition: ConditionState
    spend: list[dict[str, Any]]
    events: list[FleetEvent] = field(default_factory=list)


def budget_state(spent: float, soft: float | None, hard: float) -> str:
    """`Exhausted` at the hard stop, `Soft` past the soft threshold, else `Ok`."""
    if spent >= hard:
        return "Exhausted"
    if soft is not None and spent >= soft:
        return "Soft"
    return "Ok"


def store_condition(policy: PolicyConfig, snapshots: Sequence[StatsSnapshot]) -> ConditionState:
    """`FleetStore`: whether every sidecar that reported reaches the fleet store."""
    limits = policy.fleet_limits
    assert limits is not None
    seen = [s for s in snapshots if s.fleet is not None]
    unconfigured = [s.pod for s in seen if s.fleet is not None and s.fleet.store == "unconfigured"]
    down = [s.pod for s in seen if s.fleet is not None and s.fleet.store == "down"]
    mode = (
        "fail-open: those sidecars admit under per-process limits and write the counts when it returns"
        if limits.fail_mode == "open"
        else "fail-closed: those sidecars refuse this policy's limited requests with 503"
    )
    if unconfigured:
        pods = ", ".join(sorted(unconfigured)[:5])
        return ConditionState(
            "FleetStore",
            "False",
            "Unconfigured",
            f"{len(unconfigured)} of {len(snapshots)} sidecars have no fleet store configured ({pods}; "
            f"set the chart's fleetStore); {mode}",
        )
    if down:
        pods = ", ".join(sorted(down)[:5])
        return ConditionState(
            "FleetStore",
            "False",
            "Unreachable",
            f"{len(down)} of {len(snapshots)} sidecars cannot reach the fleet store ({pods}); {mode}",
        )
    if not seen:
        return ConditionState(
            "FleetStore", "Unknown", "NoTraffic", "no sidecar has served a request under fleet limits yet"
        )
    return ConditionState(
        "FleetStore", "True", "Reachable", f"{len(seen)} of {len(snapshots)} sidecars reach the fleet store"
    )


def merged_budgets(policy: str, snapshots: Iterable[StatsSnapshot]) -> list[BudgetFigures]:
    """The policy's budgets of the current periods, the highest figure of each, highest spend first."""
    best: dict[tuple[str, str, str], BudgetFigures] = {}
    for snapshot in snapshots:
        for budget in snapshot.fleet.budgets if snapshot.fleet is not None else ():
            if budget.policy != policy:
                continue
            key = (budget.tenant, budget.period, budget.window)
            if key not in best or budget.spent_usd > best[key].spent_usd:
                best[key] = budget
    # only the newest window of each (tenant, period): a sidecar may still report yesterday
    newest: dict[tuple[str, str], BudgetFigures] = {}
    for budget in best.values():
        pair = (budget.tenant, budget.period)
        if pair not in newest or budget.window > newest[pair].window:
            newest[pair] = budget
    return sorted(newest.values(), key=lambda b: (-b.spent_usd, b.tenant, b.period))[:SPEND_LISTED]


def fleet_report(
    policy: PolicyConfig, snapshots: Sequence[StatsSnapshot], previous: Sequence[Mapping[str, Any]]
) -> FleetReport:
    """The policy's fleet status from its sidecars' stats; Events for budgets that crossed a threshold
    since `previous` (the `status.spend` written last time) and for the store becoming unreachable."""
    condition = store_condition(policy, snapshots)
    before = {(str(s.get("tenant", "")), str(s.get("period")), str(s.get("window"))): s for s in previous}
    spend, events = [], []
    for budget in merged_budgets(policy.name, snapshots):
        state = budget_state(budget.spent_usd, budget.soft_usd, budget.hard_usd)
        spend.append(
            {
                "tenant": budget.tenant,
                "period": budget.period,
                "window": budget.window,
                "spentUsd": round(budget.spent_usd, 4),
                "softUsd": budget.soft_usd,
                "hardUsd": budget.hard_usd,
                "state": state,
            }
        )
        old_state = before.get((budget.tenant, budget.period, budget.window), {}).get("state", "Ok")
        if state != old_state and state != "Ok":
            who = f"tenant {budget.tenant!r}" if budget.tenant else "the policy (all tenants)"
            period = "daily" if budget.period == "day" else "monthly"
            if state == "Soft":
                events.append(
                    FleetEvent(
                        "BudgetSoftLimit",
                        f"{who} passed the soft threshold of its {period} budget: {budget.spent_usd:.2f} of "
                        f"{budget.hard_usd:.2f} USD in {budget.window}",
                    )
                )
            else:
                events.append(
                    FleetEvent(
                        "BudgetExhausted",
                        f"{who} spent its {period} budget ({budget.spent_usd:.2f} of {budget.hard_usd:.2f} "
                        f"USD in {budget.window}): its requests get 429 budget_exceeded until it renews",
                    )
                )
    return FleetReport(condition, spend, events)


def spend_rows(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`modelroute spend`: one row per budget of every RoutingPolicy's `status.spend`."""
    rows = []
    for body in objects:
        if body.get("kind") != "RoutingPolicy":
            continue
        metadata = body.get("metadata") or {}
        for item in (body.get("status") or {}).get("spend") or []:
            rows.append(
                {
                    "namespace": metadata.get("namespace", ""),
                    "policy": metadata.get("name", ""),
                    **{
                        k: item.get(k)
                        for k in ("tenant", "period", "window", "spentUsd", "softUsd", "hardUsd")
                    },
                    "state": item.get("state", "Ok"),
                }
            )
    return sorted(rows, key=lambda r: (r["namespace"], r["policy"], -(r["spentUsd"] or 0), str(r["tenant"])))


def format_spend(rows: Sequence[Mapping[str, Any]]) -> str:
    """The spend table."""
    if not rows:
        return "no budgets reported (no RoutingPolicy with fleetLimits budgets has served traffic)"
    header = ("NAMESPACE", "POLICY", "TENANT", "PERIOD", "WINDOW", "SPENT USD", "SOFT", "HARD", "STATE")
    table = [header] + [
        (
            str(r["namespace"]),
            str(r["policy"]),
            str(r["tenant"]) or "(policy)",
            str(r["period"]),
            str(r["window"]),
            f"{float(r['spentUsd'] or 0):.4f}",
            "-" if r["softUsd"] is None else f"{float(r['softUsd']):.2f}",
            f"{float(r['hardUsd'] or 0):.2f}",
            str(r["state"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table
    )
