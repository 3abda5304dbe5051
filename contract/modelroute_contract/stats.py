"""The `/stats` document a sidecar serves and the operator's canary analysis reads, and (re-exported from
`histogram`) the histogram math both sides share.

Counters and histogram buckets are cumulative since the sidecar process started, so the operator gets a
windowed view (one canary step) by diffing two snapshots, the way Prometheus' `rate()` does; `startedAt`
tells it when a sidecar restarted (counters went back to zero). Unknown fields are ignored rather than
refused: a newer sidecar may report more than an older operator reads.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Re-exported: the histogram math was defined here first, and both sides still import it from here.
from .histogram import LATENCY_BUCKETS_MS as LATENCY_BUCKETS_MS
from .histogram import cumulative as cumulative
from .histogram import histogram_quantile as histogram_quantile
from .histogram import per_bucket as per_bucket


class StatsModel(BaseModel):
    """Base of the stats document: camelCase on the wire, unknown fields ignored (version skew)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
    )


class Figures(StatsModel):
    """Cumulative attempt figures of one endpoint or replica."""

    requests: int = 0
    errors: int = 0
    """Failed attempts: connect errors, timeouts, 5xx and 429 from the upstream."""
    client_errors: int = 0
    """4xx answers (other than 429) passed back to the client: the request's fault, not the model's."""
    error_rate: float = 0.0
    latency_sum_ms: float = 0.0
    latency_buckets: list[int] = Field(default_factory=list)
    """Cumulative counts per bucket of `StatsSnapshot.latency_buckets_ms`, the +Inf bucket last."""
    p95_ms: float | None = None
    ejections: int = Field(default=0, exclude_if=lambda value: not value)
    """Times this sidecar took the replica (summed over the endpoint's replicas for an endpoint) out of
    rotation for consecutive failed attempts. An ejected replica gets no requests, so its error rate
    stops growing: the canary analysis reads this to see a candidate the sidecars stopped sending to.
    Absent when zero, and from sidecars older than the field (read as zero)."""


class ReplicaFigures(Figures):
    """Figures of one replica of an endpoint."""

    region: str = ""


class EndpointFigures(Figures):
    """Figures of one endpoint, with its replicas'."""

    replicas: dict[str, ReplicaFigures] = Field(default_factory=dict)


class BudgetFigures(StatsModel):
    """What a sidecar knows of one spend budget: the fleet's total as of its last sync with the store
    plus its own spend since."""

    policy: str
    tenant: str = ""
    """Empty for a policy-wide budget."""
    period: Literal["day", "month"] = "day"
    window: str = ""
    """The period it counts: `2026-12-02` or `2026-12`."""
    spent_usd: float = 0.0
    soft_usd: float | None = None
    hard_usd: float = 0.0


class FleetFigures(StatsModel):
    """The fleet store as a sidecar sees it (absent when no policy uses fleet limits)."""

    store: Literal["up", "down", "unconfigured"] = "up"
    """`down` when any worker cannot reach the store; `unconfigured` when a policy has fleet limits but
    the sidecar was given no store."""
    fail_open_policies: list[str] = Field(default_factory=list)
    """Policies serving under per-process limits right now because the store is unreachable."""
    fail_closed_policies: list[str] = Field(default_factory=list)
    """Policies refusing their covered requests right now because the store is unreachable."""
    store_errors: int = 0
    """Failed store calls since start (cumulative)."""
    budgets: list[BudgetFigures] = Field(default_factory=list)
    """Budgets of the current periods of the tenants this sidecar served (bounded, highest spend first)."""


class FeedbackFigures(StatsModel):
    """Quality feedback (`POST /v1/feedback`) on the requests one rule sent to one endpoint: cumulative,
    so the operator diffs two snapshots like the other counters; the mean is `score_sum / count`."""

    policy: str
    rule: str
    endpoint: str
    count: int = 0
    """Feedback posts taken."""
    score_sum: float = 0.0
    """Sum of their scores (each 0-1)."""


