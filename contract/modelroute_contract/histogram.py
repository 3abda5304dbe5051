"""The histogram math the sidecar's `/stats` document and the operator's canary analysis share: the
sidecar's latency buckets and Prometheus-style quantiles.

Apart from `stats` (whose models it would otherwise bring along): a sidecar records and reads its latency
histograms on every request, but builds the `/stats` models only when `/stats` is asked for. `stats`
re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000,
)  # fmt: skip
"""Upper bounds (ms) of the sidecar's latency histogram; a last, implicit bucket is +Inf."""


def histogram_quantile(
    q: float,
    bounds: Sequence[float],
    counts: Sequence[int],
    *,
    overflow: Literal["highest-bound", "double"] = "highest-bound",
) -> float | None:
    """The q-quantile (0-1) of a histogram: finite upper `bounds` and per-bucket (not cumulative)
    `counts`, one more than the bounds (the last bucket is +Inf). Interpolated linearly within the
    bucket, as Prometheus' `histogram_quantile` does; None without observations.

    A quantile in the +Inf bucket is the highest finite bound (`overflow="highest-bound"`, Prometheus'
    choice, used by the canary analysis) or interpolated up to twice that bound (`"double"`, the
    sidecar's latency budgets, which would rather overestimate a very slow endpoint)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = bounds[index - 1] if index > 0 else 0.0
            if index >= len(bounds):
                if overflow == "highest-bound":
                    return lower
                upper = lower * 2 or 1.0
            else:
                upper = bounds[index]
            if index == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-1] if bounds else None


def cumulative(counts: Sequence[int]) -> list[int]:
    """Per-bucket counts as cumulative ones (`le` semantics, like Prometheus)."""
    out, running = [], 0
    for count in counts:
        running += count
        out.append(running)
    return out


def per_bucket(cumulative_counts: Sequence[int]) -> list[int]:
    """Inverse of `cumulative`."""
    return [b - a for a, b in zip([0, *cumulative_counts[:-1]], cumulative_counts, strict=True)]
