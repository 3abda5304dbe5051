"""The watch-fed caches and which events are worth a reconcile pass (the operator's scaling path)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelroute_operator.logic.cache import NOT_SEEN, ObjectCache
from modelroute_operator.logic.changes import needs_pass, sync_changed


def body(name: str = "a", rv: int = 1, ns: str = "team", **status: Any) -> dict[str, Any]:
    return {
        "kind": "ModelEndpoint",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": str(rv),
            "uid": f"u-{name}",
            "generation": 1,
        },
        "spec": {"model": "m"},
        "status": dict(status),
    }


def test_a_namespace_is_held_while_it_has_objects() -> None:
    cache = ObjectCache()
    cache.observe(body("b"))
    cache.observe(body("a"))
    assert [b["metadata"]["name"] for b in cache.in_namespace("team")] == ["a", "b"]
    cache.observe(body("a"), deleted=True)
    cache.observe(body("b"), deleted=True)
    assert cache.namespaces() == set() and cache.in_namespace("team") == []


def test_an_older_body_never_replaces_a_newer_one() -> None:
    cache = ObjectCache()
    cache.observe(body(rv=5, readyReplicas=2))
    cache.put(body(rv=7, readyReplicas=3))  # our write, answered before its watch event
    cache.observe(body(rv=6, readyReplicas=1))  # an event from before the write
    assert cache.get(("team", "a"))["status"] == {"readyReplicas": 3}  # type: ignore[index]


def test_a_write_answered_after_the_delete_does_not_bring_the_object_back() -> None:
    cache = ObjectCache()
    cache.observe(body(rv=5))
    cache.observe(body(rv=5), deleted=True)
    cache.put(body(rv=6))
    assert cache.get(("team", "a")) is None and cache.namespaces() == set()
    cache.put(body(rv=6), create=True)  # a ConfigMap we just created
    assert cache.get(("team", "a")) is not None


def test_the_event_of_our_own_write_compares_with_the_body_before_it() -> None:
    cache = ObjectCache()
    cache.observe(body(rv=1))
    assert cache.take_previous(("team", "a")) is None  # new
    assert cache.take_previous(("team", "a")) is NOT_SEEN
    before = cache.get(("team", "a"))
    cache.put(body(rv=2, replicas=[{"name": "r", "health": "Unhealthy"}]))
    cache.observe(body(rv=2, replicas=[{"name": "r", "health": "Unhealthy"}]))
    assert cache.take_previous(("team", "a")) == before
    cache.put(body(rv=3), compare_before=False)
    cache.observe(body(rv=3))
    assert cache.take_previous(("team", "a")) == body(rv=3)


def endpoint(**status: Any) -> dict[str, Any]:
    return body(**status)


def changed(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    *parents, leaf = path.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


BASE = endpoint(
    conditions=[{"type": "Ready", "status": "True"}], replicas=[{"name": "r", "health": "Healthy"}]
)
POLICY = {
    "kind": "RoutingPolicy",
    "metadata": {"name": "p", "namespace": "team", "uid": "u", "generation": 2},
    "spec": {"rules": []},
    "status": {"configVersion": "abc", "syncedVersion": "abc", "sync": "1/2", "laggingPods": ["x"]},
}
CANARY = {
    "kind": "Canary",
    "metadata": {"name": "c", "namespace": "team", "uid": "u", "generation": 1},
    "spec": {},
    "status": {"conditions": [], "observedGeneration": 1, "desiredWeight": 10},
}


@pytest.mark.parametrize(
    ("kind", "before", "after", "with_canaries", "expected"),
    [
        # our own fields: ignored
        ("ModelEndpoint", BASE, changed(BASE, "status.conditions", []), False, False),
        ("ModelEndpoint", BASE, changed(BASE, "status.readySummary", "1/1"), False, False),
        ("ModelEndpoint", BASE, changed(BASE, "metadata.resourceVersion", "9"), False, False),
        ("RoutingPolicy", POLICY, changed(POLICY, "status.laggingPods", []), True, False),
        ("RoutingPolicy", POLICY, changed(POLICY, "status.sync", "2/2"), False, False),
        ("Canary", CANARY, changed(CANARY, "status.conditions", [{"type": "Ready"}]), True, False),
        # inputs: a pass
        ("ModelEndpoint", None, BASE, False, True),
        ("ModelEndpoint", BASE, changed(BASE, "spec.model", "n"), False, True),
        ("ModelEndpoint", BASE, changed(BASE, "metadata.generation", 2), False, True),
        ("ModelEndpoint", BASE, changed(BASE, "metadata.uid", "new"), False, True),
        ("ModelEndpoint", BASE, changed(BASE, "metadata.annotations", {"touched": "1"}), False, True),
        (
            "ModelEndpoint",
            BASE,
            changed(BASE, "status.replicas", [{"name": "r", "health": "Unhealthy"}]),
            False,
            True,
        ),
        ("RoutingPolicy", POLICY, changed(POLICY, "status.sync", "2/2"), True, True),  # a canary reads it
        (
            "RoutingPolicy",
            POLICY,
            changed(POLICY, "status.syncedVersion", "old"),
            False,
            True,
        ),  # stale: cleared
        ("Canary", CANARY, changed(CANARY, "status.desiredWeight", 20), True, True),
    ],
)
def test_which_events_ask_for_a_pass(
    kind: str, before: dict[str, Any] | None, after: dict[str, Any], with_canaries: bool, expected: bool
) -> None:
    assert needs_pass(kind, before, after, with_canaries) is expected


def test_a_moved_sync_figure_is_seen() -> None:
    assert sync_changed(POLICY, changed(POLICY, "status.sync", "2/2"))
    assert not sync_changed(POLICY, changed(POLICY, "status.laggingPods", []))
