"""Shadow traffic in the engine: which requests are mirrored (a stable hash of the request id), and where
a copy may go — only to a replica of the shadow endpoint that the request's residency allows, through the
same per-class tables as the targets — or why it is skipped. The primary decision never changes."""

from __future__ import annotations

from typing import Any

import pytest
from engine_builders import FakeHealth, config, endpoint, features, policy, replica, residency, rule

from modelroute_contract import Health, ShadowTraffic
from modelroute_sidecar.engine import Router
from modelroute_sidecar.engine.model import Decision, Role
from modelroute_sidecar.engine.shadow import sampled, shadow_bucket

IDS = [f"req-{n}" for n in range(200)]


def router(percent: float = 100.0, **next_fields: Any) -> Router:
    llama = endpoint("llama", replica("eu-1", "eu", "gdpr"), replica("us-1", "us"))
    nxt = endpoint(
        "next",
        *next_fields.pop("replicas", (replica("next-eu", "eu", "gdpr"), replica("next-us", "us"))),
        **next_fields,
    )
    mirrored = rule("default", ["llama"]).model_copy(
        update={"shadow": ShadowTraffic(endpoint="next", percent=percent, max_concurrent=4)}
    )
    gdpr = residency({"eu-personal": (["eu"], ["gdpr"])}, detectors=[("email", "eu-personal")])
    return Router(config([llama, nxt], policy(mirrored, residency=gdpr, failover=["eu", "us"])), "us")


def decide(r: Router, health: FakeHealth | None = None, **kw: Any) -> Decision:
    return r.decide(features(**kw), health or FakeHealth(), seed=1)


def test_the_bucket_is_stable_and_uniform_enough() -> None:
    assert shadow_bucket("p", "r", "req-1") == shadow_bucket("p", "r", "req-1")
    assert shadow_bucket("p", "r", "req-1") != shadow_bucket("p", "other", "req-1")  # keyed by rule
    share = sum(shadow_bucket("p", "r", i) < 25 for i in IDS) / len(IDS)
    assert 0.15 < share < 0.35


@pytest.mark.parametrize(("percent", "expected"), [(0.0, 0), (100.0, len(IDS))])
def test_percent_bounds(percent: float, expected: int) -> None:
    shadow = ShadowTraffic(endpoint="next", percent=percent)
    assert sum(sampled(shadow, "policy", "default", i) for i in IDS) == expected


def test_exactly_the_hashed_share_is_mirrored_and_the_primary_is_untouched() -> None:
    mirrored, plain = router(30.0), router(0.0)
    for request_id in IDS[:60]:
        decision = decide(mirrored, request_id=request_id)
        expected = shadow_bucket("policy", "default", request_id) < 30.0
        assert (decision.shadow is not None) == expected
        assert decision.plan == decide(plain, request_id=request_id).plan
        if decision.shadow is not None:
            assert decision.shadow.choice is not None
            assert decision.shadow.choice.role == Role.SHADOW
            assert decision.shadow.max_concurrent == 4


def test_a_public_copy_goes_to_the_local_replica() -> None:
    pick = decide(router()).shadow
    assert pick is not None and pick.choice is not None and pick.skipped == ""
    assert (pick.endpoint, pick.choice.replica, pick.choice.upstream_model) == (
        "next",
        "next-us",
        "next-upstream",
    )


@pytest.mark.parametrize(
    "request_fields",
    [
        {"declared_data_class": "eu-personal"},
        {"prompt_text": "write to jane.doe@example.eu please"},  # a detector's class binds as well
    ],
    ids=["declared", "detected"],
)
def test_a_restricted_copy_goes_only_where_its_data_may_go(request_fields: dict[str, Any]) -> None:
    decision = decide(router(), **request_fields)
    assert decision.data_class == "eu-personal"
    assert decision.shadow is not None and decision.shadow.choice is not None
    assert decision.shadow.choice.replica == "next-eu"
    # with no compliant replica left, the copy is skipped for residency, never sent elsewhere
    us_only = router(replicas=(replica("next-us", "us"), replica("next-us-2", "us", "gdpr")))
    pick = decide(us_only, **request_fields).shadow
    assert pick is not None and pick.choice is None and pick.skipped == "residency"
    assert [c.replica for c in decide(us_only, **request_fields).plan] == ["eu-1"]


def test_an_unhealthy_ejected_or_incapable_shadow_is_unavailable_not_residency() -> None:
    down = router(
        replicas=(replica("next-eu", "eu", "gdpr", health=Health.UNHEALTHY), replica("next-us", "us"))
    )
    pick = decide(down, declared_data_class="eu-personal").shadow
    assert pick is not None and pick.skipped == "unavailable"
    ejected = FakeHealth(ejected={("next", "next-eu")})
    pick = decide(router(), ejected, declared_data_class="eu-personal").shadow
    assert pick is not None and pick.skipped == "unavailable"
    small = router(context_window=100)
    pick = decide(small, prompt_tokens=500).shadow
    assert pick is not None and pick.skipped == "unavailable"


def test_a_streamed_request_is_judged_as_the_non_streamed_copy_it_becomes() -> None:
    no_streaming = router(streaming=False)
    decision = decide(no_streaming, stream=True)
    assert decision.shadow is not None and decision.shadow.skipped == ""


def test_a_refused_request_is_not_mirrored() -> None:
    strict = router(replicas=(replica("next-eu", "eu", "gdpr"),))
    gone = Router(
        config(
            [endpoint("llama", replica("us-1", "us")), endpoint("next", replica("next-eu", "eu", "gdpr"))],
            strict.config.policies[0],
        )
    )
    decision = decide(gone, declared_data_class="eu-personal")
    assert decision.error is not None and decision.error.code == "no_compliant_endpoint"
    assert decision.shadow is None


def test_a_config_naming_an_unknown_shadow_endpoint_does_not_load() -> None:
    bad = (
        router()
        .config.policies[0]
        .rules[0]
        .model_copy(update={"shadow": ShadowTraffic(endpoint="ghost", percent=5)})
    )
    with pytest.raises(ValueError, match="ghost"):
        Router(config([endpoint("llama")], policy(bad)))


def test_a_request_of_several_classes_is_copied_only_where_all_of_them_may_go() -> None:
    llama = endpoint("llama", replica("eu-both", "eu", "gdpr", "hipaa"))
    nxt = endpoint("next", replica("next-gdpr", "eu", "gdpr"), replica("next-us-hipaa", "us", "hipaa"))
    mirrored = rule("default", ["llama"]).model_copy(
        update={"shadow": ShadowTraffic(endpoint="next", percent=100)}
    )
    classes = residency(
        {"eu-personal": (["eu"], ["gdpr"]), "health": ([], ["hipaa"])}, detectors=[("email", "eu-personal")]
    )
    r = Router(config([llama, nxt], policy(mirrored, residency=classes)))
    each = [decide(r, declared_data_class="health"), decide(r, prompt_text="mail a.b@example.eu")]
    assert [d.shadow.choice.replica for d in each if d.shadow and d.shadow.choice] == [
        "next-us-hipaa",
        "next-gdpr",
    ]
    both = decide(r, declared_data_class="health", prompt_text="mail a.b@example.eu")
    assert set(both.data_classes) == {"eu-personal", "health"}
    assert [c.replica for c in both.plan] == ["eu-both"]
    assert both.shadow is not None and both.shadow.skipped == "residency"
