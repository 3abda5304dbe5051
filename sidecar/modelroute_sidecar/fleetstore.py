"""The fleet store edge: Redis/Valkey calls for fleet limits and budgets, and the process's accounts.

`FleetAccounts` is what the views use: `admit` before a request goes (awaiting the store only when a
lease of a new minute is empty), `settle` after the answer (no I/O: the ledger counts, the background
loop writes). The accounting rules are `fleet.Ledger`'s; this module only moves figures to and from the
store with two Lua scripts, one round trip for every subject of a sync (a pipeline).

`redis.asyncio` is imported on the first policy with fleet limits, never before: it costs ~4 MiB of
resident memory per process, which a sidecar without fleet limits should not pay. The password is read
from its mounted file at every connection (a rotated Secret needs no restart) and appears in no setting,
log line, error or stats document.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelroute_contract import PolicyConfig, RouterConfig
from modelroute_contract.stats import BudgetFigures, FleetFigures

from .errors import ApiError
from .fleet import GrantNeed, Ledger, Meter, Refusal, Spend, SpendRead, Ticket, meters_of
from .metrics import Metrics

if TYPE_CHECKING:
    from .proxy import Exchange

log = logging.getLogger(__name__)

KEY_PREFIX = "modelroute:"
STORE_TIMEOUT_SECONDS = 0.5
"""One store call; past it the store counts as unreachable and the policies' fail modes apply."""
METER_CACHE = 4096
"""(policy, tenant, tier) meter sets kept; a flood of tenant names only clears the cache."""
GRANT_ROUNDS = 32
"""Grant rounds one admission may wait through before it is refused as contended."""
MINUTE_TTL = 180
DAY_TTL = 3 * 86400
MONTH_TTL = 40 * 86400

# KEYS[1]: a subject's minute hash. ARGV: requests wanted, tokens wanted, request limit, token limit
# (-1: none), worker id, the worker's cumulative debt of requests and of tokens this minute, ttl.
# Debts are cumulative per worker, so a report retried after a lost answer counts once.
GRANT_SCRIPT = """
local h = KEYS[1]
local w = ARGV[5]
local dr = tonumber(ARGV[6]) - tonumber(redis.call('HGET', h, 'dr:' .. w) or '0')
local dt = tonumber(ARGV[7]) - tonumber(redis.call('HGET', h, 'dt:' .. w) or '0')
if dr ~= 0 then redis.call('HINCRBY', h, 'r', dr); redis.call('HSET', h, 'dr:' .. w, ARGV[6]) end
if dt ~= 0 then redis.call('HINCRBY', h, 't', dt); redis.call('HSET', h, 'dt:' .. w, ARGV[7]) end
local r = tonumber(redis.call('HGET', h, 'r') or '0')
local t = tonumber(redis.call('HGET', h, 't') or '0')
local gr = tonumber(ARGV[1])
local gt = tonumber(ARGV[2])
local lr = tonumber(ARGV[3])
local lt = tonumber(ARGV[4])
if lr >= 0 then gr = math.max(0, math.min(gr, lr - r)) end
if lt >= 0 then gt = math.max(0, math.min(gt, lt - t)) end
if gr > 0 then redis.call('HINCRBY', h, 'r', gr) end
if gt > 0 then redis.call('HINCRBY', h, 't', gt) end
redis.call('EXPIRE', h, ARGV[8])
return {gr, gt}
"""

# KEYS[1]: a subject's spend hash of one period. ARGV: the field (the worker's id), its cumulative spend,
# ttl. Each worker process owns one field holding its running total (a set, not an increment:
# idempotent); the fleet's total is their sum. A spend of 0 only reads; a negative one only reads (an
# entry that does not know its base yet). Returns the total and the field's value.
SPEND_SCRIPT = """
local h = KEYS[1]
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', h, ARGV[1], ARGV[2])
  redis.call('EXPIRE', h, ARGV[3])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', h)) do total = total + tonumber(v) end
return {tostring(total), redis.call('HGET', h, ARGV[1]) or '0'}
"""
READ_ONLY = "-1"
"""The spend figure of an entry that reads its base (`Spend.based`): the script writes nothing."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the fleet store is; the password only as the path of its mounted file."""

    url: str = ""
    """`redis://host:port/db` or `rediss://` (TLS); empty: no store (policies with fleet limits apply
    their fail mode)."""
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    sync_seconds: float = 0.2