class ShadowSide(StatsModel):
    """One side of a shadow comparison: the requests a rule mirrored, as its primary served them or as the
    shadow endpoint answered the copies (cumulative)."""

    requests: int = 0
    errors: int = 0
    """Primary: requests the client got no answer for; shadow: copies that failed (connect, timeout,
    4xx, 5xx)."""
    latency_sum_ms: float = 0.0
    latency_buckets: list[int] = Field(default_factory=list)
    """Cumulative counts per bucket of `StatsSnapshot.latency_buckets_ms`, the +Inf bucket last."""
    tokens_in: int = 0
    tokens_out: int = 0


class ShadowFigures(StatsModel):
    """Shadow traffic of one (policy, rule, shadow endpoint): the primary's figures on exactly the requests
    that were copied beside the shadow's figures on the copies, so the two compare request for request.
    Quality feedback is not attributed to the shadow: a client scores the answer it got, the primary's."""

    policy: str
    rule: str
    endpoint: str
    """The shadow endpoint."""
    primary: ShadowSide = Field(default_factory=ShadowSide)
    shadow: ShadowSide = Field(default_factory=ShadowSide)
    """Copies sent (a copy in flight is counted when it ends)."""
    skipped: dict[str, int] = Field(default_factory=dict)
    """Copies not sent, by reason: `busy` (maxConcurrent in flight), `rate-limited` (the shadow
    endpoint's maxRequestsPerMinute), `client-closed` (the client abandoned the request), `residency` (no
    replica of the shadow endpoint may take the request's data), `unavailable` (its allowed replicas are
    unhealthy, ejected or lack a capability the request needs)."""


class BanditArmFigures(StatsModel):
    """One arm of a bandit rule (`strategy: bandit`): its Beta posterior and how often it was picked first.
    Cumulative since the rule's targets last changed (or the process started); alpha - 1 is the reward
    seen, beta - 1 the shortfall (1 - score of each feedback post, 1 per failed attempt)."""

    policy: str
    rule: str
    endpoint: str
    alpha: float = 1.0
    beta: float = 1.0
    pulls: int = 0


class StatsSnapshot(StatsModel):
    """`GET /stats` on a sidecar's admin port: figures by endpoint since the process started."""

    pod: str = ""
    config_version: str = ""
    """Config every worker runs; empty when the workers disagree (see `worker_config_versions`)."""
    workers: int = 1
    started_at: float = 0.0
    """Unix time the (earliest) worker started: counters restart from zero after it changes."""
    collected_at: float = 0.0
    latency_buckets_ms: list[float] = Field(default_factory=list)
    """Finite upper bounds of the latency histogram."""
    endpoints: dict[str, EndpointFigures] = Field(default_factory=dict)
    worker_config_versions: list[str] | None = Field(default=None, exclude_if=lambda value: value is None)
    """Each worker's config version, in a multi-worker sidecar's document only."""
    fleet: FleetFigures | None = Field(default=None, exclude_if=lambda value: value is None)
    """The fleet store and budgets, when a policy uses fleet limits."""
    feedback: list[FeedbackFigures] = Field(default_factory=list, exclude_if=lambda value: not value)
    """Quality feedback per (policy, rule, endpoint), sorted; absent until feedback was posted."""
    shadows: list[ShadowFigures] = Field(default_factory=list, exclude_if=lambda value: not value)
    """Shadow traffic per (policy, rule, shadow endpoint), sorted; absent until a rule mirrored a request."""
    bandit: list[BanditArmFigures] = Field(default_factory=list, exclude_if=lambda value: not value)
    """Each arm of each bandit rule, sorted; absent when the config has no bandit rule."""

    def to_json(self) -> dict[str, object]:
        """The document as served (JSON-ready, camelCase)."""
        return self.model_dump(mode="json", by_alias=True)
