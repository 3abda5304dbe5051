"""The fleet accounting core (sidecar `fleet`) and the operator's fleet report, table by table: no store,
no clock but the one passed in."""

from __future__ import annotations

import calendar

import pytest

from modelroute_contract import FleetLimits, PolicyConfig, RuleConfig, Target
from modelroute_contract.stats import BudgetFigures, FleetFigures, StatsSnapshot
from modelroute_operator.logic.fleet_report import budget_state, fleet_report, format_spend, spend_rows
from modelroute_sidecar import fleet
from modelroute_sidecar.fleet import (
    ACTIVE_SECONDS,
    EVICTION_STEPS,
    GrantNeed,
    Ledger,
    Meter,
    Refusal,
    SpendRead,
    Ticket,
    chunk_of,
    meters_of,
    period_window,
    seconds_left,
    subject_key,
)

NOW = calendar.timegm((2026, 12, 2, 10, 0, 5, 0, 0, 0))


def policy(fleet: dict[str, object]) -> PolicyConfig:
    return PolicyConfig(
        name="chat",
        virtual_models=("auto",),
        rules=(RuleConfig(name="all", targets=(Target(endpoint="e", weight=1),)),),
        fleet_limits=FleetLimits.model_validate(fleet),
    )


def test_windows_and_periods() -> None:
    assert period_window("day", NOW) == "2026-12-02"
    assert period_window("month", NOW) == "2026-12"
    assert seconds_left("day", NOW) == 14 * 3600 - 5
    assert seconds_left("month", NOW) == calendar.timegm((2027, 1, 1, 0, 0, 0, 0, 0, 0)) - NOW
    assert [chunk_of(n) for n in (1, 15, 16, 100, 1600)] == [1, 1, 1, 6, 100]


def test_subjects_are_scoped_and_odd_tenant_names_hashed() -> None:
    ns = FleetLimits(scope="namespace")
    assert subject_key(ns, "team-a", "chat", "acme") == "n/team-a/chat/t/acme"
    assert subject_key(FleetLimits(scope="cluster"), "team-a", "chat", None) == "c/chat/p"
    assert subject_key(ns, "team-a", "chat", "x" * 500).startswith("n/team-a/chat/t/h:")
    assert subject_key(ns, "team-a", "chat", "a}b").startswith("n/team-a/chat/t/h:")


def test_a_tenant_falls_under_its_tier_quota_and_the_policy_quota() -> None:
    p = policy(
        {
            "tenants": [{"tenantTier": "free", "requestsPerMinute": 5}, {"requestsPerMinute": 50}],
            "policy": {"requestsPerMinute": 500},
        }
    )
    free = meters_of(p, "ns", "acme", "free")
    assert [(m.tenant, m.quota.requests_per_minute) for m in free] == [("acme", 5), ("", 500)]
    assert meters_of(p, "ns", "acme", "gold")[0].quota.requests_per_minute == 50


def test_requests_wait_for_a_grant_then_use_the_lease_then_stop_when_the_store_says_spent() -> None:
    p = policy({"tenants": [{"requestsPerMinute": 32}]})
    meters = meters_of(p, "ns", "acme", "")
    ledger = Ledger()
    needs = ledger.admit(meters, 10, NOW, True, "open")
    assert isinstance(needs, list) and [(n.requests, n.tokens) for n in needs] == [(2, 0)]
    ledger.granted(needs[0], 2, 0)
    assert isinstance(ledger.admit(meters, 10, NOW, True, "open"), Ticket)
    ticket = ledger.admit(meters, 10, NOW, True, "open")
    assert isinstance(ticket, Ticket)
    again = ledger.admit(meters, 10, NOW, True, "open")
    assert isinstance(again, list)
    ledger.granted(again[0], 0, 0)  # the store has nothing left this minute
    refused = ledger.admit(meters, 10, NOW, True, "open")
    assert isinstance(refused, Refusal) and refused.code == "rate_limit_exceeded"
    assert "tenant 'acme'" in refused.message and 0 < refused.retry_after <= 55
    assert isinstance(ledger.admit(meters, 10, NOW + 60, True, "open"), list)  # a new minute


def test_refills_are_asked_for_in_the_background_once_a_lease_runs_low() -> None:
    meters = meters_of(policy({"tenants": [{"requestsPerMinute": 160}]}), "ns", "acme", "")
    ledger = Ledger()
    need = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(need, list)
    ledger.granted(need[0], 10, 0)
    ticket = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(ticket, Ticket) and ticket.refills == []
    for _ in range(5):
        ticket = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(ticket, Ticket)
    assert [n.requests for n in ticket.refills] == [10]


