"""Per-endpoint and per-replica figures of upstream attempts, for canary analysis and latency budgets.

The operator reads `/stats` on the admin port of every sidecar and sums them; the document is the
contract's `StatsSnapshot` (`modelroute_contract.stats`), which says how to read it. A short rolling
window also gives the engine each endpoint's recent p95 latency for latency budgets.

The contract's stats models are imported where a document is built or read, not with this module: only
`/stats` needs them, and a pod whose `/stats` nobody reads (no canary, no fleet limits) saves their ~1.5
MiB. Recording an attempt uses only `modelroute_contract.histogram`.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelroute_contract.files import Clock
from modelroute_contract.histogram import LATENCY_BUCKETS_MS, cumulative, histogram_quantile, per_bucket

from .bandit import merge_arms
from .feedback import FeedbackTally

if TYPE_CHECKING:
    from modelroute_contract.stats import Figures as FiguresDocument
    from modelroute_contract.stats import ShadowFigures, ShadowSide, StatsSnapshot

ROLLING_SECONDS = 30.0
"""Each half of the rolling window behind `p95_latency_ms`: it covers the last 30 to 60 seconds."""


def percentile_ms(counts: list[int], q: float) -> float | None:
    """The q-quantile (0-1) of a histogram of per-bucket (not cumulative) counts, interpolated; in the
    +Inf bucket up to twice the highest bound."""
    return histogram_quantile(q, LATENCY_BUCKETS_MS, counts, overflow="double")


@dataclass(slots=True)
class Figures:
    """Cumulative attempt figures of one endpoint or replica."""

    requests: int = 0
    errors: int = 0
    """Failed attempts: connect errors, timeouts, 5xx and 429 from the upstream."""
    client_errors: int = 0
    """4xx answers (other than 429) passed back to the client: the request's fault, not the model's."""
    latency_sum_ms: float = 0.0
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    ejections: int = 0
    """Times passive ejection took the replica (or one of the endpoint's) out of rotation."""

    def add(self, latency_ms: float, error: bool, client_error: bool) -> None:
        """Count one attempt."""
        self.requests += 1
        self.errors += error
        self.client_errors += client_error
        self.latency_sum_ms += latency_ms
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def merge(self, other: Figures) -> None:
        """Add another worker's figures."""
        self.requests += other.requests
        self.errors += other.errors
        self.client_errors += other.client_errors
        self.latency_sum_ms += other.latency_sum_ms
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.ejections += other.ejections

    def document(self) -> FiguresDocument:
        """Cumulative buckets (`le` semantics, like Prometheus) so the operator can diff snapshots."""
        from modelroute_contract.stats import Figures as FiguresDocument

        p95 = percentile_ms(self.counts, 0.95)
        return FiguresDocument(
            requests=self.requests,
            errors=self.errors,
            client_errors=self.client_errors,
            error_rate=round(self.errors / self.requests, 6) if self.requests else 0.0,
            latency_sum_ms=round(self.latency_sum_ms, 3),
            latency_buckets=cumulative(self.counts),
            p95_ms=None if p95 is None else round(p95, 3),
            ejections=self.ejections,
        )

    @classmethod
    def from_document(cls, data: FiguresDocument) -> Figures:
        """Inverse of `document` (used to sum the workers of one pod)."""
        counts = per_bucket(data.latency_buckets)
        return cls(
            data.requests, data.errors, data.client_errors, data.latency_sum_ms, counts, data.ejections
        )


@dataclass(slots=True)
class SideFigures:
    """One side of a shadow comparison (see the contract's `ShadowSide`)."""

    requests: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, latency_ms: float, error: bool, tokens_in: int, tokens_out: int) -> None:
        """Count one request (or copy)."""
        self.requests += 1
        self.errors += error
        self.latency_sum_ms += latency_ms
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.tokens_in += max(0, tokens_in)
        self.tokens_out += max(0, tokens_out)

    def merge(self, data: ShadowSide) -> None:
        """Add another worker's figures."""
        self.requests += data.requests
        self.errors += data.errors
        self.latency_sum_ms += data.latency_sum_ms
        if data.latency_buckets:
            self.counts = [a + b for a, b in zip(self.counts, per_bucket(data.latency_buckets), strict=True)]
        self.tokens_in += data.tokens_in
        self.tokens_out += data.tokens_out

    def document(self) -> ShadowSide:
        from modelroute_contract.stats import ShadowSide

        return ShadowSide(
            requests=self.requests,
            errors=self.errors,
            latency_sum_ms=round(self.latency_sum_ms, 3),
            latency_buckets=cumulative(self.counts),
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
        )


