"""Shadow figures in `/stats`: absent until a rule mirrored a request, the two sides and the skips per
(policy, rule, shadow endpoint), summed over the workers of a pod like every other counter."""

from __future__ import annotations

from modelroute_contract.stats import LATENCY_BUCKETS_MS, StatsSnapshot
from modelroute_sidecar.stats import EndpointStats, merge_snapshots


def test_shadow_figures_are_in_the_snapshot_and_sum_over_workers() -> None:
    one, two = EndpointStats(), EndpointStats()
    assert "shadows" not in one.snapshot(pod="p", config_version="v").to_json()  # absent until used
    entry = one.shadows.entry("main", "default", "next")
    entry.primary.add(40.0, False, 12, 5)
    entry.shadow.add(700.0, True, 0, 0)
    two.shadows.entry("main", "default", "next").shadow.add(3.0, False, 12, 7)
    two.shadows.skip("main", "default", "next", "busy")
    two.shadows.skip("main", "default", "next", "residency")
    one.shadows.skip("main", "default", "next", "busy")
    merged = merge_snapshots([s.snapshot(pod="p", config_version="v").to_json() for s in (one, two)])
    (figures,) = merged.to_json()["shadows"]
    assert (figures["policy"], figures["rule"], figures["endpoint"]) == ("main", "default", "next")
    assert figures["skipped"] == {"busy": 2, "residency": 1}
    primary, shadow = figures["primary"], figures["shadow"]
    assert (primary["requests"], primary["errors"], primary["tokensIn"], primary["tokensOut"]) == (
        1,
        0,
        12,
        5,
    )
    assert (shadow["requests"], shadow["errors"], shadow["latencySumMs"], shadow["tokensOut"]) == (
        2,
        1,
        703.0,
        7,
    )
    # cumulative buckets: 3 ms falls in the 5 ms bucket, 700 ms in the 1,000 ms one
    buckets = dict(zip([*LATENCY_BUCKETS_MS, float("inf")], shadow["latencyBuckets"], strict=True))
    assert (buckets[2.5], buckets[5], buckets[500], buckets[1000], buckets[float("inf")]) == (0, 1, 1, 2, 2)
    # the operator reads it back with the contract's model
    assert StatsSnapshot.model_validate(merged.to_json()).shadows[0].shadow.requests == 2
