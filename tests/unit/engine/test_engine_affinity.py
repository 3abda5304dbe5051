"""Session affinity in the engine: the pinned replica goes first while the filters keep it; otherwise the
plan is the filters' and the decision says why the pin broke. Affinity never adds a replica back."""

from __future__ import annotations

import dataclasses
import tracemalloc
from typing import Any

import pytest
from engine_builders import FakeHealth, config, endpoint, features, policy, replica, residency, rule

from modelroute_contract import SessionAffinity
from modelroute_sidecar.affinity import SessionTable
from modelroute_sidecar.engine import Router
from modelroute_sidecar.engine.affinity import SESSION_DIGEST_BYTES, SessionKey, session_digest, session_key
from modelroute_sidecar.engine.model import Decision, Role

AFFINITY = SessionAffinity(header="x-session-id", ttl_seconds=60, max_sessions=3)


def key(value: str, tenant: str = "", policy: str = "policy", rule: str = "default") -> SessionKey:
    return SessionKey(policy, rule, session_digest(tenant, value), 60, 3)


def router(**policy_fields: object) -> Router:
    llama = endpoint(
        "llama", replica("eu-1", "eu"), replica("eu-2", "eu"), replica("us-1", "us"), price=(1.0, 1.0)
    )
    pinned = rule("default", ["llama"]).model_copy(update={"affinity": AFFINITY})
    gdpr = residency({"eu-personal": (["eu"], [])})
    return Router(config([llama], policy(pinned, residency=gdpr, prefer_local=False, **policy_fields)))


def ask(
    r: Router, table: SessionTable, session: str = "s1", health: FakeHealth | None = None, **kw: Any
) -> Decision:
    request = features(headers={"x-session-id": session}, **kw)
    return r.decide(request, health or FakeHealth(), sessions=table)


def test_new_then_kept_on_the_replica_that_answered() -> None:
    r, table = router(), SessionTable(clock=lambda: 0.0)
    first = ask(r, table)
    assert first.affinity is not None and first.affinity.outcome == "new"
    table.remember(first.affinity.session, "llama", "us-1")
    for n in range(20):
        decision = ask(r, table, request_id=f"r{n}")
        assert decision.affinity is not None and decision.affinity.outcome == "kept"
        assert (decision.plan[0].endpoint, decision.plan[0].replica, decision.plan[0].role) == (
            "llama",
            "us-1",
            Role.PRIMARY,
        )
        assert [c.role for c in decision.plan[1:]] == [Role.RETRY, Role.RETRY]
        assert len({c.replica for c in decision.plan}) == 3


def test_a_new_session_starts_on_the_same_replica_in_every_worker() -> None:
    # each worker has its own table: the first pick is seeded by the session key, not by chance
    picks = {ask(router(), SessionTable(), "s-42").plan[0].replica for _ in range(20)}
    assert len(picks) == 1
    spread = {ask(router(), SessionTable(), f"s-{n}").plan[0].replica for n in range(60)}
    assert len(spread) == 3


@pytest.mark.parametrize(
    ("health", "kw", "reason"),
    [
        (FakeHealth(ejected={("llama", "us-1")}), {}, "ejected"),
        (FakeHealth(), {"declared_data_class": "eu-personal"}, "residency-region"),
    ],
)
def test_the_pin_yields_to_ejection_and_residency(
    health: FakeHealth, kw: dict[str, Any], reason: str
) -> None:
    r, table = router(), SessionTable(clock=lambda: 0.0)
    table.remember(key("s1"), "llama", "us-1")
    decision = ask(r, table, health=health, **kw)
    assert decision.affinity is not None
    assert decision.affinity.header(None) == f"broken; reason={reason}"
    assert "us-1" not in {c.replica for c in decision.plan}  # never added back


def test_a_replica_no_longer_in_the_rule_breaks_as_gone() -> None:
    r, table = router(), SessionTable(clock=lambda: 0.0)
    table.remember(key("s1"), "llama", "ap-1")
    decision = ask(r, table)
    assert decision.affinity is not None and (decision.affinity.outcome, decision.affinity.reason) == (
        "broken",
        "gone",
    )


def test_a_failed_kept_attempt_settles_as_broken() -> None:
    r, table = router(), SessionTable(clock=lambda: 0.0)
    table.remember(key("s1"), "llama", "eu-1")
    affinity = ask(r, table).affinity
    assert affinity is not None and affinity.header(("llama", "eu-1")) == "kept"
    assert affinity.header(("llama", "eu-2")) == "broken; reason=attempt-failed"


