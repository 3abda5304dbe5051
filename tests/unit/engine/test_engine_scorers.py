"""Scorers: locality ranks, the weighted first pick, and the plan's order and roles."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from engine_builders import candidate

from modelroute_contract import Locality
from modelroute_sidecar.engine.model import Role
from modelroute_sidecar.engine.scorers import build_plan, locality_ranks, pick_weighted, sort_key


@pytest.mark.parametrize(
    ("local", "prefer_local", "order", "expected"),
    [
        ("eu-west", True, ("eu-central", "us-east"), {"eu-west": 0, "eu-central": 1, "us-east": 2, "ap": 3}),
        ("eu-west", False, ("eu-central", "us-east"), {"eu-west": 3, "eu-central": 1, "us-east": 2, "ap": 3}),
        ("eu-west", True, ("eu-west", "us-east"), {"eu-west": 0, "us-east": 2, "ap": 3}),
        ("eu-west", False, ("eu-west", "us-east"), {"eu-west": 1, "us-east": 2, "ap": 3}),
        ("", True, ("us-east",), {"us-east": 1, "eu-west": 2}),
        ("eu-west", True, (), {"eu-west": 0, "us-east": 1}),
    ],
)
def test_locality_ranks(
    local: str, prefer_local: bool, order: tuple[str, ...], expected: dict[str, int]
) -> None:
    ranks, other = locality_ranks(local, Locality(prefer_local=prefer_local, failover_order=order))
    assert {region: ranks.get(region, other) for region in expected} == expected


def test_stored_order_is_rank_then_weight_then_name() -> None:
    candidates = [
        candidate("b", "1", rank=1),
        candidate("a", "2", rank=0, replica_weight=50),
        candidate("a", "1", rank=0, replica_weight=50),
        candidate("z", "1", rank=0, replica_weight=200),
    ]
    ordered = sorted(candidates, key=sort_key)
    assert [(c.endpoint.name, c.replica) for c in ordered] == [("z", "1"), ("a", "1"), ("a", "2"), ("b", "1")]


def test_weighted_pick_only_among_the_best_rank_and_by_weight() -> None:
    candidates = sorted(
        [
            candidate("a", "1", rank=0, target_weight=75),
            candidate("b", "1", rank=0, target_weight=25),
            candidate("c", "1", rank=1, target_weight=1000),
        ],
        key=sort_key,
    )
    rng = random.Random(42)
    picks = Counter(candidates[pick_weighted(candidates, rng)].endpoint.name for _ in range(20_000))
    assert picks["c"] == 0
    assert picks["a"] / 20_000 == pytest.approx(0.75, abs=0.015)


def test_a_single_best_candidate_is_picked_without_randomness() -> None:
    candidates = [candidate("a", "1", rank=0), candidate("b", "1", rank=1)]

    class Exploding(random.Random):
        def random(self) -> float:
            raise AssertionError("no draw needed")

    assert pick_weighted(candidates, Exploding()) == 0


def test_plan_is_primary_then_retries_then_fallback() -> None:
    primary = sorted([candidate("a", "1", rank=0), candidate("a", "2", rank=1)], key=sort_key)
    fallback = [candidate("f", "1", role=Role.FALLBACK)]
    plan = build_plan(primary, fallback, random.Random(1))
    assert [(c.endpoint, c.replica, c.role) for c in plan] == [
        ("a", "1", Role.PRIMARY),
        ("a", "2", Role.RETRY),
        ("f", "1", Role.FALLBACK),
    ]


def test_plan_starts_with_the_fallback_when_no_target_is_left() -> None:
    plan = build_plan([], [candidate("f", "1", role=Role.FALLBACK)], random.Random(1))
    assert [(c.endpoint, c.role) for c in plan] == [("f", Role.FALLBACK)]


def test_the_same_seed_gives_the_same_plan() -> None:
    primary = [candidate(name, "1") for name in "abcdef"]
    plans = {build_plan(primary, [], random.Random(7)) for _ in range(5)}
    assert len(plans) == 1
