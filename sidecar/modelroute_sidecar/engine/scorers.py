"""Scorers: put the surviving candidates in the order the proxy tries them.

Locality ranks a region (the sidecar's own region first, then the policy's failover order, then the
rest) once per config; candidate lists are stored sorted by rank, then weight, then name. Per request
only the first pick is random: weighted by target weight times replica weight among the best-ranked
candidates, so traffic stays local while any local replica is available and splits by weight within a
rank. Retries, fallbacks and escalations keep the stored order, which makes failover predictable.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from modelroute_contract import Locality

from .candidates import Candidate
from .model import Choice


def locality_ranks(local_region: str, locality: Locality) -> tuple[Mapping[str, int], int]:
    """Rank of each region a policy names, and the rank of every other region.

    Own region 0 (when `prefer_local` and the region is known), then 1, 2, … in `failover_order`; any
    region not listed comes after all of them."""
    ranks: dict[str, int] = {}
    for index, region in enumerate(locality.failover_order):
        ranks.setdefault(region, index + 1)
    if locality.prefer_local and local_region:
        ranks[local_region] = 0
    return ranks, len(locality.failover_order) + 1


def sort_key(candidate: Candidate) -> tuple[int, int, str, str]:
    """Stored order within a list: best locality, then heaviest, then by name for determinism."""
    return (candidate.rank, -candidate.weight, candidate.endpoint.name, candidate.replica)


def pick_weighted(candidates: Sequence[Candidate], rng: random.Random) -> int:
    """Index of the first pick: weighted random among the best-ranked candidates (`candidates` is sorted
    by `sort_key`, so they lead the list)."""
    best = candidates[0].rank
    end = 1
    while end < len(candidates) and candidates[end].rank == best:
        end += 1
    if end == 1:
        return 0
    total = 0
    for candidate in candidates[:end]:
        total += candidate.weight
    point = rng.random() * total
    for index in range(end):
        point -= candidates[index].weight
        if point < 0:
            return index
    return end - 1


def build_plan(
    primary: Sequence[Candidate], fallback: Sequence[Candidate], rng: random.Random
) -> tuple[Choice, ...]:
    """The plan: the picked primary, the other targets' replicas as retries (in locality order), then the
    fallback replicas. With no target left, the plan starts with the fallback."""
    if not primary:
        return tuple([c.choice for c in fallback])  # list comprehensions are inlined, generators not
    first = pick_weighted(primary, rng)
    plan = [primary[first].first_choice]
    plan.extend([c.choice for i, c in enumerate(primary) if i != first])
    plan.extend([c.choice for c in fallback])
    return tuple(plan)


def plan_from(primary: Sequence[Candidate], fallback: Sequence[Candidate], first: int) -> tuple[Choice, ...]:
    """The plan with `primary[first]` picked (by the bandit): the same order `build_plan` makes."""
    plan = [primary[first].first_choice]
    plan.extend([c.choice for i, c in enumerate(primary) if i != first])
    plan.extend([c.choice for c in fallback])
    return tuple(plan)
