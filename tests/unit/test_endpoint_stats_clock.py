"""An endpoint's recent p95 (what the latency filter and budgets read) follows its rolling windows on
the injected clock: computed at most once a second, the older half-window dropped after one window,
both dropped after two, and errors never make an endpoint look fast. Passive ejections are counted in
the `/stats` figures the canary analysis sums."""

from __future__ import annotations

from modelroute_sidecar.stats import ROLLING_SECONDS, EndpointStats


def test_p95_rolls_with_the_injected_clock() -> None:
    now = [1000.0]
    stats = EndpointStats(clock=lambda: now[0], wall=lambda: 1.7e9)
    assert stats.p95_latency_ms("a") is None
    for _ in range(20):
        stats.record("a", "r1", "eu", 900.0, error=False, client_error=False)
    slow = stats.p95_latency_ms("a")
    assert slow is not None and slow >= 500
    for _ in range(200):
        stats.record("a", "r1", "eu", 5.0, error=True, client_error=False)  # fast failures: not counted
    now[0] += 1.0
    assert stats.p95_latency_ms("a") == slow
    now[0] += ROLLING_SECONDS  # the slow half-window is now the previous one: still in the p95
    stats.record("a", "r1", "eu", 5.0, error=False, client_error=False)
    still = stats.p95_latency_ms("a")
    assert still is not None and still >= 500
    now[0] += 2 * ROLLING_SECONDS  # both half-windows stale: only the new fast attempts count
    for _ in range(20):
        stats.record("a", "r1", "eu", 5.0, error=False, client_error=False)
    fast = stats.p95_latency_ms("a")
    assert fast is not None and fast < 50
    assert stats.snapshot(pod="p", config_version="v").collected_at == 1.7e9


def test_an_ejection_is_counted_on_the_endpoint_and_replica_and_summed_over_workers() -> None:
    from modelroute_contract.config import Resilience
    from modelroute_operator.logic.traffic import sum_stats
    from modelroute_sidecar.ejection import Ejections
    from modelroute_sidecar.stats import merge_snapshots

    policy = Resilience(eject_after_failures=2)
    one, two = EndpointStats(), EndpointStats()
    untouched = one.snapshot(pod="p", config_version="v").to_json()
    for stats in (one, two):
        ejections = Ejections(stats)
        for _ in range(2):
            stats.record("cand", "r1", "eu", 3.0, error=True, client_error=False)
            ejected = ejections.failed("cand", "r1", policy)
        assert ejected and ejections.is_ejected("cand", "r1")
    one.record("stable", "r1", "eu", 3.0, error=False, client_error=False)
    doc = one.snapshot(pod="p", config_version="v").to_json()
    assert (
        doc["endpoints"]["cand"]["ejections"] == 1
        and doc["endpoints"]["cand"]["replicas"]["r1"]["ejections"] == 1
    )
    assert "ejections" not in doc["endpoints"]["stable"]  # absent when zero: older readers see what they did
    assert untouched["endpoints"] == {}
    merged = merge_snapshots([s.snapshot(pod="p", config_version="v").to_json() for s in (one, two)])
    assert merged.endpoints["cand"].ejections == 2 and merged.endpoints["cand"].replicas["r1"].ejections == 2
    # What the canary analysis reads: summed over the sidecars of the namespace.
    assert sum_stats([merged, merged], "stable", "cand").candidate.ejections == 4
