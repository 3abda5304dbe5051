"""An endpoint's recent p95 (what the latency filter and budgets read) follows its rolling windows on
the injected clock: computed at most once a second, the older half-window dropped after one window,
both dropped after two, and errors never make an endpoint look fast."""

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
