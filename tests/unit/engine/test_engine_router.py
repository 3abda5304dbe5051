"""Router.decide end to end: model → class → rule → candidates → filters → canary → plan, and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_builders import FakeHealth, config, endpoint, features, policy, replica, residency, rule

from modelroute_contract import CanarySplit, Health, RouterConfig
from modelroute_sidecar.embeddings import load_models
from modelroute_sidecar.engine import Decision, DropReason, Role, Router
from modelroute_sidecar.engine.complexity import NOT_SCORED

EU = ("eu-west", "eu-central")
CLASSES = {"eu-personal": (EU, ("gdpr",)), "pci": ((), ("pci",))}

ENDPOINTS = [
    endpoint(
        "small",
        replica("small-eu", "eu-west", "gdpr"),
        replica("small-de", "eu-central", "gdpr", "pci"),
        replica("small-us", "us-east", "pci"),
        price=(0.1, 0.2),
    ),
    endpoint(
        "big", replica("big-eu", "eu-west", "gdpr"), replica("big-us", "us-east"), price=(5, 15), tools=True
    ),
    endpoint("backup", replica("backup-de", "eu-central", "gdpr"), replica("backup-us", "us-east")),
    endpoint("expert", replica("expert-us", "us-east", "pci"), replica("expert-de", "eu-central", "gdpr")),
]


def router(*rules: Any, endpoints: list[Any] | None = None, local: str = "eu-west", **fields: Any) -> Router:
    fields.setdefault("residency", residency(CLASSES, detectors=[("card", "pci"), ("email", "eu-personal")]))
    fields.setdefault("failover", ("eu-central", "us-east"))
    rules = rules or (rule("default", ["small"], fallback=["backup"], escalation=["expert"]),)
    return Router(config(endpoints or ENDPOINTS, policy(*rules, models=("auto", "other"), **fields)), local)


def plan_of(decision: Decision) -> list[tuple[str, Role]]:
    return [(c.replica, c.role) for c in decision.plan]


def drops_of(decision: Decision) -> dict[str, DropReason]:
    return {d.replica: d.reason for d in decision.dropped}


def test_public_request_plan_prefers_local_then_failover_order() -> None:
    decision = router().decide(features(), FakeHealth(), seed=1)
    assert decision.error is None
    assert (decision.policy, decision.rule, decision.data_class, decision.data_class_source) == (
        "policy",
        "default",
        "public",
        "",
    )
    assert plan_of(decision) == [
        ("small-eu", Role.PRIMARY),
        ("small-de", Role.RETRY),
        ("small-us", Role.RETRY),
        ("backup-de", Role.FALLBACK),
        ("backup-us", Role.FALLBACK),
    ]
    assert [(c.replica, c.role) for c in decision.escalation] == [
        ("expert-de", Role.ESCALATION),
        ("expert-us", Role.ESCALATION),
    ]
    primary = decision.plan[0]
    assert (primary.endpoint, primary.region, primary.url, primary.upstream_model) == (
        "small",
        "eu-west",
        "http://small-eu.test/v1",
        "small-upstream",
    )


def test_detected_personal_data_never_leaves_its_regions() -> None:
    decision = router().decide(features(prompt_text="reach me at jane@example.com"), FakeHealth(), seed=1)
    assert (decision.data_class, decision.data_class_source) == ("eu-personal", "detector:email")
    assert plan_of(decision) == [
        ("small-eu", Role.PRIMARY),
        ("small-de", Role.RETRY),
        ("backup-de", Role.FALLBACK),
    ]
    assert [c.replica for c in decision.escalation] == ["expert-de"]
    assert drops_of(decision) == {
        "small-us": DropReason.RESIDENCY_REGION,
        "backup-us": DropReason.RESIDENCY_REGION,
        "expert-us": DropReason.RESIDENCY_REGION,
    }


def test_compliance_labels_restrict_pci_data() -> None:
    decision = router().decide(features(prompt_text="card 4111 1111 1111 1111"), FakeHealth(), seed=1)
    assert decision.data_class == "pci"
    assert plan_of(decision) == [("small-de", Role.PRIMARY), ("small-us", Role.RETRY)]
    assert drops_of(decision)["small-eu"] == DropReason.RESIDENCY_COMPLIANCE
    assert [c.replica for c in decision.escalation] == ["expert-us"]


def test_unknown_model_is_a_404_listing_the_models() -> None:
    decision = router().decide(features(model="gpt-9"), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (404, "model_not_found")
    assert "gpt-9" in decision.error.message
    assert "auto, other" in decision.error.message


def test_undefined_declared_class_is_a_400() -> None:
    decision = router().decide(features(declared_data_class="secret"), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (400, "invalid_data_class")


def test_the_policys_own_header_declares_the_class() -> None:
    custom = residency(CLASSES, header="X-Data-Class")
    decision = router(residency=custom).decide(features(headers={"x-data-class": "pci"}), FakeHealth())
    assert (decision.data_class, decision.data_class_source) == ("pci", "header")


def test_no_matching_rule_is_a_400() -> None:
    decision = router(rule("gold", ["small"], metadata={"tier": ("gold",)})).decide(features(), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (400, "no_matching_rule")
    assert "data class 'public'" in decision.error.message


def test_rules_match_on_model_data_class_metadata_and_complexity() -> None:
    routing = router(
        rule("other-model", ["big"], models=("other",)),
        rule("pci", ["small"], data_classes=("pci",)),
        rule("gold", ["big"], metadata={"tier": ("gold",)}),
        rule("hard", ["expert"], complexity={"min": 30}),
        rule("rest", ["small"]),
    )
    health = FakeHealth()
    assert routing.decide(features(model="other"), health).rule == "other-model"
    assert (
        routing.decide(features(declared_data_class="pci", metadata={"tier": "gold"}), health).rule == "pci"
    )
    assert routing.decide(features(metadata={"tier": "gold"}), health).rule == "gold"
    hard = routing.decide(
        features(prompt_text="Prove step by step: x^2 = 4, then analyze why.", prompt_tokens=400), health
    )
    assert (hard.rule, hard.complexity >= 30) == ("hard", True)
    assert routing.decide(features(), health).rule == "rest"


def test_the_decision_reports_the_complexity_only_when_a_rule_needed_it() -> None:
    routing = router(
        rule("gold", ["big"], metadata={"tier": ("gold",)}),
        rule("hard", ["expert"], complexity={"min": 100}),
        rule("rest", ["small"]),
    )
    assert routing.decide(features(metadata={"tier": "gold"}), FakeHealth()).complexity == NOT_SCORED
    assert routing.decide(features(prompt_text="why?"), FakeHealth()).complexity == 4


def test_residency_excluding_everything_fails_closed_with_a_clear_503() -> None:
    routing = router(rule("us-only", ["big"], fallback=["backup"]))
    decision = routing.decide(features(declared_data_class="pci"), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (503, "no_compliant_endpoint")
    assert "data class 'pci'" in decision.error.message
    assert "required compliance: pci" in decision.error.message
    assert decision.plan == () and decision.escalation == ()
    assert set(drops_of(decision).values()) == {DropReason.RESIDENCY_COMPLIANCE}


def test_region_restriction_message_names_the_allowed_regions() -> None:
    endpoints = [endpoint("us", replica("us-1", "us-east", "gdpr"))]
    decision = router(rule("r", ["us"]), endpoints=endpoints).decide(
        features(declared_data_class="eu-personal"), FakeHealth()
    )
    assert decision.error is not None
    assert decision.error.code == "no_compliant_endpoint"
    assert "allowed regions: eu-central, eu-west" in decision.error.message


def test_compliant_but_unhealthy_is_a_503_no_healthy_endpoint() -> None:
    endpoints = [
        endpoint(
            "a", replica("a-eu", "eu-west", "gdpr", health=Health.UNHEALTHY), replica("a-us", "us-east")
        ),
    ]
    decision = router(rule("r", ["a"]), endpoints=endpoints).decide(
        features(declared_data_class="eu-personal"), FakeHealth()
    )
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (503, "no_healthy_endpoint")
    assert drops_of(decision) == {"a-eu": DropReason.UNHEALTHY, "a-us": DropReason.RESIDENCY_REGION}


def test_drained_replicas_count_as_unavailable() -> None:
    endpoints = [endpoint("a", replica("a-eu", "eu-west", weight=0))]
    decision = router(rule("r", ["a"]), endpoints=endpoints).decide(features(), FakeHealth())
    assert decision.error is not None
    assert decision.error.code == "no_healthy_endpoint"
    assert drops_of(decision) == {"a-eu": DropReason.ZERO_WEIGHT}


def test_a_request_no_endpoint_can_serve_is_a_400() -> None:
    decision = router().decide(features(needs_tools=True), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (400, "unsupported_request")
    assert "endpoint lacks tools" in decision.error.message
    assert set(drops_of(decision).values()) == {DropReason.CAPABILITY}


def test_capability_drops_leave_the_capable_endpoints() -> None:
    decision = router(rule("r", ["small", "big"])).decide(features(needs_tools=True), FakeHealth(), seed=3)
    assert [c.endpoint for c in decision.plan] == ["big", "big"]
    assert drops_of(decision)["small-eu"] == DropReason.CAPABILITY


def test_context_window_drops() -> None:
    decision = router(rule("r", ["small"], fallback=["big"])).decide(
        features(prompt_tokens=8000, max_output_tokens=500), FakeHealth()
    )
    assert decision.error is not None
    assert decision.error.code == "unsupported_request"
    assert set(drops_of(decision).values()) == {DropReason.CONTEXT_WINDOW}


def test_capable_replicas_that_are_down_make_it_a_503_not_a_400() -> None:
    endpoints = [
        endpoint("tools", replica("tools-eu", "eu-west", health=Health.UNHEALTHY), tools=True),
        endpoint("plain", replica("plain-eu", "eu-west")),
    ]
    decision = router(rule("r", ["tools", "plain"]), endpoints=endpoints).decide(
        features(needs_tools=True), FakeHealth()
    )
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (503, "no_healthy_endpoint")


def test_ejected_targets_fail_over_to_the_fallback() -> None:
    health = FakeHealth(ejected={("small", "small-eu"), ("small", "small-de"), ("small", "small-us")})
    decision = router().decide(features(), health, seed=1)
    assert plan_of(decision) == [("backup-de", Role.FALLBACK), ("backup-us", Role.FALLBACK)]
    assert {r for r, reason in drops_of(decision).items() if reason == DropReason.EJECTED} == {
        "small-eu",
        "small-de",
        "small-us",
    }
    assert decision.notes == ()


def test_when_everything_is_ejected_the_ejected_replicas_are_tried_anyway() -> None:
    everything = {(e.name, r.name) for e in ENDPOINTS for r in e.replicas}
    decision = router().decide(
        features(declared_data_class="eu-personal"), FakeHealth(ejected=everything), seed=1
    )
    assert decision.error is None
    # the last resort brings back ejected replicas, never non-compliant ones
    assert [c.replica for c in decision.plan] == ["small-eu", "small-de", "backup-de"]
    assert any("passively ejected" in note for note in decision.notes)
    assert drops_of(decision)["small-us"] == DropReason.RESIDENCY_REGION


def test_the_last_resort_never_brings_back_unhealthy_replicas() -> None:
    endpoints = [endpoint("a", replica("a-1", "eu-west", health=Health.UNHEALTHY), replica("a-2", "eu-west"))]
    decision = router(rule("r", ["a"]), endpoints=endpoints).decide(
        features(), FakeHealth(ejected={("a", "a-2")})
    )
    assert [c.replica for c in decision.plan] == ["a-2"]
    assert drops_of(decision) == {"a-1": DropReason.UNHEALTHY}


def test_cost_budget_prefers_cheaper_endpoints_and_never_empties_the_plan() -> None:
    routing = router(rule("r", ["big"], fallback=["small"]), max_cost=0.01)
    decision = routing.decide(features(prompt_tokens=1000, max_output_tokens=1000), FakeHealth(), seed=1)
    assert [c.endpoint for c in decision.plan] == ["small", "small", "small"]
    assert drops_of(decision)["big-eu"] == DropReason.COST_BUDGET

    strict = router(rule("r", ["big"], fallback=["small"]), max_cost=1e-9)
    decision = strict.decide(features(prompt_tokens=1000, max_output_tokens=1000), FakeHealth(), seed=1)
    assert [c.endpoint for c in decision.plan] == ["small", "small", "small"]
    assert any("cost budget" in note for note in decision.notes)


def test_latency_budget_avoids_slow_endpoints() -> None:
    routing = router(rule("r", ["small", "big"]), max_latency_ms=1000)
    decision = routing.decide(features(), FakeHealth(p95={"small": 3000.0, "big": 500.0}), seed=1)
    assert {c.endpoint for c in decision.plan} == {"big"}
    assert drops_of(decision)["small-eu"] == DropReason.LATENCY_BUDGET


def canary_router(weight: float, **endpoint_fields: Any) -> Router:
    split = CanarySplit(
        name="c1", stable="small", candidate="big", candidate_weight=weight, stickiness_metadata="user"
    )
    return router(rule("r", ["small"], canary=split), **endpoint_fields)


@pytest.mark.parametrize(
    ("weight", "side", "endpoint_name"), [(100, "candidate", "big"), (0, "stable", "small")]
)
def test_canary_sends_each_side_to_its_endpoint(weight: float, side: str, endpoint_name: str) -> None:
    decision = canary_router(weight).decide(features(metadata={"user": "u1"}), FakeHealth(), seed=1)
    assert (decision.canary, decision.canary_side) == ("c1", side)
    assert {c.endpoint for c in decision.plan} == {endpoint_name}
    other = {d.replica for d in decision.dropped if d.reason == DropReason.CANARY_OTHER_SIDE}
    assert other and all(not r.startswith(endpoint_name) for r in other)


def test_canary_falls_back_to_the_other_side_when_its_side_is_down() -> None:
    everything_big = {("big", "big-eu"), ("big", "big-us")}
    decision = canary_router(100).decide(
        features(metadata={"user": "u1"}, declared_data_class="eu-personal"),
        FakeHealth(ejected=everything_big),
        seed=1,
    )
    # big-eu is ejected (big-us is not compliant): the stable side serves, and the note says why
    assert {c.endpoint for c in decision.plan} == {"small"}
    assert decision.canary_side == "stable"
    assert any("canary c1" in note for note in decision.notes)


def test_canary_split_of_10000_requests_through_the_router() -> None:
    routing = canary_router(30)
    health = FakeHealth()
    sides = [
        routing.decide(features(metadata={"user": f"user-{i}"}), health).canary_side for i in range(10_000)
    ]
    assert 100 * sides.count("candidate") / 10_000 == pytest.approx(30, abs=1.5)


def test_seeded_decisions_repeat() -> None:
    routing = router(rule("r", {"small": 50, "big": 50}))
    plans = {routing.decide(features(), FakeHealth(), seed=11).plan for _ in range(10)}
    assert len(plans) == 1


def test_weights_split_the_first_pick() -> None:
    endpoints = [endpoint("a", replica("a-1", "eu-west")), endpoint("b", replica("b-1", "eu-west"))]
    routing = router(rule("r", {"a": 80, "b": 20}), endpoints=endpoints)
    firsts = [routing.decide(features(), FakeHealth(), seed=i).plan[0].endpoint for i in range(4000)]
    assert firsts.count("a") / 4000 == pytest.approx(0.8, abs=0.03)


def test_without_a_local_region_the_failover_order_leads() -> None:
    decision = router(local="").decide(features(), FakeHealth(), seed=1)
    assert [c.replica for c in decision.plan][:3] == ["small-de", "small-us", "small-eu"]


def test_a_config_naming_an_unknown_endpoint_is_refused() -> None:
    bad = config(ENDPOINTS, policy(rule("r", ["ghost"])))
    with pytest.raises(ValueError, match="ghost"):
        Router(bad)


def test_properties() -> None:
    cfg: RouterConfig = config(ENDPOINTS, policy(rule("r", ["small"]), models=("b", "a")))
    routing = Router(cfg, "eu-west")
    assert routing.virtual_models == ("a", "b")
    assert routing.config is cfg


def test_a_class_named_but_not_defined_fails_closed() -> None:
    loose = residency(CLASSES, tenant_defaults={"acme": "secret"})
    decision = router(residency=loose).decide(features(metadata={"tenant": "acme"}), FakeHealth())
    assert decision.error is not None
    assert (decision.error.status, decision.error.code) == (503, "no_compliant_endpoint")
    assert "no residency rule" in decision.error.message


def test_the_engine_imports_no_framework() -> None:
    code = (
        "import sys, modelroute_sidecar.engine; "
        "print(sorted(m for m in ('aiohttp', 'kopf', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_canary_whose_sides_are_one_endpoint_splits_nothing() -> None:
    split = CanarySplit(name="c1", stable="small", candidate="small", candidate_weight=30)
    decision = router(rule("r", ["small"], canary=split)).decide(features(), FakeHealth(), seed=1)
    assert {c.endpoint for c in decision.plan} == {"small"}
    assert DropReason.CANARY_OTHER_SIDE not in drops_of(decision).values()


GOLDEN = sorted((Path(__file__).parent.parent / "golden").glob("*.json"))


@pytest.mark.skipif(not GOLDEN, reason="no golden configs compiled from examples/")
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_config_routes(path: Path) -> None:
    # The configs the operator compiles from examples/ load into a Router and route in every region
    # (with the learned models the sidecar loads for them, as its config store does).
    cfg = RouterConfig.model_validate_json(path.read_text())
    regions = {r.region for e in cfg.endpoints for r in e.replicas}
    for region in sorted(regions | {""}):
        routing = Router(cfg, region, load_models(cfg))
        for model in routing.virtual_models:
            decision = routing.decide(features(model=model, metadata={"user": "u1"}), FakeHealth(), seed=1)
            assert decision.error is None or decision.error.code == "no_matching_rule", decision.error