def test_no_session_key_or_no_table_means_no_affinity() -> None:
    r = router()
    assert r.decide(features(), FakeHealth(), sessions=SessionTable()).affinity is None
    assert r.decide(features(headers={"x-session-id": "s"}), FakeHealth()).affinity is None


def test_session_key_reads_the_header_or_the_metadata() -> None:
    by_meta = SessionAffinity(metadata="session")
    assert session_key(by_meta, "p", "r", features(metadata={"session": "abc"})) == SessionKey(
        "p", "r", session_digest("", "abc"), 600, 10000
    )
    assert session_key(AFFINITY, "p", "r", features(metadata={"session": "abc"})) is None


def test_the_table_expires_and_stays_bounded() -> None:
    now = [0.0]
    table = SessionTable(clock=lambda: now[0])
    keys = [key(f"s{n}", policy="p", rule="r") for n in range(5)]
    for n, session in enumerate(keys):
        table.remember(session, "e", f"s{n}")
    assert len(table) == 3  # max_sessions: the oldest went first
    assert table.pinned(keys[0]) is None and table.pinned(keys[4]) == ("e", "s4")
    now[0] = 59.0
    assert table.pinned(keys[4]) == ("e", "s4")
    now[0] = 60.0
    assert table.pinned(keys[4]) is None  # ttl since the last answered turn
    assert len(table) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of header and metadata"),
        ({"header": "x-a", "metadata": "a"}, "exactly one of header and metadata"),
        ({"header": "connection"}, "affinity.header"),
        ({"header": "X-Session"}, "lower-case"),
        ({"metadata": "Bad Key"}, "affinity.metadata"),
        ({"header": "x-a", "ttl_seconds": 0}, "affinity.ttlSeconds"),
        ({"header": "x-a", "max_sessions": 0}, "affinity.maxSessions"),
    ],
)
def test_the_contract_refuses_bad_affinity_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionAffinity(**fields)


def test_the_pin_yields_to_the_canary_split() -> None:
    from modelroute_contract import CanarySplit

    split = CanarySplit(
        name="c1", stable="old", candidate="new", candidate_weight=50.0, stickiness_header="x-user"
    )
    canary_rule = rule("default", ["old"], canary=split).model_copy(update={"affinity": AFFINITY})
    r = Router(config([endpoint("old"), endpoint("new")], policy(canary_rule)))
    table = SessionTable(clock=lambda: 0.0)
    for user in (f"u{n}" for n in range(40)):
        request = features(headers={"x-session-id": "s1", "x-user": user})
        table.remember(key("s1"), "new", "new-eu")
        decision = r.decide(request, FakeHealth(), sessions=table)
        assert decision.affinity is not None
        if decision.canary_side == "candidate":
            assert decision.affinity.outcome == "kept"
        else:
            assert (decision.affinity.outcome, decision.affinity.reason) == ("broken", "canary-other-side")
            assert {c.endpoint for c in decision.plan} == {"old"}


def test_two_tenants_sending_the_same_session_value_never_share_a_pin() -> None:
    r, table = router(), SessionTable(clock=lambda: 0.0)
    acme = ask(r, table, metadata={"tenant": "acme"}).affinity
    assert acme is not None and acme.outcome == "new"
    table.remember(acme.session, "llama", "us-1")
    again = ask(r, table, metadata={"tenant": "ACME"}).affinity  # a tenant's case is folded, as everywhere
    assert again is not None and (again.outcome, again.pinned) == ("kept", ("llama", "us-1"))
    for other in ({"tenant": "globex"}, {}):
        decision = ask(r, table, metadata=other)
        assert decision.affinity is not None and decision.affinity.outcome == "new", other
    # the length prefix: no tenant/value split runs into another
    assert session_digest("ab", "c") != session_digest("a", "bc") != session_digest("", "abc")


def test_the_table_keeps_a_fixed_size_hash_not_the_session_value() -> None:
    table = SessionTable(clock=lambda: 0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(50):
            value = f"{n:05d}" + "x" * (64 * 1024)  # a request head's whole size; metadata can be longer
            session = session_key(AFFINITY, "p", "r", features(headers={"x-session-id": value}))
            assert session is not None and len(session.digest) == SESSION_DIGEST_BYTES
            table.remember(dataclasses.replace(session, max_sessions=100), "e", "r1")
            del value, session
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == 50
    assert held < 64 * 1024, held  # 50 values of 64 KiB would be 3.2 MB
