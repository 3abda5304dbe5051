"""The bandit strategy in the engine: Thompson sampling moves a rule's first pick toward the endpoint with
better feedback, every eligible arm keeps its exploration floor, cost counts by `costWeight`, and the arms
are only ever the targets the hard filters kept (residency, health, ejection, the canary split). Seeded
throughout: every figure below is deterministic."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest
from engine_builders import FakeHealth, config, endpoint, features, policy, replica, residency, rule

from modelroute_contract import BanditSettings, CanarySplit, Health
from modelroute_sidecar.bandit import BanditTable
from modelroute_sidecar.engine import Router
from modelroute_sidecar.engine.bandit import BanditPlan, Posterior, choose_arm, floor
from modelroute_sidecar.engine.model import Decision, DropReason, Role
from modelroute_sidecar.proxy import Exchange
from modelroute_sidecar.stats import EndpointStats, merge_snapshots
from modelroute_sidecar.views import audit_record

N = 2000


def bandit_rule(targets: Mapping[str, int] | list[str], settings: BanditSettings | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return rule("default", targets, **kw).model_copy(
        update={"strategy": "bandit", "bandit": settings or BanditSettings()}
    )


def plan(
    explore: float = 0.05, cost_weight: float = 0.0, costs: Mapping[str, float] | None = None
) -> BanditPlan:
    return BanditPlan("p", "r", BanditSettings(explore=explore, cost_weight=cost_weight), costs or {})


def picks(
    arms: list[str], posteriors: Mapping[str, Posterior], bandit: BanditPlan, seed: int = 7
) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(choose_arm(arms, posteriors, bandit, rng).endpoint for _ in range(N))


def test_the_better_arm_wins_most_picks_after_feedback() -> None:
    good, bad = Posterior(alpha=1 + 45, beta=1 + 5), Posterior(alpha=1 + 10, beta=1 + 40)
    counts = picks(["bad", "good"], {"good": good, "bad": bad}, plan())
    assert counts["good"] > 0.9 * N
    assert counts["bad"] >= floor(0.05, 2) * N * 0.8  # the floor, less sampling noise


def test_without_evidence_the_arms_split_evenly() -> None:
    counts = picks(["a", "b"], {}, plan())
    assert 0.45 * N < counts["a"] < 0.55 * N


@pytest.mark.parametrize(("explore", "arms"), [(0.05, 2), (0.2, 3), (0.5, 4)])
def test_every_arm_keeps_its_exploration_floor(explore: float, arms: int) -> None:
    names = [f"e{i}" for i in range(arms)]
    # one arm is known to be excellent, the others known to be useless: only exploration reaches them
    posteriors = {"e0": Posterior(alpha=1000, beta=1)} | {n: Posterior(alpha=1, beta=1000) for n in names[1:]}
    counts = picks(names, posteriors, plan(explore=explore))
    least = floor(explore, arms)
    assert least == min(explore, 1 / arms)
    for name in names[1:]:
        assert counts[name] >= 0.8 * least * N, (name, counts)
        assert counts[name] <= 1.25 * least * N, (name, counts)


def test_no_exploration_means_the_known_best_always_wins() -> None:
    counts = picks(
        ["a", "b"], {"a": Posterior(alpha=1000, beta=1), "b": Posterior(alpha=1, beta=1000)}, plan(0)
    )
    assert counts == Counter({"a": N})


def test_cost_weight_moves_picks_to_the_cheaper_of_equal_arms() -> None:
    even = {"cheap": Posterior(alpha=30, beta=30), "dear": Posterior(alpha=30, beta=30)}
    costs = {"cheap": 0.1, "dear": 1.0}
    assert picks(["cheap", "dear"], even, plan(0, 0.0, costs))["cheap"] < 0.6 * N
    assert picks(["cheap", "dear"], even, plan(0, 0.5, costs))["cheap"] > 0.95 * N


def test_the_same_seed_gives_the_same_picks() -> None:
    posteriors = {"a": Posterior(alpha=3, beta=2)}
    assert picks(["a", "b", "c"], posteriors, plan(), seed=3) == picks(
        ["a", "b", "c"], posteriors, plan(), seed=3
    )


# ------------------------------------------------------------------------------------ through decide()


def router(**rule_fields: object) -> Router:
    endpoints = [
        endpoint("good", replica("good-eu", "eu"), price=(1.0, 2.0)),
        endpoint("bad", replica("bad-eu", "eu"), price=(3.0, 6.0)),
        endpoint("us-only", replica("us-1", "us")),
        endpoint("down", replica("down-eu", "eu", health=Health.UNHEALTHY)),
    ]
    gdpr = residency({"eu-personal": (["eu"], [])})
    r = bandit_rule(["good", "bad", "us-only", "down"], **rule_fields)
    return Router(config(endpoints, policy(r, residency=gdpr, prefer_local=False)))


def learned_table(r: Router, good: float = 0.9, bad: float = 0.2, posts: int = 40) -> BanditTable:
    table = BanditTable()
    table.apply(r.config)
    for _ in range(posts):
        table.reward("policy", "default", "good", good)
        table.reward("policy", "default", "bad", bad)
    return table


def firsts(
    r: Router, table: BanditTable | None, health: FakeHealth | None = None, **kw: object
) -> Counter[str]:
    out: Counter[str] = Counter()
    for n in range(400):
        decision = r.decide(features(request_id=f"r{n}", **kw), health or FakeHealth(), seed=n, bandits=table)
        assert decision.error is None
        assert decision.plan[0].role == Role.PRIMARY
        assert decision.bandit is not None and decision.bandit.endpoint == decision.plan[0].endpoint
        out[decision.plan[0].endpoint] += 1
    return out


def test_feedback_moves_the_first_pick_toward_the_better_endpoint() -> None:
    r = router()
    before = firsts(r, None)
    after = firsts(r, learned_table(r))
    assert after["good"] > 0.75 * 400 > before["good"]
    assert after["good"] > after["bad"] + after["us-only"]


def test_an_unhealthy_endpoint_is_never_an_arm() -> None:
    r = router()
    table = learned_table(r)
    for _ in range(200):
        table.reward("policy", "default", "down", 1.0)  # however good its reputation
    assert firsts(r, table)["down"] == 0


def test_residency_is_never_traded_for_reward() -> None:
    r = router()
    table = learned_table(r)
    for _ in range(200):
        table.reward("policy", "default", "us-only", 1.0)
    counts = firsts(r, table, headers={}, declared_data_class="eu-personal")
    assert counts["us-only"] == 0
    decision = r.decide(features(declared_data_class="eu-personal"), FakeHealth(), seed=1, bandits=table)
    assert all(c.region == "eu" for c in decision.plan)
    assert ("us-only", DropReason.RESIDENCY_REGION) in {(d.endpoint, d.reason) for d in decision.dropped}


def test_an_ejected_endpoint_is_never_an_arm() -> None:
    r = router()
    health = FakeHealth(ejected={("good", "good-eu")})
    counts = firsts(r, learned_table(r), health)
    assert counts["good"] == 0 and counts["bad"] > 0
    # ...but stays in the plan as a retry only if the filters kept it: ejection drops it outright
    decision = r.decide(features(), health, seed=2, bandits=learned_table(r))
    assert "good" not in {c.endpoint for c in decision.plan}


def test_the_rest_of_the_plan_keeps_its_stored_order() -> None:
    r = router()
    decision = r.decide(features(), FakeHealth(), seed=5, bandits=learned_table(r))
    roles = [c.role for c in decision.plan]
    assert roles[0] == Role.PRIMARY and set(roles[1:]) == {Role.RETRY}
    assert sorted(c.endpoint for c in decision.plan) == ["bad", "good", "us-only"]


def test_a_weighted_rule_has_no_bandit_pick() -> None:
    endpoints = [endpoint("good"), endpoint("bad")]
    r = Router(config(endpoints, policy(rule("default", ["good", "bad"]))))
    decision = r.decide(features(), FakeHealth(), seed=1, bandits=BanditTable())
    assert decision.bandit is None and decision.error is None


def test_a_canary_wins_on_its_candidate_side() -> None:
    split = CanarySplit(
        name="next", stable="good", candidate="bad", candidate_weight=30, stickiness_header=""
    )
    r = router(canary=split)
    table = learned_table(r)
    sides: Counter[tuple[str, str]] = Counter()
    for n in range(600):
        decision: Decision = r.decide(features(request_id=f"q{n}"), FakeHealth(), seed=n, bandits=table)
        assert decision.bandit is not None
        sides[(decision.canary_side, decision.plan[0].endpoint)] += 1
        if decision.canary_side == "candidate":
            assert decision.bandit.mode == "canary" and decision.plan[0].endpoint == "bad"
        else:
            assert decision.plan[0].endpoint != "bad"  # the candidate is on the other side: dropped
    on_candidate = sum(v for (side, _), v in sides.items() if side == "candidate")
    assert 0.2 * 600 < on_candidate < 0.4 * 600  # the canary's share is its own, whatever the feedback says


def test_the_decision_header_names_the_strategy_and_the_sample() -> None:
    r = router()
    decision = r.decide(features(), FakeHealth(), seed=11, bandits=learned_table(r))
    assert decision.bandit is not None
    header = decision.bandit.header()
    assert header.startswith(f"bandit; arm={decision.plan[0].endpoint}; ")
    assert "sampled=" in header or header.endswith("single")


# ------------------------------------------------------------------------------------- the sidecar's table


def test_the_table_resets_a_rule_whose_targets_change_and_keeps_one_whose_do_not() -> None:
    r = router()
    table = learned_table(r)
    table.failed("policy", "default", "bad")
    assert table.arms("policy", "default")["good"].alpha == pytest.approx(1 + 36)
    table.apply(r.config)  # the same targets: what was learned stays
    assert table.arms("policy", "default")["bad"].beta == pytest.approx(1 + 40 * 0.8 + 1)
    fewer = Router(
        config(
            [endpoint("good"), endpoint("bad")],
            policy(bandit_rule(["good", "bad"])),
        )
    )
    table.apply(fewer.config)
    assert table.arms("policy", "default") == {}
    assert [(f.endpoint, f.alpha, f.beta, f.pulls) for f in table.figures()] == [
        ("bad", 1.0, 1.0, 0),
        ("good", 1.0, 1.0, 0),
    ]


def test_the_table_learns_only_about_bandit_rules_and_their_targets() -> None:
    r = router()
    table = BanditTable()
    table.apply(r.config)
    table.reward("policy", "other-rule", "good", 1.0)
    table.reward("policy", "default", "not-a-target", 1.0)
    table.reward("other-policy", "default", "good", 1.0)
    assert table.series() == ({}, {}, {})
    table.pulled("policy", "default", "good")
    table.reward("policy", "default", "good", 0.75)
    assert table.series() == (
        {("policy", "default", "good"): 1},
        {("policy", "default", "good"): 0.75},
        {("policy", "default", "good"): 0.25},
    )


def test_a_multi_worker_stats_document_sums_each_arms_evidence() -> None:
    r = router()
    documents = []
    for score in (1.0, 0.0):
        table = BanditTable()
        table.apply(r.config)
        table.reward("policy", "default", "good", score)
        table.pulled("policy", "default", "good")
        snapshot = EndpointStats().snapshot(pod="p", config_version="v")
        documents.append(snapshot.model_copy(update={"bandit": table.figures()}).to_json())
    merged = {a.endpoint: a for a in merge_snapshots(documents).bandit}
    assert (merged["good"].alpha, merged["good"].beta, merged["good"].pulls) == (2.0, 2.0, 2)
    assert (merged["bad"].alpha, merged["bad"].beta, merged["bad"].pulls) == (1.0, 1.0, 0)


def test_only_a_bandit_rules_audit_line_carries_the_pick() -> None:
    r = router()
    weighted = Router(config([endpoint("good"), endpoint("bad")], policy(rule("default", ["good", "bad"]))))
    for decider, expected in ((r, True), (weighted, False)):
        decision = decider.decide(features(), FakeHealth(), seed=4, bandits=learned_table(r))
        exchange = Exchange(request_id="req-1", route="chat", decision=decision)
        record = audit_record(exchange, 0.01, include_prompts=False)
        assert ("bandit" in record) is expected
        if expected:
            assert decision.bandit is not None
            assert record["bandit"] == {
                "strategy": "bandit",
                "arm": decision.plan[0].endpoint,
                "mode": decision.bandit.mode,
                "sampled": decision.bandit.sampled,
            }


def test_a_kept_session_pin_credits_the_arm_that_serves_not_the_bandit_s_draw() -> None:
    from modelroute_sidecar.engine.affinity import SessionKey, hold, session_digest
    from modelroute_sidecar.engine.bandit import BanditPick
    from modelroute_sidecar.engine.model import BanditDecision, Choice

    def choice(endpoint: str, role: Role) -> Choice:
        return Choice(endpoint, f"{endpoint}-1", "eu-west", "http://x", "m", role)

    drawn = BanditDecision(
        policy="p",
        rule="r",
        plan=(choice("cheap", Role.PRIMARY), choice("strong", Role.RETRY)),
        bandit=BanditPick("cheap", "sampled", 0.9, 0.9),
    )
    session = SessionKey("p", "r", session_digest("team-a", "conversation-1"), 600, 100)
    kept = hold(drawn, session, ("strong", "strong-1"))
    assert kept.plan[0].endpoint == "strong" and kept.affinity is not None and kept.affinity.outcome == "kept"
    assert kept.bandit is not None and (kept.bandit.endpoint, kept.bandit.mode) == ("strong", "affinity")
    assert kept.bandit.header() == "bandit; arm=strong; affinity"
    same = hold(drawn, session, ("cheap", "cheap-1"))  # the pin agrees with the draw: the draw stands
    assert same.bandit == drawn.bandit