@dataclass(slots=True)
class ShadowEntry:
    """Shadow figures of one (policy, rule, shadow endpoint)."""

    primary: SideFigures = field(default_factory=SideFigures)
    shadow: SideFigures = field(default_factory=SideFigures)
    skipped: dict[str, int] = field(default_factory=dict)


class ShadowTally:
    """Shadow traffic per (policy, rule, shadow endpoint) since the process started. Keys come from the
    config (a rule names one shadow endpoint), so the table is as bounded as the config."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, str], ShadowEntry] = {}

    def entry(self, policy: str, rule: str, endpoint: str) -> ShadowEntry:
        key = (policy, rule, endpoint)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = ShadowEntry()
        return entry

    def skip(self, policy: str, rule: str, endpoint: str, reason: str) -> None:
        skipped = self.entry(policy, rule, endpoint).skipped
        skipped[reason] = skipped.get(reason, 0) + 1

    def merge(self, documents: Iterable[ShadowFigures]) -> None:
        """Add another worker's figures."""
        for doc in documents:
            entry = self.entry(doc.policy, doc.rule, doc.endpoint)
            entry.primary.merge(doc.primary)
            entry.shadow.merge(doc.shadow)
            for reason, count in doc.skipped.items():
                entry.skipped[reason] = entry.skipped.get(reason, 0) + count

    def documents(self) -> list[ShadowFigures]:
        from modelroute_contract.stats import ShadowFigures

        return [
            ShadowFigures(
                policy=policy,
                rule=rule,
                endpoint=endpoint,
                primary=entry.primary.document(),
                shadow=entry.shadow.document(),
                skipped=dict(sorted(entry.skipped.items())),
            )
            for (policy, rule, endpoint), entry in sorted(self.entries.items())
        ]


@dataclass(slots=True)
class _Rolling:
    """Two half-windows of latency counts; the older is dropped when the newer is full."""

    current: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    previous: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    started: float = 0.0
    p95: float | None = None
    p95_at: float = float("-inf")  # never computed: the first ask computes it, whatever the clock reads


