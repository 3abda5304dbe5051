"""Session affinity through the data port: a conversation stays on one replica for 100 turns, and when
that replica dies the session moves once, cleanly, to a replica that answers, and stays there."""

from __future__ import annotations

from collections import defaultdict

from tests.component.conftest import Running, SidecarFactory, build_config
from tests.fakes.upstream import FakeUpstream

HI = [{"role": "user", "content": "hi"}]
LLAMA = ("eu-1", "eu-2", "us-1")


def affinity_config(upstreams: dict[str, FakeUpstream]) -> object:
    """The component config with affinity on the default rule (llama's three replicas, one rank: no
    locality preference, so without affinity every turn is a weighted random pick)."""
    base = build_config({n: f.url for n, f in upstreams.items()})
    rules = [rule.model_dump(by_alias=True, mode="json") for rule in base.policies[0].rules]
    rules[-1]["affinity"] = {"header": "x-session-id", "ttlSeconds": 600, "maxSessions": 1000}
    return build_config(
        {n: f.url for n, f in upstreams.items()},
        rules=rules,
        locality={"preferLocal": False, "failoverOrder": []},
        resilience={"ejectAfterFailures": 1},
    )


async def turn(running: Running, session: str) -> dict[str, str]:
    raw = await running.client().chat.completions.with_raw_response.create(
        model="auto", messages=HI, extra_headers={"x-session-id": session}
    )
    return {k: raw.headers.get(k, "") for k in ("x-modelroute-replica", "x-modelroute-affinity")}


async def test_a_session_stays_on_one_replica_for_100_turns(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    running = await start_sidecar(affinity_config(upstreams))
    first = await turn(running, "conversation-1")
    assert first["x-modelroute-affinity"] == "new"
    for _ in range(99):
        assert await turn(running, "conversation-1") == {
            "x-modelroute-replica": first["x-modelroute-replica"],
            "x-modelroute-affinity": "kept",
        }
    served = {name: len(upstreams[name].requests) for name in LLAMA}
    assert served[first["x-modelroute-replica"]] == 100 and sum(served.values()) == 100
    # without the header the rule routes as before (no affinity header at all)
    raw = await running.client().chat.completions.with_raw_response.create(model="auto", messages=HI)
    assert "x-modelroute-affinity" not in raw.headers
    assert running.sidecar.metrics.affinity.value("kept", "") == 99


async def test_sessions_spread_and_a_dead_replica_breaks_its_sessions_cleanly(
    start_sidecar: SidecarFactory, upstreams: dict[str, FakeUpstream]
) -> None:
    running = await start_sidecar(affinity_config(upstreams))
    by_replica: dict[str, list[str]] = defaultdict(list)
    for n in range(30):
        headers = await turn(running, f"s{n}")
        by_replica[headers["x-modelroute-replica"]].append(f"s{n}")
    assert len(by_replica) >= 2  # sessions spread over the replicas; each keeps its own
    dead = max(by_replica, key=lambda name: len(by_replica[name]))
    first, second = by_replica[dead][:2]
    await upstreams[dead].stop()

    # the first turn after the death: the pinned replica is tried, fails, another answers
    moved = await turn(running, first)
    assert moved["x-modelroute-affinity"] == "broken; reason=attempt-failed"
    assert moved["x-modelroute-replica"] not in ("", dead)
    # the replica is ejected now: the next pinned session is not even sent to it
    other = await turn(running, second)
    assert other["x-modelroute-affinity"] == "broken; reason=ejected"
    assert other["x-modelroute-replica"] not in ("", dead)
    # and both stay on their new replica from then on
    for _ in range(10):
        assert await turn(running, first) == {
            "x-modelroute-replica": moved["x-modelroute-replica"],
            "x-modelroute-affinity": "kept",
        }
        assert (await turn(running, second))["x-modelroute-replica"] == other["x-modelroute-replica"]
    # sessions of the replicas that stayed up never moved
    for name, sessions in by_replica.items():
        if name != dead:
            assert (await turn(running, sessions[0])) == {
                "x-modelroute-replica": name,
                "x-modelroute-affinity": "kept",
            }
