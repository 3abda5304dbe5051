"""Shadow traffic: the pure choice of whether a request is mirrored, and to which replica.

A rule with `shadow` copies `percent` of its requests to another endpoint. Whether a request is one of
them is a stable hash of its request id (BLAKE2b via the canary's `sticky_bucket`, keyed by policy and
rule), so a test, a replay or `modelroute explain` predicts it. The replica comes from the rule's
`RouteTable` for the request's data class, whose shadow list `index.build_table` filtered with the
very residency, health and weight filters the targets went through: residency is decided by the same
table lookup as a primary pick, never here. What is left to this module is per request: the
capabilities of a non-streamed copy, passive ejection, then the weighted pick among the best-ranked
(locality) replicas of `scorers.pick_weighted`, as for a target.

A copy the filters leave nowhere to go is skipped with a reason (`residency` when no replica of the
shadow endpoint may take the request's data at all, `unavailable` when the allowed ones are down,
ejected or lack a capability). Sending, the concurrency bound and the figures are the sidecar's
(`modelroute_sidecar.shadow`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Literal, NamedTuple

from modelroute_contract import ShadowTraffic

from .canary import sticky_bucket
from .candidates import Candidate
from .filters import capability_drop
from .index import RouteTable
from .model import Choice, HealthView, RequestFeatures
from .scorers import pick_weighted

ShadowSkip = Literal["", "residency", "unavailable"]


class ShadowPick(NamedTuple):
    """A request the rule mirrors: where its copy goes, or why it cannot go anywhere. (A named tuple: a
    frozen dataclass costs ~1 µs to build, a tenth of a decision's budget for an immutable record.)"""

    endpoint: str
    """The shadow endpoint."""
    max_concurrent: int
    """The rule's bound on copies in flight (per worker)."""
    choice: Choice | None = None
    """The replica the copy goes to; None when skipped."""
    skipped: ShadowSkip = ""


def shadow_bucket(policy: str, rule: str, request_id: str) -> float:
    """Where a request falls in [0, 100) for a rule's shadow: it is mirrored when below `percent`."""
    return sticky_bucket(f"shadow\x00{policy}\x00{rule}", request_id)


def sampled(shadow: ShadowTraffic, policy: str, rule: str, request_id: str) -> bool:
    """Whether the request is one of the `percent` the rule mirrors."""
    if shadow.percent <= 0.0:
        return False
    return shadow.percent >= 100.0 or shadow_bucket(policy, rule, request_id) < shadow.percent


def pick_shadow(
    shadow: ShadowTraffic,
    table: RouteTable,
    features: RequestFeatures,
    health: HealthView,
    rng: random.Random,
) -> ShadowPick:
    """The replica a sampled request's copy goes to, from the rule's table for the request's data class:
    its shadow candidates are already residency-compliant, healthy and weighted, in locality order."""
    if table.shadow_compliant == 0:
        return ShadowPick(shadow.endpoint, shadow.max_concurrent, skipped="residency")
    copy = features
    summary = table.shadow_summary
    if features.stream and not summary.streaming:  # the copy is not streamed: judge it as sent
        copy = dataclasses.replace(features, stream=False)
    kept: Sequence[Candidate] = table.shadow
    if not summary.all_capable(copy):
        kept = [c for c in kept if capability_drop(c, copy) is None]
    if kept and health.any_ejected():
        kept = [c for c in kept if not health.is_ejected(c.endpoint.name, c.replica)]
    if not kept:
        return ShadowPick(shadow.endpoint, shadow.max_concurrent, skipped="unavailable")
    # the weighted pick among the best-ranked replicas, as for a target
    return ShadowPick(shadow.endpoint, shadow.max_concurrent, choice=kept[pick_weighted(kept, rng)].choice)
