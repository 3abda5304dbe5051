"""The canary analysis' traffic figures, pure: the sidecars' `/stats` documents summed per side, the
counters stored in status as a step's baseline, and the window since then. Quantiles are the contract's
histogram math (`modelroute_contract.stats.histogram_quantile`), shared with the sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from modelroute_contract.stats import (
    EndpointFigures,
    ShadowFigures,
    ShadowSide,
    StatsSnapshot,
    histogram_quantile,
    per_bucket,
)
from modelroute_operator.logic.resources import (
    SideCounters,
)

INF = math.inf

# ------------------------------------------------------------------------------------- traffic figures


@dataclass(frozen=True)
class SideStats:
    """Cumulative figures of one endpoint, summed over the namespace's sidecars."""

    requests: int
    errors: int
    latency_buckets: tuple[tuple[float, int], ...]
    """Cumulative histogram, like Prometheus: (upper bound in seconds, count), the `+Inf` bucket last."""
    feedback: int = 0
    """Quality feedback posts on the endpoint (`POST /v1/feedback`), over every rule."""
    feedback_score_sum: float = 0.0
    ejections: int = 0
    """Times the sidecars took one of the endpoint's replicas out of rotation (passive ejection)."""

    @property
    def mean_feedback_score(self) -> float | None:
        """Mean quality score (0-1); None without feedback."""
        return min(1.0, max(0.0, self.feedback_score_sum / self.feedback)) if self.feedback else None


@dataclass(frozen=True)
class CanaryStats:
    """Cumulative figures of both sides of a canary."""

    stable: SideStats
    candidate: SideStats
    mirror: CanaryStats | None = None
    """The mirror phase's figures (`spec.mirror`): the target rule's shadow traffic to the candidate,
    the primary's answers to the copied requests as `stable` and the copies as `candidate`, so the two
    compare request for request. None when the caller did not ask for them."""


def quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float | None:
    """The q-quantile (0-1) of a cumulative histogram, interpolated linearly within the bucket as
    Prometheus' `histogram_quantile` does; None without observations. A quantile in the `+Inf` bucket
    is the highest finite bound. The math is the contract's (`stats.histogram_quantile`), shared with
    the sidecar's latency budgets."""
    if len(buckets) < 2 or buckets[-1][0] != INF:
        return None
    bounds = [bound for bound, _ in buckets[:-1]]
    return histogram_quantile(q, bounds, per_bucket([count for _, count in buckets]))


def p95(buckets: Sequence[tuple[float, int]]) -> float | None:
    """95th percentile (seconds) of a cumulative histogram; None without observations."""
    return quantile(0.95, buckets)


def sum_stats(
    snapshots: Iterable[StatsSnapshot], stable: str, candidate: str, mirror_of: tuple[str, str] | None = None
) -> CanaryStats:
    """Sum the sidecars' `/stats` documents into the figures of the canary's two endpoints, and, with
    `mirror_of` = (policy, rule), the figures of that rule's shadow traffic to the candidate.

    An endpoint a sidecar has not served counts as zero there. Sidecars reporting different latency
    buckets cannot be summed bucket by bucket: that raises ValueError, and the caller holds the canary
    (passes no stats) until they agree.
    """
    docs = list(snapshots)
    mirror = None
    if mirror_of is not None:
        policy, rule = mirror_of

        def shadow(doc: StatsSnapshot) -> ShadowFigures | None:
            return next(
                (s for s in doc.shadows if (s.policy, s.rule, s.endpoint) == (policy, rule, candidate)), None
            )

        mirror = CanaryStats(
            _sum_side(docs, lambda doc: _side(shadow(doc), "primary")),
            _sum_side(docs, lambda doc: _side(shadow(doc), "shadow")),
        )
    return CanaryStats(
        _sum_side(docs, lambda doc: doc.endpoints.get(stable), stable),
        _sum_side(docs, lambda doc: doc.endpoints.get(candidate), candidate),
        mirror,
    )


def _side(figures: ShadowFigures | None, side: str) -> ShadowSide | None:
    return None if figures is None else getattr(figures, side)


