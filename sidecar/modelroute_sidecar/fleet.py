"""Fleet-wide limits and spend budgets: the pure accounting core of one sidecar process.

No I/O here: `fleetstore` talks to Redis/Valkey and feeds this ledger; the views ask it before a request
goes and tell it what the request cost after the answer. How the counts stay fleet-wide without a store
round trip per request:

- **Requests and tokens per minute are leased.** A process asks the store for a chunk of a subject's
  quota of the current calendar minute (`Grant`); the store's script hands out at most what is left of
  the limit, atomically, so the chunks of all processes never add up to more than the limit. Requests
  are admitted against the local lease; when it runs low a refill is fetched in the background, and only
  a process with nothing left for a new minute waits for one round trip (once per chunk, not per request).
  Over-admission while the store is up: none for requests; for tokens, only what answers use beyond their
  admission estimate (corrected after the answer and reported as debt). The price is under-admission:
  at most one chunk per process may be stranded unused when the minute ends (`chunk_of`).
- **Spend is known after the answer**, so budgets are counted, not leased: each process writes its own
  cumulative spend of the period to the store (idempotently: the same figure twice is one write) and
  reads back the fleet's total every sync (0.2 s by default). A process admits while the total it knows
  (the last total plus its own spend since) is under the hard stop. Over-spend is therefore bounded by
  what the fleet admits within one sync interval before the total crosses the stop, plus the answers in
  flight at that moment. A process reads a budget's fleet total before it first admits against it (one
  round trip per subject and period, like a lease's first grant). When the read fails or the store is
  unreachable (fail-open), a budget is judged against the last total the process knew: a forgotten
  entry's is kept (`FORGOTTEN_TOTALS`, bounded) and seeds the next one, so the process never admits
  blind against a budget it knew to be spent (one it never read counts from its own spend).
- **Bounded per process.** A tenant's spend is tracked only while it matters: an idle subject whose spend
  is written is forgotten (the store keeps it; the next request reads it back), and a policy tracks at
  most `TENANTS_PER_POLICY` tenant subjects (made-up tenant names cannot grow memory). Past the cap the
  least recently used written subject is set aside, and the oldest lease of a minute before the previous
  one whose debts are reported is dropped (a lease of the current or previous minute never is: made
  again, its cumulative debt would restart from 0 and lower the store's count); when nothing can go yet
  (store unreachable, all spend of the last sync interval, or the cap's worth of leases of this minute) a
  new tenant is refused with 503 `fleet_tenants_full` rather than admitted unbudgeted: under-admission,
  never over. The search looks at most `EVICTION_STEPS` entries per admission. A process writes one
  field of a subject's spend hash, its running total of the period: a forgotten subject's total stays in
  the store, and an entry made again for it first reads that field (`Spend.based`) and counts on from
  it, so nothing written before is overwritten by a smaller figure.
- **The store unreachable**: `fail_mode: open` admits under per-process limits (each process enforces the
  whole per-minute limit by itself, and its known spend against the budgets) and keeps every count, which
  is written when the store returns; `closed` refuses covered requests with 503.
"""

from __future__ import annotations

import calendar
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from modelroute_contract import FleetLimits, FleetQuota, PolicyConfig, SpendBudget
from modelroute_contract.stats import BudgetFigures, FleetFigures

MINUTE = 60
CHUNKS_PER_LIMIT = 16
"""A lease asks for 1/16 of a per-minute limit (at least 1): few round trips, little stranded."""
TENANT_KEY_MAX = 128
"""Longer tenant names are hashed into the store key (a hostile name cannot grow keys without bound)."""
BUDGETS_REPORTED = 100
"""Budget figures a process reports in `/stats` and metrics (the highest spend first)."""
ACTIVE_SECONDS = 120.0
"""A subject not used for this long is no longer synced, and forgotten once its spend is written (its
figures stay in the store)."""
TENANTS_PER_POLICY = 4096
"""Tenant subjects with budgets one process tracks per policy (~600 bytes each, day and month)."""
EVICTION_STEPS = 32
"""Entries a new tenant's admission looks at for one to set aside before it is refused: a flood of new
names while nothing can go (the store unreachable) costs a bounded walk each, not one over the table."""
FORGOTTEN_TOTALS = 16384
"""Forgotten budgets whose last known fleet total a process keeps (least recently forgotten dropped
first; ~300 bytes each, so at most ~5 MiB, reached only by that many spending tenants gone idle): a
tenant forgotten and back while the store is unreachable is judged against what the process knew it had
spent, never from 0."""

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")