def test_store_unreachable_fail_open_counts_locally_as_debt_and_fail_closed_refuses() -> None:
    meters = meters_of(policy({"tenants": [{"requestsPerMinute": 2}]}), "ns", "acme", "")
    ledger = Ledger()
    for _ in range(2):
        ticket = ledger.admit(meters, 5, NOW, False, "open")
        assert isinstance(ticket, Ticket) and ticket.local
    assert isinstance(ledger.admit(meters, 5, NOW, False, "open"), Refusal)  # the per-process limit
    [(subject, lease)] = ledger.debts()
    assert (subject, lease.debt_requests) == ("n/ns/chat/t/acme", 2)
    closed = ledger.admit(meters, 5, NOW, False, "closed")
    assert isinstance(closed, Refusal) and (closed.status, closed.code) == (503, "fleet_store_unavailable")


def test_budgets_stop_at_the_known_total_and_warn_past_the_soft_threshold() -> None:
    meters = meters_of(policy({"tenants": [{"daily": {"hardUsd": 1.0, "softUsd": 0.5}}]}), "ns", "acme", "")
    ledger = Ledger()
    [read] = first_read(ledger, meters)
    ledger.synced(read.spend, 0.0, 0.0)
    ticket = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(ticket, Ticket) and ticket.warnings == []
    assert ledger.settle(ticket, 100, 0.3, NOW) is False
    ledger.synced(ledger.spends[("n/ns/chat/t/acme", "day")], 0.3, 0.6)  # others spent 0.3 meanwhile
    warned = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(warned, Ticket) and warned.warnings == ["day; acme; 0.60/1.00 USD"]
    assert ledger.settle(warned, 100, 0.4, NOW) is True  # near the stop: sync now
    refused = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(refused, Refusal) and refused.code == "budget_exceeded" and refused.status == 429
    assert "daily budget" in refused.message and "1.00 of 1.00 USD" in refused.message
    [read] = first_read(ledger, meters, NOW + 86400)  # a new day: read, then admitted
    ledger.synced(read.spend, 0.0, 0.0)
    assert isinstance(ledger.admit(meters, 0, NOW + 86400, True, "open"), Ticket)


def first_read(ledger: Ledger, meters: tuple[Meter, ...], now: float = NOW) -> list[SpendRead]:
    reads = ledger.admit(meters, 0, now, True, "open")
    assert isinstance(reads, list) and all(isinstance(r, SpendRead) for r in reads), reads
    return [r for r in reads if isinstance(r, SpendRead)]


def test_a_budget_is_read_from_the_store_before_it_is_judged() -> None:
    meters = meters_of(policy({"tenants": [{"daily": {"hardUsd": 1.0}}]}), "ns", "acme", "")
    ledger = Ledger()
    [read] = first_read(ledger, meters)
    assert read.key == ("n/ns/chat/t/acme", "day")
    ledger.synced(read.spend, 0.0, 1.5)  # other processes already spent it all
    refused = ledger.admit(meters, 0, NOW, True, "open")
    assert isinstance(refused, Refusal) and refused.code == "budget_exceeded"
    fallback = Ledger().admit(meters, 0, NOW, False, "open")  # store unreachable: the fail mode, no read
    assert isinstance(fallback, Ticket)


def spent_tenant(ledger: Ledger, p: PolicyConfig, tenant: str, now: float, cost: float = 0.1) -> None:
    meters = meters_of(p, "ns", tenant, "")
    for read in first_read(ledger, meters, now):
        ledger.synced(read.spend, 0.0, 0.0)
    ticket = ledger.admit(meters, 0, now, True, "open")
    assert isinstance(ticket, Ticket)
    ledger.settle(ticket, 10, cost, now)