def _sum_side(
    docs: Sequence[StatsSnapshot],
    figures_of: Callable[[StatsSnapshot], EndpointFigures | ShadowSide | None],
    feedback_endpoint: str | None = None,
) -> SideStats:
    """One side summed over the documents: `figures_of` picks its figures in a document (None: not
    served there); feedback is counted for `feedback_endpoint` (shadow copies get none)."""
    bounds_ms: list[float] | None = None
    requests = errors = feedback = ejections = 0
    score_sum = 0.0
    counts: list[int] = []
    for doc in docs:
        for entry in doc.feedback:
            if entry.endpoint == feedback_endpoint:
                feedback += entry.count
                score_sum += entry.score_sum
        doc_bounds = list(doc.latency_buckets_ms)
        if bounds_ms is None:
            bounds_ms, counts = doc_bounds, [0] * (len(doc_bounds) + 1)
        elif doc_bounds != bounds_ms:
            raise ValueError(f"sidecar {doc.pod or '?'} reports different latency buckets")
        figures = figures_of(doc)
        if figures is None or not figures.model_fields_set:  # absent or `{}`: not served there
            continue
        cumulative = list(figures.latency_buckets)
        if len(cumulative) != len(counts):
            raise ValueError(f"sidecar {doc.pod or '?'} reports {len(cumulative)} buckets")
        requests += figures.requests
        errors += figures.errors
        ejections += getattr(figures, "ejections", 0)  # a shadow copy's side has none
        counts = [a + b for a, b in zip(counts, cumulative, strict=True)]
    if not bounds_ms and not counts:
        return SideStats(requests, errors, (), feedback, score_sum, ejections)
    bounds = [b / 1000 for b in bounds_ms or []] + [INF]
    return SideStats(
        requests, errors, tuple(zip(bounds, counts, strict=True)), feedback, score_sum, ejections
    )


# ----------------------------------------------------------------------------------- baseline (status)


def counters(side: SideStats) -> SideCounters:
    """The counters to store in status for one side (JSON has no `+Inf`, so that bound is implied)."""
    bounds = [bound for bound, _ in side.latency_buckets if bound != INF]
    counts = [count for _, count in side.latency_buckets]
    if side.latency_buckets and side.latency_buckets[-1][0] != INF:
        counts.append(counts[-1])  # no observations above the highest bound
    return SideCounters(
        requests=side.requests,
        errors=side.errors,
        latency_bounds_seconds=bounds,
        latency_buckets=counts,
        feedback=side.feedback,
        feedback_score_sum=round(side.feedback_score_sum, 6),
        ejections=side.ejections,
    )


def window(current: SideStats, start: SideCounters) -> SideStats | None:
    """Traffic since `start`; None when a counter went down or the buckets changed (a sidecar restarted,
    left, or was upgraded), since then the difference no longer means anything."""
    now = counters(current)
    if start == SideCounters():
        # Taken while no sidecar reported: everything counted since is in the window.
        start = SideCounters(
            latency_bounds_seconds=now.latency_bounds_seconds, latency_buckets=[0] * len(now.latency_buckets)
        )
    if now.latency_bounds_seconds != start.latency_bounds_seconds:
        return None
    pairs: list[tuple[float, float]] = [
        (now.requests, start.requests),
        (now.errors, start.errors),
        (now.feedback, start.feedback),
        (now.ejections, start.ejections),
    ]
    pairs.append((now.feedback_score_sum + 1e-6, start.feedback_score_sum))  # rounded when stored
    pairs += list(zip(now.latency_buckets, start.latency_buckets, strict=True))
    if any(after < before for after, before in pairs):
        return None
    bounds = [*now.latency_bounds_seconds, INF] if now.latency_buckets else []
    counts = [a - b for a, b in zip(now.latency_buckets, start.latency_buckets, strict=True)]
    return SideStats(
        now.requests - start.requests,
        now.errors - start.errors,
        tuple(zip(bounds, counts, strict=True)),
        now.feedback - start.feedback,
        max(0.0, now.feedback_score_sum - start.feedback_score_sum),
        now.ejections - start.ejections,
    )