def minute_key(subject: str, window: int) -> str:
    return f"{KEY_PREFIX}{{{subject}}}:m:{window}"


def spend_key(subject: str, window: str) -> str:
    return f"{KEY_PREFIX}{{{subject}}}:s:{window}"


def describe_url(url: str) -> str:
    """The store URL for a log line: scheme, host and port only (never user-info)."""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0]
    return f"{scheme}://{host}"


class StoreClient:
    """A redis.asyncio client with the two scripts; created on first use."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._client: Any = None
        self._grant: Any = None
        self._spend: Any = None

    def _connect(self) -> Any:
        import redis.asyncio as redis  # only here: see the module docstring
        from redis.credentials import CredentialProvider

        settings = self.settings

        class FileCredentials(CredentialProvider):  # re-read at every connection: rotation works
            def get_credentials(self) -> tuple[str] | tuple[str, str]:
                password = ""
                if settings.password_file is not None:
                    password = settings.password_file.read_text().strip()
                if settings.username:
                    return (settings.username, password)
                return (password,)

            async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
                return self.get_credentials()  # a small local file: no need for a thread

        options: dict[str, Any] = {
            "socket_timeout": STORE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORE_TIMEOUT_SECONDS,
            "retry_on_timeout": False,
            "retry": None,
            "decode_responses": True,
        }
        if settings.password_file is not None or settings.username:
            options["credential_provider"] = FileCredentials()
        if settings.url.startswith("rediss://") and settings.ca_file is not None:
            options["ssl_ca_certs"] = str(settings.ca_file)
        client = redis.Redis.from_url(settings.url, **options)
        self._grant = client.register_script(GRANT_SCRIPT)
        self._spend = client.register_script(SPEND_SCRIPT)
        return client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    async def ping(self) -> None:
        await self.client.ping()

    async def grant(self, key: str, args: list[Any]) -> tuple[int, int]:
        _ = self.client
        granted = await self._grant(keys=[key], args=args)
        return int(granted[0]), int(granted[1])

    async def sync(
        self, grants: list[tuple[str, list[Any]]], spends: list[tuple[str, list[Any]]]
    ) -> list[Any]:
        """Debt reports and spend writes in one round trip; the answers in the same order."""
        async with self.client.pipeline(transaction=False) as pipe:  # reset even when cancelled
            for key, args in grants:
                await self._grant(keys=[key], args=args, client=pipe)
            for key, args in spends:
                await self._spend(keys=[key], args=args, client=pipe)
            return list(await pipe.execute())

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None


def _store_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - the sidecar extra installs redis
        return (OSError, TimeoutError)
    return (RedisError, OSError, TimeoutError)


class FleetAccounts:
    """One process's fleet limits: its ledger, the store client and the loop that syncs them."""

    def __init__(
        self,
        settings: StoreSettings,
        metrics: Metrics,
        *,
        namespace: str,
        worker: str,
        spawn: Callable[[Any], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.namespace = namespace
        self.worker = f"{worker}/{os.getpid()}/{secrets.token_hex(3)}"
        """This process's field in the store's spend hashes: unique per process lifetime, so a restarted
        worker never overwrites the total its previous life wrote."""
        self.ledger = Ledger()
        self.clock = clock
        self.client = StoreClient(settings) if settings.url else None
        self.up = self.client is not None
        self.errors = 0
        self.in_use = False
        self._spawn = spawn
        self._loop_task: asyncio.Task[None] | None = None
        self._meter_cache: dict[tuple[int, str, str], tuple[PolicyConfig, tuple[Meter, ...]]] = {}
        self._wake = asyncio.Event()
        """Set to sync before the interval is over (a budget near its stop)."""
        self._grants: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._reads: dict[tuple[str, str], asyncio.Future[None]] = {}
        """Budget reads in flight, by (subject, period): concurrent first requests share one."""
        self._refills: set[asyncio.Task[None]] = set()
        """Background refills in flight: held here (the loop keeps only weak references to tasks)."""
        self.task_failures = 0
        """Background refills that ended with an unexpected exception (logged)."""
        self._failing_policies: dict[str, str] = {}
        self._store_errors: tuple[type[BaseException], ...] = ()

    def prepare(self, config: RouterConfig) -> None:
        """On a config with fleet limits, import the store client now rather than at the first request:
        a config installed before the process settles its memory (`main.settle_memory`, gc.freeze; the
        parent before forking) keeps the client's objects out of every later collection."""
        if self.client is not None and any(p.fleet_limits is not None for p in config.policies):
            import redis.asyncio  # noqa: F401

    # ------------------------------------------------------------------------------------ admission

    async def admit(
        self, policy: PolicyConfig, tenant: str, tier: str, estimate: int, exchange: Exchange
    ) -> None:
        """Count one request under the policy's fleet limits, or raise the ApiError that refuses it."""
        limits = policy.fleet_limits
        assert limits is not None
        meters = self._meters(policy, tenant, tier)
        if not meters:
            return
        self._start()
        # Grant, then judge again. Requests of a new minute share one grant in flight; when others took
        # it first the next round asks again, until the store says the limit is spent (a refusal).
        for _ in range(GRANT_ROUNDS):
            verdict = self.ledger.admit(meters, estimate, self.clock(), self.up, limits.fail_mode)
            if not isinstance(verdict, list):
                break
            reads = [need for need in verdict if isinstance(need, SpendRead)]
            grants = [need for need in verdict if isinstance(need, GrantNeed)]
            await asyncio.gather(self._read_once(reads), *(self._grant_once(need) for need in grants))
        else:
            who = f"tenant {tenant!r}" if tenant else "the policy"
            message = f"fleet limit of policy {policy.name!r} for {who} is contended; retry shortly"
            verdict = Refusal(429, "rate_limit_exceeded", message, 1.0, "requests")
        self._note_mode(policy.name, limits.fail_mode)
        if isinstance(verdict, Refusal):
            self.metrics.fleet_refused.inc((policy.name, verdict.reason))
            retry_after = str(max(1, int(verdict.retry_after + 0.999)))
            raise ApiError(
                verdict.status, verdict.code, verdict.message, headers={"retry-after": retry_after}
            )
        assert isinstance(verdict, Ticket)
        exchange.fleet = verdict
        if verdict.local:
            self.metrics.fleet_local_admissions.inc((policy.name,))
        if verdict.warnings:
            exchange.budget_warning = ", ".join(verdict.warnings)
            for warning in verdict.warnings:
                self.metrics.budget_warnings.inc((policy.name, warning.split(";", 1)[0]))
        if self.up:
            for need in verdict.refills:
                self.ledger.lease(need.meter.subject, need.window).refilling = True
                task = asyncio.get_running_loop().create_task(self._grant_once(need))
                self._refills.add(task)
                task.add_done_callback(self._refilled)

    def _refilled(self, task: asyncio.Task[None]) -> None:
        """A background refill ended: drop its reference; an exception (a bug: store errors are handled
        inside) is logged and counted rather than lost with the task."""
        self._refills.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.task_failures += 1
            self.metrics.fleet_store_errors.inc(())
            log.error("a fleet lease refill failed", exc_info=exc)

    def _meters(self, policy: PolicyConfig, tenant: str, tier: str) -> tuple[Meter, ...]:
        # The same few tenants ask again and again: their meters are made once per config.
        key = (id(policy), tenant, tier)
        cached = self._meter_cache.get(key)
        if cached is not None and cached[0] is policy:  # `is`: an id is reused only after a swap
            return cached[1]
        if len(self._meter_cache) >= METER_CACHE:
            self._meter_cache.clear()
        meters = meters_of(policy, self.namespace, tenant, tier)
        self._meter_cache[key] = (policy, meters)
        return meters

    def settle(self, exchange: Exchange) -> None:
        """Charge an answered (or failed) request: its cost and actual tokens; written by the loop."""
        ticket = exchange.fleet
        if not isinstance(ticket, Ticket):
            return
        exchange.fleet = None
        used = exchange.tokens_in + exchange.tokens_out
        if self.ledger.settle(ticket, used if used else None, exchange.cost_usd, self.clock()):
            self._wake.set()  # a budget near its stop: sync after every answer

    def _note_mode(self, policy: str, fail_mode: str) -> None:
        if self.up:
            self._failing_policies.pop(policy, None)
        else:
            self._failing_policies[policy] = fail_mode

    # -------------------------------------------------------------------------------------- the store

    def _start(self) -> None:
        if self.in_use:
            return
        self.in_use = True
        if self.client is None:
            self.metrics.fleet_store_down.values = {(): 1.0}
            log.warning("a policy has fleet limits but no fleet store is configured: its fail mode applies")
            return
        self._store_errors = _store_errors()
        self.metrics.fleet_store_down.values = {(): 0.0}
        log.info("fleet store %s in use", describe_url(self.settings.url))
        task = asyncio.get_running_loop().create_task(self.run(), name="fleet-sync")
        task.add_done_callback(self._loop_ended)
        self._loop_task = task
        if self._spawn is not None:
            self._spawn(task)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:  # `run` catches Exception
            log.error("the fleet sync loop ended", exc_info=exc)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.metrics.fleet_store_errors.inc(())
        if self.up:
            # the class only: a message could carry the URL, and the URL is not for logs
            log.warning("fleet store unreachable (%s): policies apply their fail modes", type(exc).__name__)
        self.up = False
        self.metrics.fleet_store_down.values = {(): 1.0}

    def _recovered(self) -> None:
        if not self.up:
            log.info("fleet store reachable again: counts kept meanwhile are being written")
        self.up = True
        self._failing_policies.clear()
        self.metrics.fleet_store_down.values = {(): 0.0}

    def _grant_args(self, need: GrantNeed) -> tuple[str, list[Any]]:
        lease = self.ledger.lease(need.meter.subject, need.window)
        quota = need.meter.quota
        rpm = quota.requests_per_minute if quota.requests_per_minute is not None else -1
        tpm = quota.tokens_per_minute if quota.tokens_per_minute is not None else -1
        args = [
            need.requests,
            need.tokens,
            rpm,
            tpm,
            self.worker,
            lease.debt_requests,
            lease.debt_tokens,
            MINUTE_TTL,
        ]
        return minute_key(need.meter.subject, need.window), args

    async def _grant_once(self, need: GrantNeed) -> None:
        """One grant per lease at a time: concurrent requests of a new minute share it."""
        key = (need.meter.subject, need.window)
        running = self._grants.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grants[key] = future
        try:
            await self._grant(need)
        finally:
            del self._grants[key]
            future.set_result(None)

    async def _grant(self, need: GrantNeed) -> None:
        assert self.client is not None
        lease = self.ledger.lease(need.meter.subject, need.window)
        key, args = self._grant_args(need)
        try:
            requests, tokens = await asyncio.wait_for(self.client.grant(key, args), STORE_TIMEOUT_SECONDS)
        except self._store_errors as exc:
            lease.refilling = False
            self._failed(exc)
            return
        except BaseException:
            lease.refilling = False  # a later refill may try again
            raise
        lease.reported_debt_requests, lease.reported_debt_tokens = args[5], args[6]
        self.ledger.granted(need, requests, tokens)

    def spend_args(self, period: str, spend: Spend) -> tuple[list[Any], float | None]:
        """A spend entry's script arguments and the figure they write (None: a read of its base)."""
        ttl = DAY_TTL if period == "day" else MONTH_TTL
        if not spend.based:
            return [self.worker, READ_ONLY, ttl], None
        return [self.worker, repr(spend.own), ttl], spend.own

    def _answered(self, spend: Spend, wrote: float | None, answer: Any) -> None:
        total, stored = float(answer[0]), float(answer[1])
        if wrote is None:
            self.ledger.based(spend, stored, total)
        else:
            self.ledger.synced(spend, wrote, total)

    async def _read_once(self, reads: list[SpendRead]) -> None:
        """Read the fleet totals of budgets this process has not judged yet; a read in flight for the
        same budget is shared."""
        if not reads:
            return
        loop = asyncio.get_running_loop()
        waits = [self._reads[r.key] for r in reads if r.key in self._reads]
        mine = [r for r in reads if r.key not in self._reads]
        if mine:
            future: asyncio.Future[None] = loop.create_future()
            for read in mine:
                self._reads[read.key] = future
            try:
                await self._read(mine)
            finally:
                for read in mine:
                    if self._reads.get(read.key) is future:
                        del self._reads[read.key]
                future.set_result(None)
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))

    async def _read(self, reads: list[SpendRead]) -> None:
        assert self.client is not None
        spends = []
        wrote = []
        for read in reads:
            # a new entry reads its base (this process's field) with the total; the next sync writes
            args, figure = self.spend_args(read.key[1], read.spend)
            wrote.append(figure)
            spends.append((spend_key(read.key[0], read.spend.window), args))
        try:
            answers = await asyncio.wait_for(self.client.sync([], spends), STORE_TIMEOUT_SECONDS)
        except self._store_errors as exc:
            self._failed(exc)
            return
        for read, figure, answer in zip(reads, wrote, answers, strict=True):
            self._answered(read.spend, figure, answer)

    async def sync_once(self) -> None:
        """Report debts and spend, read fleet totals: one round trip."""
        assert self.client is not None
        now = self.clock()
        self.ledger.prune(now)  # first: a sync with nothing to write still forgets idle subjects
        if not self.up:
            try:
                await asyncio.wait_for(self.client.ping(), STORE_TIMEOUT_SECONDS)
            except self._store_errors as exc:
                self._failed(exc)
                return
            self._recovered()
        grants: list[tuple[str, list[Any]]] = []
        leases = []
        for subject, lease in self.ledger.debts():
            key = minute_key(subject, lease.window)
            grants.append(
                (key, [0, 0, -1, -1, self.worker, lease.debt_requests, lease.debt_tokens, MINUTE_TTL])
            )
            leases.append((lease, lease.debt_requests, lease.debt_tokens))
        spends = []
        keys = []
        for subject_period, spend in self.ledger.active_spends(now):
            args, figure = self.spend_args(subject_period[1], spend)
            spends.append((spend_key(subject_period[0], spend.window), args))
            keys.append((spend, figure))
        if not grants and not spends:
            self._publish()
            return
        try:
            answers = await asyncio.wait_for(self.client.sync(grants, spends), STORE_TIMEOUT_SECONDS * 2)
        except self._store_errors as exc:
            self._failed(exc)
            return
        for (lease, debt_r, debt_t), _ in zip(leases, answers, strict=False):
            lease.reported_debt_requests, lease.reported_debt_tokens = debt_r, debt_t
        for (spend, figure), answer in zip(keys, answers[len(grants) :], strict=True):
            self._answered(spend, figure, answer)
        self._publish()

    def _publish(self) -> None:
        """The spend gauges: per policy and period, bounded (per-tenant figures are in `/stats` only)."""
        self.metrics.fleet_spend.values = self.ledger.spend_gauges()
        self.metrics.fleet_tenants.values = {
            (p,): float(len(held)) for p, held in self.ledger.tenants.items()
        }

    async def run(self) -> None:
        """The background sync, every `sync_seconds` (and once a second while the store is away)."""
        while True:
            interval = self.settings.sync_seconds if self.up else max(1.0, self.settings.sync_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the syncing
                log.exception("fleet sync failed")

    async def close(self) -> None:
        """Write what is unwritten (best effort), stop the loop, close the connection."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
            self._loop_task = None
        if self.client is not None and self.in_use:
            with contextlib.suppress(Exception):
                await self.sync_once()
                if any(not s.based and not s.written for s in self.ledger.spends.values()):
                    await self.sync_once()  # entries that read their base just now write after it
            await self.client.close()

    # ------------------------------------------------------------------------------------------ stats

    def figures(self) -> FleetFigures | None:
        """The fleet part of `/stats`: None when no policy of this process has used fleet limits."""
        if not self.in_use:
            return None
        open_ = sorted(p for p, mode in self._failing_policies.items() if mode == "open")
        closed = sorted(p for p, mode in self._failing_policies.items() if mode == "closed")
        store = "unconfigured" if self.client is None else ("up" if self.up else "down")
        budgets = [
            BudgetFigures(
                policy=spend.policy,
                tenant=spend.tenant,
                period=period,
                window=spend.window,
                spent_usd=round(spend.known, 6),
                soft_usd=spend.budget.soft_usd,
                hard_usd=spend.budget.hard_usd,
            )
            for spend, period in self.ledger.budget_figures()
        ]
        return FleetFigures(
            store=store,
            fail_open_policies=open_,
            fail_closed_policies=closed,
            store_errors=self.errors,
            budgets=budgets,
        )
