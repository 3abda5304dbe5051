"""Rate limits of a sidecar: per-tenant token buckets, endpoint buckets and the retry budget.

Tenant buckets stop one tenant from starving the others (or forcing escalation to expensive tiers by
flooding); the retry budget stops retries from multiplying load on an upstream that is already failing.

Tenant buckets hold per pod: the workers of a multi-process sidecar share one fixed-size table in a
file the parent creates before it starts them (`TenantTable`), each worker maps it and takes a file
lock around the few reads and writes of one check, so two workers never double a limit and no request
waits for another process. The table is bounded (a flood of tenant names cannot grow memory): a new
tenant takes a free slot, else a slot whose bucket is full again (dropping it loses nothing), else the
least recently used one of its probe window; an evicted tenant starts again with a full bucket. The
endpoint buckets and the retry budget stay per process.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import time
from pathlib import Path

from modelroute_contract import PolicyConfig, TenantLimit


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


TENANT_SLOTS = 8192
"""Buckets a sidecar keeps (about 450 KiB shared by its workers): more tenants than are active
within a minute are not expected; beyond that the least recently used are evicted."""
PROBE = 8
"""Slots a tenant may occupy, from its hash on: eviction picks among these."""
TENANT_TABLE_FILE = "tenant-buckets"
"""The shared table's file name in a multi-process sidecar's private control directory."""
_MAGIC = b"mrtenant1\0\0\0"
_FREE = bytes(16)
_HEADER = struct.Struct("12sI")
_SLOT = struct.Struct("16s5d")
"""Key digest; request tokens, estimated tokens, refill stamp, when both are full again, last use."""


class TenantTable:
    """A fixed table of tenant buckets in shared memory (a mapped file), or private to one process."""

    def __init__(self, memory: mmap.mmap, slots: int, fd: int | None) -> None:
        self._memory = memory
        self.slots = slots
        self._fd = fd
        """The mapped file, locked around each check; None for a private table (one process)."""

    @classmethod
    def private(cls, slots: int = TENANT_SLOTS) -> TenantTable:
        """A table for a single-process sidecar (anonymous memory, no lock)."""
        memory = mmap.mmap(-1, _HEADER.size + slots * _SLOT.size)
        memory[: _HEADER.size] = _HEADER.pack(_MAGIC, slots)
        return cls(memory, slots, None)

    @staticmethod
    def create(path: Path, slots: int = TENANT_SLOTS) -> None:
        """Create the shared table file (the parent, before any worker starts); every bucket empty."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _HEADER.size + slots * _SLOT.size)  # zeros: every slot free
            os.pwrite(fd, _HEADER.pack(_MAGIC, slots), 0)
        finally:
            os.close(fd)

    @classmethod
    def open(cls, path: Path) -> TenantTable:
        """Map the shared table a parent created (a worker, at start)."""
        fd = os.open(path, os.O_RDWR)
        memory = mmap.mmap(fd, os.fstat(fd).st_size)
        magic, slots = _HEADER.unpack_from(memory, 0)
        if magic != _MAGIC or len(memory) != _HEADER.size + slots * _SLOT.size:
            raise ValueError(f"{path} is not a tenant bucket table")
        return cls(memory, slots, fd)

    def close(self) -> None:
        self._memory.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def occupied(self) -> int:
        """Slots in use (for tests and diagnostics)."""
        return sum(
            1
            for i in range(self.slots)
            if _SLOT.unpack_from(self._memory, _HEADER.size + i * _SLOT.size)[0] != _FREE
        )

    def take(self, key: bytes, limit: TenantLimit, tokens: int, now: float) -> float:
        """0 when one request of `tokens` may go under `limit` (and is counted in the bucket of
        `key`), else the seconds to wait; one lock around a handful of reads and writes."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            return self._take(key, limit, tokens, now)
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _take(self, key: bytes, limit: TenantLimit, tokens: int, now: float) -> float:
        memory, slots = self._memory, self.slots
        start = int.from_bytes(key[:8], "little") % slots
        offset = victim = -1
        victim_rank = (2, math.inf)
        for probe in range(PROBE):
            at = _HEADER.size + ((start + probe) % slots) * _SLOT.size
            slot_key, _, _, _, full_at, used = _SLOT.unpack_from(memory, at)
            if slot_key == key:
                offset = at
                break
            if slot_key == _FREE:  # slots are overwritten, never freed: the key is not further on
                victim = at
                break
            # buckets full again first (dropping them loses nothing), then the least recently used
            rank = (1, used) if full_at <= now else (2, used)
            if rank < victim_rank:
                victim, victim_rank = at, rank
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        if offset < 0:
            offset = victim  # a new or evicted tenant starts full
            request_level = float(rpm or 0)
            token_level = float(tpm or 0)
        else:
            _, request_level, token_level, stamp, _, _ = _SLOT.unpack_from(memory, offset)
            elapsed = max(0.0, now - stamp)
            if rpm is not None:
                request_level = min(float(rpm), request_level + elapsed * rpm / 60.0)
            if tpm is not None:
                token_level = min(float(tpm), token_level + elapsed * tpm / 60.0)
        wait = 0.0
        if rpm is not None and request_level < 1:
            wait = (1 - request_level) * 60.0 / rpm
        if tpm is not None:
            # an oversized request waits for a full bucket, then may take it below zero
            missing = min(float(tokens), float(tpm)) - token_level
            if missing > 0:
                wait = max(wait, missing * 60.0 / tpm)
        if wait == 0.0:
            if rpm is not None:
                request_level -= 1
            if tpm is not None:
                token_level -= tokens  # may go negative for oversized requests: later ones wait
        full_in = 0.0
        if rpm is not None:
            full_in = (rpm - request_level) * 60.0 / rpm
        if tpm is not None:
            full_in = max(full_in, (tpm - token_level) * 60.0 / tpm)
        _SLOT.pack_into(memory, offset, key, request_level, token_level, now, now + full_in, now)
        return wait


def bucket_key(policy: PolicyConfig, limit: TenantLimit, tenant: str) -> bytes:
    """The table key of one tenant under one limit of one policy: a changed limit is a new bucket."""
    rates = f"{limit.requests_per_minute}\0{limit.tokens_per_minute}"
    text = f"{policy.name}\0{limit.tenant_tier}\0{rates}\0{tenant}"
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return digest if digest != _FREE else b"\1" + digest[1:]  # all zeros marks a free slot


class TenantLimiter:
    """Token buckets per (policy, limit, tenant) on requests and estimated tokens, in a `TenantTable`
    (shared by the workers of a pod, or private to a single-process sidecar)."""

    def __init__(self, table: TenantTable | None = None) -> None:
        self.table = table if table is not None else TenantTable.private()

    def check(self, policy: PolicyConfig, tenant: str, tier: str, tokens: int) -> float:
        """0 when the request may go (and is counted), else the seconds to wait before retrying."""
        if not policy.tenant_limits:
            return 0.0
        limit = select_limit(policy, tier)
        if limit is None or (limit.requests_per_minute is None and limit.tokens_per_minute is None):
            return 0.0
        return self.table.take(bucket_key(policy, limit, tenant), limit, tokens, time.monotonic())


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