def test_made_up_tenants_are_capped_and_unwritten_spend_is_never_dropped() -> None:
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}, "monthly": {"hardUsd": 5.0}}]})
    ledger = Ledger(tenants_per_policy=3)
    for i in range(3):
        spent_tenant(ledger, p, f"t{i}", NOW + i)
    assert len(ledger.spends) == 6 and len(ledger.tenants["chat"]) == 3
    # all three hold spend the store has not taken yet: a fourth tenant is refused, not admitted blind
    refused = ledger.admit(meters_of(p, "ns", "t3", ""), 0, NOW + 3, True, "open")
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.code, refused.reason) == (503, "fleet_tenants_full", "tenants-full")
    assert "at most 3 tenants" in refused.message and "'chat'" in refused.message
    known = {tenant: ledger.spends[(f"n/ns/chat/t/{tenant}", "day")].known for tenant in ("t0", "t1", "t2")}
    assert known == {"t0": 0.1, "t1": 0.1, "t2": 0.1}
    # once written, the least recently used is set aside for the newcomer; the store keeps its figure
    for key, spend in ledger.spends.items():
        if key[0].endswith(("/t0", "/t1")):
            ledger.synced(spend, spend.own, spend.own)
    spent_tenant(ledger, p, "t3", NOW + 4)
    assert sorted(ledger.tenants["chat"]) == ["n/ns/chat/t/t1", "n/ns/chat/t/t2", "n/ns/chat/t/t3"]
    assert ("n/ns/chat/t/t0", "day") not in ledger.spends
    for i in range(100):  # a flood of names: memory stays at the cap
        meters = meters_of(p, "ns", f"flood-{i}", "")
        ledger.admit(meters, 0, NOW + 5, True, "open")
        for spend in list(ledger.spends.values()):
            ledger.synced(spend, spend.own, spend.own)
    assert len(ledger.tenants["chat"]) == 3 and len(ledger.spends) == 6
    # a tenant tracked again is read before judged, and counts on from what this process wrote before
    again = first_read(ledger, meters_of(p, "ns", "t0", ""), NOW + 6)
    assert {r.key[1] for r in again} == {"day", "month"}
    assert all(not r.spend.based and r.spend.own == 0 for r in again)
    ledger.based(again[0].spend, 0.1, 0.4)  # the store: this process's field holds 0.1, the fleet 0.4
    ledger.based(again[0].spend, 0.1, 0.4)  # a second answer (a read and a sync raced): no change
    assert (again[0].spend.own, again[0].spend.synced_own, again[0].spend.known) == (0.1, 0.1, 0.4)


def test_idle_written_spend_is_forgotten_and_unwritten_spend_kept() -> None:
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}}], "policy": {"daily": {"hardUsd": 9.0}}})
    ledger = Ledger()
    spent_tenant(ledger, p, "written", NOW)
    spent_tenant(ledger, p, "unwritten", NOW)
    for key, spend in ledger.spends.items():
        if not key[0].endswith("/unwritten"):
            ledger.synced(spend, spend.own, spend.own)
    ledger.prune(NOW + ACTIVE_SECONDS - 1)
    assert len(ledger.spends) == 3  # not idle yet
    ledger.prune(NOW + ACTIVE_SECONDS)
    assert list(ledger.spends) == [("n/ns/chat/t/unwritten", "day")]
    assert list(ledger.tenants["chat"]) == ["n/ns/chat/t/unwritten"]
    gauges = ledger.spend_gauges()
    assert gauges == {("chat", "tenant-max", "day"): 0.1}


def test_spend_gauges_are_bounded_by_policies_not_tenants() -> None:
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}}], "policy": {"daily": {"hardUsd": 900.0}}})
    ledger = Ledger()
    for i in range(50):
        spent_tenant(ledger, p, f"tenant-{i}", NOW, cost=0.01 * (i + 1))
    assert ledger.spend_gauges() == {("chat", "tenant-max", "day"): 0.5, ("chat", "policy", "day"): 12.75}


def test_actual_tokens_replace_the_estimate() -> None:
    meters = meters_of(policy({"tenants": [{"tokensPerMinute": 1600}]}), "ns", "acme", "")
    ledger = Ledger()
    need = ledger.admit(meters, 50, NOW, True, "open")
    assert isinstance(need, list) and need[0].tokens == 100
    ledger.granted(need[0], 0, 100)
    ticket = ledger.admit(meters, 50, NOW, True, "open")
    assert isinstance(ticket, Ticket)
    ledger.settle(ticket, 20, 0.0, NOW)  # used less: the rest goes back
    assert ledger.lease("n/ns/chat/t/acme", ticket.window).tokens == 80
    ticket = ledger.admit(meters, 50, NOW, True, "open")
    assert isinstance(ticket, Ticket)
    ledger.settle(ticket, 200, 0.0, NOW)  # used more than the lease holds: debt for the store
    lease = ledger.lease("n/ns/chat/t/acme", ticket.window)
    assert (lease.tokens, lease.debt_tokens) == (0, 120)


