"""Tenant buckets in a fixed table: shared by processes that map one file, bounded in size (a flood
of tenant names evicts, never grows), and an evicted tenant starts full."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from modelroute_contract import PolicyConfig, TenantLimit
from modelroute_sidecar.ratelimit import TenantLimiter, TenantTable

LIMIT = TenantLimit(requests_per_minute=60)
POLICY = PolicyConfig(name="p", virtual_models=("auto",), rules=(), tenant_limits=(LIMIT,))


def admitted(limiter: TenantLimiter, tenant: str, attempts: int) -> int:
    return sum(limiter.check(POLICY, tenant, "", 10) == 0 for _ in range(attempts))


def test_a_bucket_admits_its_burst_then_waits_and_refills() -> None:
    limiter = TenantLimiter()
    assert admitted(limiter, "acme", 100) == 60  # one minute of quota is the burst
    wait = limiter.check(POLICY, "acme", "", 10)
    assert 0 < wait <= 1.0  # one request per second refills
    assert admitted(limiter, "other", 1) == 1  # tenants do not share a bucket


def _hammer(path: str, attempts: int, results: multiprocessing.Queue[int]) -> None:
    limiter = TenantLimiter(TenantTable.open(Path(path)))
    results.put(admitted(limiter, "acme", attempts))


def test_processes_mapping_one_table_share_one_bucket(tmp_path: Path) -> None:
    path = tmp_path / "tenant-buckets"
    TenantTable.create(path)
    results: multiprocessing.Queue[int] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_hammer, args=(str(path), 200, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    # 60 of burst plus at most what refills (1/s) while the two run; never 2 x 60
    assert 60 <= sum(counts) <= 63, counts


def test_a_flood_of_tenant_names_is_bounded_and_an_evicted_tenant_starts_full() -> None:
    table = TenantTable.private(slots=64)
    limiter = TenantLimiter(table)
    assert admitted(limiter, "victim", 60) == 60
    assert limiter.check(POLICY, "victim", "", 10) > 0
    for i in range(10_000):
        limiter.check(POLICY, f"flood-{i}", "", 10)
    assert table.occupied() == 64  # the table never grows
    assert admitted(limiter, "victim", 60) == 60  # evicted: starts with a full bucket again


def test_a_bucket_full_again_is_evicted_before_a_busy_one() -> None:
    table = TenantTable.private(slots=8)  # one probe window: every tenant competes for the same slots
    limiter = TenantLimiter(table)
    now = time.monotonic()
    for i in range(8):  # fill the table; idle tenants whose one request has long refilled
        table.take(bytes([i + 1]) * 16, LIMIT, 10, now - 120)
    assert admitted(limiter, "busy", 60) == 60
    for i in range(7):  # seven new tenants take the idle slots, never the busy one
        limiter.check(POLICY, f"new-{i}", "", 10)
    assert limiter.check(POLICY, "busy", "", 10) > 0  # still empty: it was not evicted
