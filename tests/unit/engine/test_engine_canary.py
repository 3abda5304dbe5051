"""The canary split: a stable hash of the stickiness key, within ±1.5 points of the weight."""

from __future__ import annotations

from typing import Any

import pytest
from engine_builders import features

from modelroute_sidecar.engine.canary import CanaryPlan, choose_side, stickiness_key, sticky_bucket


def plan(weight: float, **fields: Any) -> CanaryPlan:
    return CanaryPlan(name="c1", stable="old", candidate="new", candidate_weight=weight, **fields)


def test_10000_keys_at_weight_30_land_within_1_5_points() -> None:
    canary = plan(30, metadata="user")
    sides = [choose_side(canary, features(metadata={"user": f"user-{i}"})) for i in range(10_000)]
    share = 100 * sides.count("candidate") / len(sides)
    assert share == pytest.approx(30, abs=1.5)


@pytest.mark.parametrize("weight", [1, 5, 50, 90, 99])
def test_share_follows_the_weight(weight: float) -> None:
    canary = plan(weight, header="x-user")
    sides = [choose_side(canary, features(headers={"x-user": f"u{i}"})) for i in range(10_000)]
    assert 100 * sides.count("candidate") / len(sides) == pytest.approx(weight, abs=1.5)


def test_the_same_key_always_lands_on_the_same_side() -> None:
    canary = plan(30, metadata="user")
    for i in range(500):
        key = f"user-{i}"
        sides = {choose_side(canary, features(metadata={"user": key}, request_id=f"r{j}")) for j in range(5)}
        assert len(sides) == 1


def test_raising_the_weight_never_moves_a_user_back_to_stable() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    on_candidate_at_10 = {
        k
        for k in keys
        if choose_side(plan(10, metadata="user"), features(metadata={"user": k})) == "candidate"
    }
    on_candidate_at_40 = {
        k
        for k in keys
        if choose_side(plan(40, metadata="user"), features(metadata={"user": k})) == "candidate"
    }
    assert on_candidate_at_10 <= on_candidate_at_40


def test_the_bucket_is_stable_across_processes() -> None:
    # A fixed value: BLAKE2b, not the per-process salted hash().
    assert sticky_bucket("c1", "user-1") == pytest.approx(sticky_bucket("c1", "user-1"))
    assert 0 <= sticky_bucket("c1", "user-1") < 100
    assert round(sticky_bucket("c1", "user-1"), 6) == round(sticky_bucket("c1", "user-1"), 6)
    assert sticky_bucket("c1", "user-1") != sticky_bucket("c2", "user-1")


def test_bucket_value_is_pinned() -> None:
    import hashlib

    digest = hashlib.blake2b(b"c1\x00user-1", digest_size=8).digest()
    assert sticky_bucket("c1", "user-1") == int.from_bytes(digest, "big") * 100.0 / 2**64


@pytest.mark.parametrize(
    ("fields", "request_fields", "key"),
    [
        ({"metadata": "user"}, {"metadata": {"user": "u1"}}, "u1"),
        ({"metadata": "user"}, {"metadata": {}}, "req-1"),
        ({"header": "x-user"}, {"headers": {"x-user": "u2"}}, "u2"),
        ({"header": "x-user"}, {"headers": {"x-user": ""}}, "req-1"),
        ({}, {"metadata": {"user": "u1"}}, "req-1"),
    ],
)
def test_stickiness_key(fields: dict[str, Any], request_fields: dict[str, Any], key: str) -> None:
    assert stickiness_key(plan(50, **fields), features(**request_fields)) == key


@pytest.mark.parametrize(("weight", "side"), [(0, "stable"), (-1, "stable"), (100, "candidate")])
def test_weights_at_the_ends(weight: float, side: str) -> None:
    assert {choose_side(plan(weight), features(request_id=f"r{i}")) for i in range(200)} == {side}