def chunk_of(limit: int) -> int:
    """How much of a per-minute limit one lease asks for."""
    return max(1, limit // CHUNKS_PER_LIMIT)


def minute_window(now: float) -> int:
    """The calendar minute (UTC) `now` falls in, as a number shared by every sidecar."""
    return int(now // MINUTE)


_PERIODS: list[tuple[int, str, str]] = [(-1, "", "")]
"""The last second's (second, day, month): every request asks, the answer changes once a day."""


def period_window(period: Period, now: float) -> str:
    """The UTC day (`2026-12-02`) or month (`2026-12`) `now` falls in."""
    second = int(now)
    cached = _PERIODS[0]
    if cached[0] != second:
        cached = _PERIODS[0] = (second, _period_text("day", now), _period_text("month", now))
    return cached[1] if period == "day" else cached[2]


def _period_text(period: Period, now: float) -> str:
    t = time.gmtime(now)
    if period == "day":
        return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def seconds_left(period: Period, now: float) -> float:
    """Seconds until the period that `now` falls in ends."""
    t = time.gmtime(now)
    if period == "day":
        return 86400 - (t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return max(1.0, calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0)) - now)


def subject_key(limits: FleetLimits, namespace: str, policy: str, tenant: str | None) -> str:
    """The store key prefix of one subject: a tenant of a policy, or the policy as a whole (None)."""
    scope = "c" if limits.scope == "cluster" else f"n/{namespace}"
    if tenant is None:
        return f"{scope}/{policy}/p"
    if len(tenant) > TENANT_KEY_MAX or any(c in tenant for c in "{}\n\r"):
        import hashlib  # rare: only for odd tenant names

        tenant = "h:" + hashlib.blake2b(tenant.encode(), digest_size=16).hexdigest()
    return f"{scope}/{policy}/t/{tenant}"


def select_quota(limits: FleetLimits, tier: str) -> FleetQuota | None:
    """A tenant's quota: the one naming its tier, else the default (empty tier)."""
    default = None
    for quota in limits.tenants:
        if quota.tenant_tier == tier and tier:
            return quota
        if not quota.tenant_tier:
            default = quota
    return default


@dataclass(frozen=True, slots=True)
class Meter:
    """One quota applied to one subject."""

    subject: str
    policy: str
    tenant: str
    """Empty for the policy-wide quota."""
    quota: FleetQuota
    budgets: tuple[tuple[Period, SpendBudget], ...] = ()
    """The quota's budgets, looked up once (every request walks them)."""
    rated: bool = False
    """Whether the quota has a per-minute limit."""

    @classmethod
    def of(cls, subject: str, policy: str, tenant: str, quota: FleetQuota) -> Meter:
        budgets = tuple(
            (period, budget)
            for period, budget in (("day", quota.daily), ("month", quota.monthly))
            if budget is not None
        )
        rated = quota.requests_per_minute is not None or quota.tokens_per_minute is not None
        return cls(subject, policy, tenant, quota, budgets, rated)  # type: ignore[arg-type]


def meters_of(policy: PolicyConfig, namespace: str, tenant: str, tier: str) -> tuple[Meter, ...]:
    """The quotas a request of `tenant` falls under: its tenant quota and the policy's."""
    limits = policy.fleet_limits
    if limits is None:
        return ()
    out = []
    quota = select_quota(limits, tier)
    if quota is not None:
        out.append(Meter.of(subject_key(limits, namespace, policy.name, tenant), policy.name, tenant, quota))
    if limits.policy is not None:
        subject = subject_key(limits, namespace, policy.name, None)
        out.append(Meter.of(subject, policy.name, "", limits.policy))
    return tuple(out)


@dataclass(slots=True)
class Lease:
    """One subject's share of one minute: what the store granted this process and what it used."""

    window: int
    requests: int = 0
    """Granted and not yet used."""
    tokens: int = 0
    exhausted_requests: bool = False
    """The store said the limit is used up for this minute: refuse until the next one."""
    exhausted_tokens: bool = False
    debt_requests: int = 0
    """Used beyond grants (while the store was unreachable), cumulative in this minute: reported to the
    store as a cumulative figure, so a retried report counts once."""
    debt_tokens: int = 0
    reported_debt_requests: int = 0
    reported_debt_tokens: int = 0
    local_requests: int = 0
    """Admitted under the per-process fallback limit this minute (store unreachable, fail-open)."""
    local_tokens: int = 0
    refilling: bool = False


@dataclass(slots=True)
class Spend:
    """One subject's spend in one period, as this process knows it."""

    window: str
    budget: SpendBudget
    policy: str
    tenant: str
    own: float = 0.0
    """This process's own cumulative spend in the period."""
    synced_own: float = 0.0
    """`own` as of the last successful write to the store."""
    fleet: float = 0.0
    """The fleet's total as of that write (this process's part included)."""
    used_at: float = 0.0
    based: bool = False
    """`own` includes what this process wrote to the store for the subject and period before the entry
    was made (an earlier entry, forgotten): until then the entry only reads its field of the spend hash,
    never writes it (a smaller running total would overwrite spend the store has)."""
    read: bool = False
    """The fleet's total has been read from the store: until then the budget is not judged."""

    @property
    def known(self) -> float:
        """The fleet total as far as this process knows it."""
        return self.fleet + (self.own - self.synced_own)

    @property
    def written(self) -> bool:
        """The store has all of this process's spend: forgetting the entry loses nothing."""
        return self.own == self.synced_own


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not go."""

    status: int
    code: str
    message: str
    retry_after: float
    reason: str
    """Metric label: requests, tokens, budget-day, budget-month, store-unavailable."""


@dataclass(slots=True)
class Ticket:
    """What an admitted request holds until its answer is settled."""

    meters: tuple[Meter, ...]
    window: int
    estimate: int
    warnings: list[str] = field(default_factory=list)
    local: bool = False
    """Admitted under per-process limits (store unreachable, fail-open)."""
    refills: list[GrantNeed] = field(default_factory=list)
    """Leases this admission left running low (at most one refill in flight per lease)."""


@dataclass(frozen=True, slots=True)
class SpendRead:
    """A budget whose fleet total must be read from the store before the request can be judged."""

    key: tuple[str, Period]
    spend: Spend


@dataclass(slots=True)
class GrantNeed:
    """A lease that must be refilled before the request can be judged."""

    meter: Meter
    window: int
    requests: int
    tokens: int


Admission = Ticket | Refusal | list[GrantNeed | SpendRead]


class Ledger:
    """The accounting of one process: leases per (subject, minute), spend per (subject, period)."""

    def __init__(self, tenants_per_policy: int = TENANTS_PER_POLICY) -> None:
        self.leases: dict[tuple[str, int], Lease] = {}
        """By (subject, minute): a past minute's lease stays until its debt is reported."""
        self.spends: dict[tuple[str, Period], Spend] = {}
        self.tenants: dict[str, dict[str, None]] = {}
        """Per policy, the tenant subjects that hold a spend entry (bounded by `tenants_per_policy`)."""
        self.lease_tenants: dict[str, dict[tuple[str, int], None]] = {}
        """Per policy, the tenant leases by (subject, minute), oldest first (bounded the same way)."""
        self.tenants_per_policy = tenants_per_policy
        self.forgotten: dict[tuple[str, Period], tuple[str, float]] = {}
        """By (subject, period), the (period window, fleet total) a forgotten spend entry last knew, in
        order of forgetting, at most `FORGOTTEN_TOTALS`: a new entry for the subject starts from it."""

    # ------------------------------------------------------------------------------ admission

    def lease(self, subject: str, window: int) -> Lease:
        lease = self.leases.get((subject, window))
        if lease is None:
            lease = self.leases[(subject, window)] = Lease(window)
        return lease

    def spend(self, meter: Meter, period: Period, budget: SpendBudget, now: float) -> Spend:
        window = period_window(period, now)
        key = (meter.subject, period)
        spend = self.spends.get(key)
        if spend is None or spend.window != window:
            spend = self.spends[key] = Spend(window, budget, meter.policy, meter.tenant)
            last = self.forgotten.pop(key, None)
            if last is not None and last[0] == window:
                # what an earlier entry knew: judged against it until the store is read (and if the
                # store is unreachable, instead of a blind 0); the store's total replaces it on the read
                spend.fleet = last[1]
            if meter.tenant:
                self.tenants.setdefault(meter.policy, {})[meter.subject] = None
        spend.budget = budget
        spend.used_at = now
        return spend

    def admit(
        self, meters: tuple[Meter, ...], estimate: int, now: float, store_up: bool, fail_mode: str
    ) -> Admission:
        """Judge one request of `estimate` tokens: a ticket (counted), a refusal, or the leases to refill
        first (nothing counted yet; ask again after the grants)."""
        window = minute_window(now)
        if not store_up and fail_mode == "closed":
            return Refusal(
                503,
                "fleet_store_unavailable",
                f"the fleet store is unreachable and policy {meters[0].policy!r} fails closed; retry shortly",
                1.0,
                "store-unavailable",
            )
        warnings: list[str] = []
        reads: list[SpendRead] = []
        for meter in meters:
            if meter.tenant and not self._tracked(meter, window, now):
                return Refusal(
                    503,
                    "fleet_tenants_full",
                    f"policy {meter.policy!r} tracks the limits of at most {self.tenants_per_policy} "
                    "tenants per sidecar process, and none can be set aside yet (counts the fleet store "
                    "does not have yet, or leases of this minute); retry shortly",
                    1.0,
                    "tenants-full",
                )
            for period, budget in meter.budgets:
                spend = self.spend(meter, period, budget, now)
                if store_up and not spend.read:
                    reads.append(SpendRead((meter.subject, period), spend))
                    continue
                known = spend.known
                if known >= budget.hard_usd:
                    who = f"tenant {meter.tenant!r}" if meter.tenant else "all tenants together"
                    return Refusal(
                        429,
                        "budget_exceeded",
                        f"the {'daily' if period == 'day' else 'monthly'} budget of policy {meter.policy!r} "
                        f"for {who} is spent ({known:.2f} of {budget.hard_usd:.2f} USD); "
                        f"it renews in {int(seconds_left(period, now))}s",
                        seconds_left(period, now),
                        f"budget-{period}",
                    )
                if budget.soft_usd is not None and known >= budget.soft_usd:
                    who = meter.tenant or "policy"
                    warnings.append(f"{period}; {who}; {known:.2f}/{budget.hard_usd:.2f} USD")
        if reads:
            return list(reads)
        needs: list[GrantNeed | SpendRead] = []
        for meter in meters:
            quota = meter.quota
            if not meter.rated:
                continue
            lease = self.lease(meter.subject, window)
            refusal = self._rate_refusal(meter, lease, estimate, now, store_up)
            if refusal is not None:
                return refusal
            if store_up:
                want_r = want_t = 0
                if quota.requests_per_minute is not None and lease.requests < 1:
                    want_r = chunk_of(quota.requests_per_minute)
                if quota.tokens_per_minute is not None and lease.tokens < estimate:
                    want_t = max(estimate - lease.tokens, chunk_of(quota.tokens_per_minute))
                if want_r or want_t:
                    needs.append(GrantNeed(meter, window, want_r, want_t))
        if needs:
            return needs
        refills: list[GrantNeed] = []
        for meter in meters:
            quota = meter.quota
            if not meter.rated:
                continue
            lease = self.lease(meter.subject, window)
            if store_up:
                want_r = want_t = 0
                if quota.requests_per_minute is not None:
                    lease.requests -= 1
                    chunk = chunk_of(quota.requests_per_minute)
                    if lease.requests * 2 < chunk and not lease.exhausted_requests:
                        want_r = chunk
                if quota.tokens_per_minute is not None:
                    lease.tokens -= estimate
                    chunk = max(chunk_of(quota.tokens_per_minute), estimate)
                    if lease.tokens * 2 < chunk and not lease.exhausted_tokens:
                        want_t = chunk
                if (want_r or want_t) and not lease.refilling:
                    # running low: refilled in the background, so the next requests find an allowance
                    refills.append(GrantNeed(meter, window, want_r, want_t))
            else:
                lease.local_requests += 1
                lease.local_tokens += estimate
                lease.debt_requests += 1 if quota.requests_per_minute is not None else 0
                lease.debt_tokens += estimate if quota.tokens_per_minute is not None else 0
        return Ticket(meters, window, estimate, warnings, local=not store_up, refills=refills)

    def _tracked(self, meter: Meter, window: int, now: float) -> bool:
        """Whether a tenant's spend and lease entries are held or may be (`tenants_per_policy`)."""
        if meter.budgets and not self._room_for(meter, now):
            return False
        return not meter.rated or self._lease_room(meter, window)

    def _room_for(self, meter: Meter, now: float) -> bool:
        """Whether the meter's tenant subject is tracked or may be: under the cap, or after setting aside
        the least recently used subject of the policy whose spend the store has. `tenants` keeps each
        policy's subjects in order of use, so the search starts at the least recent (a flood of new
        names costs one step each, not a walk over the table)."""
        held = self.tenants.get(meter.policy)
        if held is None:
            return True
        if meter.subject in held:
            del held[meter.subject]  # to the end: the most recently used
            held[meter.subject] = None
            return True
        if len(held) < self.tenants_per_policy:
            return True
        for step, subject in enumerate(held):
            if step >= EVICTION_STEPS:
                return False
            entries = [s for p in PERIODS if (s := self.spends.get((subject, p))) is not None]
            if all(s.written for s in entries):
                break
        else:
            return False
        self._forget(subject, meter.policy)
        return True

    def _lease_room(self, meter: Meter, window: int) -> bool:
        """Whether the meter's tenant may hold a lease this minute: it has one, the policy is under the
        cap, or the policy's oldest lease of a minute before the previous one, its debts reported, can be
        dropped. A lease of the current or previous minute is never dropped: answers in flight still
        settle against it, and a lease made again for the same minute would start its cumulative debt
        from 0, which the store's script (one running total per worker and minute) would take as a
        lower figure and subtract from the fleet's count: over-admission. So past the cap a new tenant
        waits (503 `fleet_tenants_full`) until the minute turns: under-admission, never over."""
        key = (meter.subject, window)
        if key in self.leases:
            return True
        held = self.lease_tenants.setdefault(meter.policy, {})
        if len(held) >= self.tenants_per_policy:
            for step, old in enumerate(held):
                if step >= EVICTION_STEPS:
                    return False
                lease = self.leases.get(old)
                if lease is None or (lease.window < window - 1 and _reported(lease) and not lease.refilling):
                    del held[old]
                    self.leases.pop(old, None)
                    break
            else:
                return False
        held[key] = None
        return True

    def _forget(self, subject: str, policy: str) -> None:
        for period in PERIODS:
            spend = self.spends.pop((subject, period), None)
            if spend is not None:
                self._remember((subject, period), spend)
        held = self.tenants.get(policy)
        if held is not None:
            held.pop(subject, None)
            if not held:
                del self.tenants[policy]

    def _rate_refusal(
        self, meter: Meter, lease: Lease, estimate: int, now: float, store_up: bool
    ) -> Refusal | None:
        quota = meter.quota
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        if store_up:
            over_r = rpm is not None and lease.requests < 1 and lease.exhausted_requests
            over_t = tpm is not None and lease.tokens < estimate and lease.exhausted_tokens
        else:  # per-process fallback: this process alone keeps to the whole limit
            over_r = rpm is not None and lease.local_requests + 1 > rpm
            over_t = tpm is not None and lease.local_tokens + estimate > tpm and lease.local_tokens > 0
        if not (over_r or over_t):
            return None
        wait = MINUTE - (now % MINUTE)
        who = f"tenant {meter.tenant!r}" if meter.tenant else "all tenants together"
        what = "request" if over_r else "token"
        return Refusal(
            429,
            "rate_limit_exceeded",
            f"fleet {what} limit of policy {meter.policy!r} for {who} reached for this minute; "
            f"retry in {math.ceil(wait)}s",
            wait,
            "requests" if over_r else "tokens",
        )

    def granted(self, need: GrantNeed, requests: int, tokens: int) -> None:
        """The store's answer to a grant: add it to the lease; less than asked means the limit is spent."""
        lease = self.lease(need.meter.subject, need.window)
        lease.refilling = False
        lease.requests += requests
        lease.tokens += tokens
        if need.requests and requests < need.requests:
            lease.exhausted_requests = True
        if need.tokens and tokens < need.tokens:
            lease.exhausted_tokens = True

    # ---------------------------------------------------------------------------- after the answer

    def settle(self, ticket: Ticket, tokens_used: int | None, cost_usd: float, now: float) -> bool:
        """Charge an answered request: its cost to every budget it falls under, and its actual tokens
        (the upstream's usage, when it reported one) in place of the admission estimate. True when a
        budget is near its stop (past the soft threshold, or half the hard stop without one): then the
        caller syncs now rather than at the next interval, so the fleet learns of it at once."""
        near = False
        for meter in ticket.meters:
            quota = meter.quota
            for period, budget in meter.budgets:
                if cost_usd > 0:
                    spend = self.spend(meter, period, budget, now)
                    spend.own += cost_usd
                    near_at = budget.soft_usd if budget.soft_usd is not None else budget.hard_usd / 2
                    near = near or spend.known >= near_at
            if quota.tokens_per_minute is None or tokens_used is None:
                continue
            lease = self.leases.get((meter.subject, ticket.window))
            if lease is None:
                continue  # a minute that has ended and was reported: its correction changes nothing
            extra = tokens_used - ticket.estimate
            if ticket.local:
                lease.local_tokens += extra
                lease.debt_tokens += extra
            elif extra <= 0:
                lease.tokens -= extra  # unused estimate goes back to the lease
            elif lease.tokens >= extra:
                lease.tokens -= extra
            else:
                lease.debt_tokens += extra - max(0, lease.tokens)
                lease.tokens = min(lease.tokens, 0)
        return near

    # ------------------------------------------------------------------------------------ syncing

    def debts(self) -> list[tuple[str, Lease]]:
        """Leases with usage beyond their grants not yet reported to the store."""
        return [
            (subject, lease)
            for (subject, _), lease in self.leases.items()
            if lease.debt_requests != lease.reported_debt_requests
            or lease.debt_tokens != lease.reported_debt_tokens
        ]

    def active_spends(self, now: float) -> list[tuple[tuple[str, Period], Spend]]:
        """Budgets to sync: used lately, or with own spend not yet written."""
        return [
            (key, spend)
            for key, spend in self.spends.items()
            if now - spend.used_at < ACTIVE_SECONDS or spend.own != spend.synced_own
        ]

    def synced(self, spend: Spend, own: float, fleet: float) -> None:
        """The store took `own` for this spend entry and says the fleet total is `fleet` (an entry set
        aside or of a past period meanwhile takes it too: harmless, nothing reads it)."""
        spend.synced_own = own
        spend.fleet = max(fleet, own)
        spend.read = True

    def based(self, spend: Spend, stored: float, fleet: float) -> None:
        """The store says this process's field for the entry's subject and period holds `stored` and the
        fleet total is `fleet`: the entry counts on from `stored` (its spend since is still to write). A
        second answer (a read and a sync raced) changes nothing: the first one set the base."""
        if spend.based:
            return
        spend.own += stored
        spend.synced_own = stored
        spend.fleet = max(fleet, stored)
        spend.based = True
        spend.read = True

    def prune(self, now: float) -> None:
        """Forget leases of past minutes (their debts reported), and spends of past periods or idle for
        `ACTIVE_SECONDS`, once written."""
        window = minute_window(now)
        for key, lease in list(self.leases.items()):
            if lease.window < window - 1 and _reported(lease):  # the previous minute may still settle
                del self.leases[key]
        for policy, leases in list(self.lease_tenants.items()):
            for key in [k for k in leases if k not in self.leases]:
                del leases[key]
            if not leases:
                del self.lease_tenants[policy]
        for spend_key, spend in list(self.spends.items()):
            ended = spend.window != period_window(spend_key[1], now)
            if (ended or now - spend.used_at >= ACTIVE_SECONDS) and spend.written:
                del self.spends[spend_key]
                if not ended:
                    self._remember(spend_key, spend)
        for policy, held in list(self.tenants.items()):
            for subject in list(held):
                if all((subject, period) not in self.spends for period in PERIODS):
                    del held[subject]
            if not held:
                del self.tenants[policy]

    def _remember(self, key: tuple[str, Period], spend: Spend) -> None:
        """Keep the fleet total a forgotten entry knew (budgets protect money: a tenant back while the
        store is unreachable must not be judged from 0). Bounded: the least recently forgotten goes."""
        known = spend.known
        self.forgotten.pop(key, None)
        if known <= 0:
            return
        if len(self.forgotten) >= FORGOTTEN_TOTALS:
            del self.forgotten[next(iter(self.forgotten))]
        self.forgotten[key] = (spend.window, known)

    def spend_gauges(self) -> dict[tuple[str, ...], float]:
        """(policy, subject, period) → USD, for metrics: `policy` the policy-wide budget's total,
        `tenant-max` the highest tenant's. Bounded by policies, never by tenants."""
        out: dict[tuple[str, ...], float] = {}
        for (_, period), spend in self.spends.items():
            key = (spend.policy, "tenant-max" if spend.tenant else "policy", period)
            known = round(spend.known, 6)
            if known > out.get(key, -1.0):
                out[key] = known
        return out

    def budget_figures(self) -> list[tuple[Spend, Period]]:
        """The budgets this process knows, highest spend first, bounded."""
        items = sorted(((s, k[1]) for k, s in self.spends.items()), key=lambda item: -item[0].known)
        return items[:BUDGETS_REPORTED]


def _reported(lease: Lease) -> bool:
    """The store has every count of usage beyond the lease's grants."""
    return (
        lease.debt_requests == lease.reported_debt_requests
        and lease.debt_tokens == lease.reported_debt_tokens
    )


def merge_fleet(parts: list[FleetFigures | None]) -> FleetFigures | None:
    """The fleet figures of a pod from its workers': down when any is down, budgets at their highest."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    stores = {p.store for p in present}
    store = "unconfigured" if "unconfigured" in stores else ("down" if "down" in stores else "up")
    budgets: dict[tuple[str, str, str, str], BudgetFigures] = {}
    for part in present:
        for budget in part.budgets:
            key = (budget.policy, budget.tenant, budget.period, budget.window)
            if key not in budgets or budget.spent_usd > budgets[key].spent_usd:
                budgets[key] = budget
    return FleetFigures(
        store=store,
        fail_open_policies=sorted({p for part in present for p in part.fail_open_policies}),
        fail_closed_policies=sorted({p for part in present for p in part.fail_closed_policies}),
        store_errors=sum(p.store_errors for p in present),
        budgets=sorted(budgets.values(), key=lambda b: -b.spent_usd)[:BUDGETS_REPORTED],
    )