def test_a_grant_need_names_its_minute() -> None:
    meters = meters_of(policy({"tenants": [{"requestsPerMinute": 10}]}), "ns", "t", "")
    need = Ledger().admit(meters, 0, NOW, True, "open")
    assert isinstance(need, list) and isinstance(need[0], GrantNeed) and need[0].window == int(NOW // 60)


@pytest.mark.parametrize(
    ("spent", "soft", "hard", "state"),
    [(0.1, 0.5, 1.0, "Ok"), (0.5, 0.5, 1.0, "Soft"), (1.0, 0.5, 1.0, "Exhausted"), (0.9, None, 1.0, "Ok")],
)
def test_budget_states(spent: float, soft: float | None, hard: float, state: str) -> None:
    assert budget_state(spent, soft, hard) == state


def snapshot(pod: str, store: str, *budgets: BudgetFigures) -> StatsSnapshot:
    return StatsSnapshot(pod=pod, fleet=FleetFigures(store=store, budgets=list(budgets)))  # type: ignore[arg-type]


def test_the_fleet_report_names_unreachable_sidecars_and_raises_events_on_transitions() -> None:
    p = policy({"failMode": "open", "tenants": [{"daily": {"hardUsd": 10.0, "softUsd": 5.0}}]})
    low = BudgetFigures(
        policy="chat", tenant="acme", period="day", window="2026-12-02", spent_usd=6, soft_usd=5, hard_usd=10
    )
    high = low.model_copy(update={"spent_usd": 7.0})
    report = fleet_report(p, [snapshot("app-0", "up", low), snapshot("app-1", "down", high)], [])
    assert (report.condition.type, report.condition.status, report.condition.reason) == (
        "FleetStore",
        "False",
        "Unreachable",
    )
    assert "1 of 2 sidecars cannot reach the fleet store (app-1); fail-open" in report.condition.message
    assert report.spend == [
        {
            "tenant": "acme",
            "period": "day",
            "window": "2026-12-02",
            "spentUsd": 7.0,
            "softUsd": 5.0,
            "hardUsd": 10.0,
            "state": "Soft",
        }
    ]
    assert [e.reason for e in report.events] == ["BudgetSoftLimit"]
    again = fleet_report(p, [snapshot("app-0", "up", high)], report.spend)
    assert again.events == [] and again.condition.status == "True"
    rows = spend_rows(
        [
            {
                "kind": "RoutingPolicy",
                "metadata": {"name": "chat", "namespace": "a"},
                "status": {"spend": report.spend},
            }
        ]
    )
    table = format_spend(rows)
    assert "acme" in table and "7.0000" in table and "Soft" in table


def test_made_up_tenants_cannot_grow_the_leases_and_no_lease_of_this_minute_is_dropped() -> None:
    p = policy({"tenants": [{"requestsPerMinute": 10}]})
    ledger = Ledger(tenants_per_policy=2)

    def granted_ticket(tenant: str, now: float) -> None:
        need = ledger.admit(meters_of(p, "ns", tenant, ""), 0, now, True, "open")
        assert isinstance(need, list) and isinstance(need[0], GrantNeed), need
        ledger.granted(need[0], 1, 0)
        assert isinstance(ledger.admit(meters_of(p, "ns", tenant, ""), 0, now, True, "open"), Ticket)

    for tenant in ("t1", "t2"):
        granted_ticket(tenant, NOW)
    # the cap reached with leases of this minute, their counts all reported: still none is dropped (made
    # again for the same minute, a lease's debt would restart from 0 and lower the store's count)
    for now in (NOW, NOW + 60):  # nor one of the previous minute: its answers may still settle
        refused = ledger.admit(meters_of(p, "ns", "t3", ""), 0, now, True, "open")
        assert isinstance(refused, Refusal) and (refused.status, refused.code) == (503, "fleet_tenants_full")
    assert sorted(subject for subject, _ in ledger.leases) == ["n/ns/chat/t/t1", "n/ns/chat/t/t2"]
    # two minutes on, the old leases (reported) make room, oldest first
    granted_ticket("t3", NOW + 120)
    granted_ticket("t4", NOW + 120)
    assert sorted(subject for subject, _ in ledger.leases) == ["n/ns/chat/t/t3", "n/ns/chat/t/t4"]
    assert len(ledger.lease_tenants["chat"]) == 2
    # the store away (fail-open): what the leases admit is debt not yet reported, so nothing is dropped
    later = NOW + 240
    for tenant in ("t3", "t4"):
        assert isinstance(ledger.admit(meters_of(p, "ns", tenant, ""), 0, NOW + 120, False, "open"), Ticket)
    refused = ledger.admit(meters_of(p, "ns", "t5", ""), 0, later, False, "open")
    assert isinstance(refused, Refusal) and (refused.status, refused.code) == (503, "fleet_tenants_full")
    assert {lease.debt_requests for lease in ledger.leases.values()} == {1}
    ledger.prune(later)  # past minutes go once reported; the registry follows
    assert len(ledger.leases) == 2
    for lease in ledger.leases.values():
        lease.reported_debt_requests = lease.debt_requests
    ledger.prune(later)
    assert ledger.leases == {} and ledger.lease_tenants == {}


def test_a_new_name_walks_a_bounded_part_of_a_full_table() -> None:
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}}]})
    ledger = Ledger(tenants_per_policy=EVICTION_STEPS + 1)
    for i in range(EVICTION_STEPS + 1):
        spent_tenant(ledger, p, f"t{i}", NOW)
    # only the last one (past the bounded walk) is written: a newcomer is refused rather than walking on
    last = ledger.spends[(f"n/ns/chat/t/t{EVICTION_STEPS}", "day")]
    ledger.synced(last, last.own, last.own)
    refused = ledger.admit(meters_of(p, "ns", "new", ""), 0, NOW, False, "open")
    assert isinstance(refused, Refusal) and refused.code == "fleet_tenants_full"
    first = ledger.spends[("n/ns/chat/t/t0", "day")]
    ledger.synced(first, first.own, first.own)  # the least recently used written: it is set aside
    assert isinstance(ledger.admit(meters_of(p, "ns", "new", ""), 0, NOW, False, "open"), Ticket)
    assert ("n/ns/chat/t/t0", "day") not in ledger.spends


