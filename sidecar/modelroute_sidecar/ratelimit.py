"""Rate limits of one sidecar process: per-tenant token buckets, endpoint buckets and the retry budget.

Tenant buckets stop one tenant from starving the others (or forcing escalation to expensive tiers by
flooding); the retry budget stops retries from multiplying load on an upstream that is already failing.
All state is per process and in memory: limits are per sidecar, as the contract documents.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from .contract import PolicyConfig, TenantLimit


class TokenBucket:
    """A bucket of `capacity` tokens refilled at `rate` tokens per second."""

    __slots__ = ("_stamp", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` tokens are there (0 when they are now); takes nothing."""
        self._refill(now)
        missing = min(amount, self.capacity) - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        """Remove `amount` tokens (after `wait_for` said 0); may go negative for oversized requests."""
        self._tokens -= amount


@dataclass(slots=True)
class _TenantBuckets:
    limit: TenantLimit
    requests: TokenBucket | None
    tokens: TokenBucket | None


def _per_minute_bucket(per_minute: int | None) -> TokenBucket | None:
    # a bucket holds one minute of quota: a tenant may burst what it could send in a minute
    return None if per_minute is None else TokenBucket(per_minute / 60.0, float(per_minute))


def select_limit(policy: PolicyConfig, tier: str) -> TenantLimit | None:
    """The limit for a tenant of `tier`: the one naming the tier, else the default (empty tier)."""
    default = None
    for limit in policy.tenant_limits:
        if limit.tenant_tier == tier and tier:
            return limit
        if not limit.tenant_tier:
            default = limit
    return default


class TenantLimiter:
    """Token buckets per (policy, tenant) on requests and estimated tokens."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _TenantBuckets] = {}

    def check(self, policy: PolicyConfig, tenant: str, tier: str, tokens: int) -> float:
        """0 when the request may go (and is counted), else the seconds to wait before retrying."""
        if not policy.tenant_limits:
            return 0.0
        limit = select_limit(policy, tier)
        if limit is None:
            return 0.0
        key = (policy.name, tenant)
        buckets = self._buckets.get(key)
        # a new config may change the limit; `is` first: comparing pydantic models field by field is slow
        if buckets is None or (buckets.limit is not limit and buckets.limit != limit):
            buckets = _TenantBuckets(
                limit,
                _per_minute_bucket(limit.requests_per_minute),
                _per_minute_bucket(limit.tokens_per_minute),
            )
            self._buckets[key] = buckets
        now = time.monotonic()
        wait = 0.0
        if buckets.requests is not None:
            wait = buckets.requests.wait_for(1, now)
        if buckets.tokens is not None:
            wait = max(wait, buckets.tokens.wait_for(tokens, now))
        if wait > 0:
            return wait
        if buckets.requests is not None:
            buckets.requests.take(1)
        if buckets.tokens is not None:
            buckets.tokens.take(tokens)
        return 0.0


class EndpointLimiter:
    """The endpoint-wide request limit (`maxRequestsPerMinute`), enforced per sidecar."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, endpoint: str, per_minute: int | None) -> bool:
        """Count one request on `endpoint`; False when its bucket is empty."""
        if per_minute is None:
            return True
        bucket = self._buckets.get(endpoint)
        if bucket is None or bucket.capacity != per_minute:
            bucket = _per_minute_bucket(per_minute)
            assert bucket is not None
            self._buckets[endpoint] = bucket
        if bucket.wait_for(1, time.monotonic()) > 0:
            return False
        bucket.take(1)
        return True


class RetryBudget:
    """Retries allowed as a share of recent requests, over a sliding window of one-second slots.

    A retry is allowed while retries in the window stay under `percent` of requests in the window, or
    under the floor (`floor_per_second` x window), whichever is larger: a quiet sidecar can still retry
    its rare failures, a busy one cannot multiply an outage.
    """

    WINDOW_SECONDS = 10

    def __init__(self, floor_per_second: float) -> None:
        self._floor = floor_per_second * self.WINDOW_SECONDS
        self._requests = [0] * self.WINDOW_SECONDS
        self._retries = [0] * self.WINDOW_SECONDS
        self._slot_second = [0] * self.WINDOW_SECONDS

    def _slot(self) -> int:
        second = math.floor(time.monotonic())
        index = second % self.WINDOW_SECONDS
        if self._slot_second[index] != second:
            self._slot_second[index] = second
            self._requests[index] = 0
            self._retries[index] = 0
        return index

    def _window(self, counts: list[int]) -> int:
        oldest = math.floor(time.monotonic()) - self.WINDOW_SECONDS
        return sum(c for c, s in zip(counts, self._slot_second, strict=True) if s > oldest)

    def record_request(self) -> None:
        """Count a client request (not its retries)."""
        self._requests[self._slot()] += 1

    def try_spend(self, percent: float) -> bool:
        """Take one retry if the budget allows it."""
        slot = self._slot()
        allowed = max(self._floor, self._window(self._requests) * percent / 100.0)
        if self._window(self._retries) >= allowed:
            return False
        self._retries[slot] += 1
        return True