class EndpointStats:
    """Attempt figures by endpoint and replica since start, and each endpoint's recent p95."""

    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._clock, self._wall = clock, wall  # injected: tests step through the rolling windows
        self.started_at = wall()
        self.endpoints: dict[str, Figures] = {}
        self.replicas: dict[tuple[str, str], Figures] = {}
        self.regions: dict[tuple[str, str], str] = {}
        self._rolling: dict[str, _Rolling] = {}
        self.feedback = FeedbackTally()
        self.shadows = ShadowTally()

    def record(
        self, endpoint: str, replica: str, region: str, latency_ms: float, *, error: bool, client_error: bool
    ) -> None:
        """Count one upstream attempt."""
        figures = self.endpoints.get(endpoint)
        if figures is None:
            figures = self.endpoints[endpoint] = Figures()
        figures.add(latency_ms, error, client_error)
        key = (endpoint, replica)
        replica_figures = self.replicas.get(key)
        if replica_figures is None:
            replica_figures = self.replicas[key] = Figures()
            self.regions[key] = region
        replica_figures.add(latency_ms, error, client_error)
        if not error:  # a refused connection is fast: counting it would make a dead endpoint look quick
            self._roll(endpoint).current[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def ejected(self, endpoint: str, replica: str) -> None:
        """Count one passive ejection of `replica` (its failed attempts were recorded first)."""
        figures = self.endpoints.get(endpoint)
        if figures is None:
            figures = self.endpoints[endpoint] = Figures()
        figures.ejections += 1
        replica_figures = self.replicas.get((endpoint, replica))
        if replica_figures is not None:
            replica_figures.ejections += 1

    def _roll(self, endpoint: str) -> _Rolling:
        rolling = self._rolling.get(endpoint)
        now = self._clock()
        if rolling is None:
            rolling = self._rolling[endpoint] = _Rolling(started=now)
        if now - rolling.started >= ROLLING_SECONDS:
            stale = now - rolling.started >= 2 * ROLLING_SECONDS
            rolling.previous = [0] * len(rolling.current) if stale else rolling.current
            rolling.current = [0] * len(rolling.current)
            rolling.started = now
        return rolling

    def p95_latency_ms(self, endpoint: str) -> float | None:
        """Recent p95 of successful attempts on `endpoint`; None without recent traffic."""
        rolling = self._rolling.get(endpoint)
        if rolling is None:
            return None
        now = self._clock()
        if now - rolling.p95_at >= 1.0:  # decide() may ask per candidate per request: compute once a second
            rolling = self._roll(endpoint)
            rolling.p95 = percentile_ms(
                [a + b for a, b in zip(rolling.current, rolling.previous, strict=True)], 0.95
            )
            rolling.p95_at = now
        return rolling.p95

    def snapshot(self, *, pod: str, config_version: str, workers: int = 1) -> StatsSnapshot:
        """The `/stats` document: cumulative figures by endpoint, each with its replicas."""
        from modelroute_contract.stats import EndpointFigures, ReplicaFigures, StatsSnapshot

        endpoints: dict[str, EndpointFigures] = {}
        for name, figures in sorted(self.endpoints.items()):
            endpoints[name] = EndpointFigures(**dict(figures.document()))
        for (endpoint, replica), figures in sorted(self.replicas.items()):
            entry = ReplicaFigures(**dict(figures.document()), region=self.regions[(endpoint, replica)])
            endpoints[endpoint].replicas[replica] = entry
        return StatsSnapshot(
            pod=pod,
            config_version=config_version,
            workers=workers,
            started_at=self.started_at,
            collected_at=self._wall(),
            latency_buckets_ms=list(LATENCY_BUCKETS_MS),
            endpoints=endpoints,
            feedback=self.feedback.documents(),
            shadows=self.shadows.documents(),
        )


def merge_snapshots(snapshots: Iterable[Mapping[str, Any]]) -> StatsSnapshot:
    """Sum the `/stats` documents of the workers of one pod into one document of the same shape."""
    from modelroute_contract.stats import StatsSnapshot

    from .fleet import merge_fleet  # fleet limits' module: loaded only by a process that needs it

    docs = [StatsSnapshot.model_validate(d) for d in snapshots]
    if not docs:
        raise ValueError("no snapshots to merge")
    merged = EndpointStats()
    merged.started_at = min(d.started_at for d in docs)
    for doc in docs:
        merged.feedback.merge(doc.feedback)
        merged.shadows.merge(doc.shadows)
        for endpoint, data in doc.endpoints.items():
            merged.endpoints.setdefault(endpoint, Figures()).merge(Figures.from_document(data))
            for replica, rdata in data.replicas.items():
                key = (endpoint, replica)
                merged.replicas.setdefault(key, Figures()).merge(Figures.from_document(rdata))
                merged.regions[key] = rdata.region
    versions = sorted({d.config_version for d in docs})
    result = merged.snapshot(
        pod=docs[0].pod, config_version=versions[0] if len(versions) == 1 else "", workers=len(docs)
    )
    return result.model_copy(
        update={
            "worker_config_versions": [d.config_version for d in docs],
            "fleet": merge_fleet([d.fleet for d in docs]),
            "bandit": merge_arms(arm for d in docs for arm in d.bandit),
        }
    )