def test_a_forgotten_tenant_over_its_budget_is_refused_while_the_store_is_unreachable() -> None:
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}}], "failMode": "open"})
    ledger = Ledger()
    meters = meters_of(p, "ns", "acme", "")
    [read] = first_read(ledger, meters)
    ledger.synced(read.spend, 0.0, 1.5)  # the fleet already spent 1.5 of 1.0
    assert isinstance(ledger.admit(meters, 0, NOW, False, "open"), Refusal)
    ledger.prune(NOW + ACTIVE_SECONDS)  # idle and written: forgotten, its last total remembered
    assert ("n/ns/chat/t/acme", "day") not in ledger.spends
    later = NOW + ACTIVE_SECONDS + 1
    refused = ledger.admit(meters, 0, later, False, "open")  # the store down: judged on what it knew
    assert isinstance(refused, Refusal) and refused.code == "budget_exceeded" and "1.50" in refused.message
    # the store up: read first as always, and the store's total replaces the remembered one
    ledger.prune(later + ACTIVE_SECONDS)
    [again] = first_read(ledger, meters, later + ACTIVE_SECONDS)
    assert again.spend.known == 1.5 and ledger.forgotten == {}
    ledger.synced(again.spend, 0.0, 0.5)  # e.g. the store lost data: its figure is the truth
    assert isinstance(ledger.admit(meters, 0, later + ACTIVE_SECONDS, True, "open"), Ticket)
    # a tenant set aside for a newcomer past the cap is remembered the same way
    small = Ledger(tenants_per_policy=1)
    [read] = first_read(small, meters)
    small.synced(read.spend, 0.0, 2.0)
    spent_tenant(small, p, "other", NOW + 1)
    assert isinstance(small.admit(meters, 0, NOW + 2, False, "open"), Refusal)  # `other` unwritten: full
    for spend in small.spends.values():
        small.synced(spend, spend.own, spend.own)
    refused = small.admit(meters, 0, NOW + 2, False, "open")
    assert isinstance(refused, Refusal) and refused.code == "budget_exceeded"


def test_the_remembered_totals_are_bounded_and_end_with_their_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "FORGOTTEN_TOTALS", 3)
    p = policy({"tenants": [{"daily": {"hardUsd": 1.0}}]})
    ledger = Ledger()
    for i in range(5):
        spent_tenant(ledger, p, f"t{i}", NOW + i)
    for spend in ledger.spends.values():
        ledger.synced(spend, spend.own, spend.own)
    ledger.prune(NOW + 4 + ACTIVE_SECONDS)
    assert [k[0] for k in ledger.forgotten] == ["n/ns/chat/t/t2", "n/ns/chat/t/t3", "n/ns/chat/t/t4"]
    # a tenant that never spent is not remembered; a remembered total of yesterday is not used today
    first_read(ledger, meters_of(p, "ns", "idle", ""), NOW + 200)
    ledger.prune(NOW + 200 + ACTIVE_SECONDS)
    assert len(ledger.forgotten) == 3
    tomorrow = NOW + 86400
    assert isinstance(ledger.admit(meters_of(p, "ns", "t4", ""), 0, tomorrow, False, "open"), Ticket)
    assert ledger.spends[("n/ns/chat/t/t4", "day")].known == 0
