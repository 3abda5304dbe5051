"""No status claims what the sidecars do not run yet: a sync figure counting an older version is cleared
when a new config goes live, and a Canary's weight is `RolledOut` only once every sidecar acknowledged a
live config carrying it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.manifests import canary, endpoint, policy

from modelroute_contract import RouterConfig, short_version
from modelroute_operator.logic import status as st
from modelroute_operator.logic.compiler import NamespaceObjects, compile_namespace, parse_object
from modelroute_operator.logic.resources import Canary, ModelEndpoint, RoutingPolicy

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def objects(weight: int, phase: str = "Progressing") -> tuple[list[dict[str, Any]], RouterConfig]:
    bodies = [endpoint(), endpoint("llama-next"), policy(), canary()]
    for body in bodies:
        body["metadata"].update(namespace="ns", generation=1)
    bodies[3]["status"] = {"phase": phase, "currentStep": 0, "currentWeight": weight}
    if phase in ("Pending", "Mirroring"):
        bodies[3]["spec"]["mirror"] = {"percent": 50}
    parsed = [parse_object(b) for b in bodies]
    result = compile_namespace(
        NamespaceObjects(
            "ns",
            [o for o in parsed if isinstance(o, ModelEndpoint)],
            [o for o in parsed if isinstance(o, RoutingPolicy)],
            [o for o in parsed if isinstance(o, Canary)],
        )
    )
    assert result.config is not None, result.errors
    return bodies, result.config


def with_sync(body: dict[str, Any], figure: str | None, version: str | None) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"] = {"sync": figure, "syncedVersion": version}
    return out


def test_a_sync_figure_of_an_older_version_is_cleared_when_a_new_config_goes_live() -> None:
    status = {"sync": "3/3", "syncedVersion": "old", "laggingPods": []}
    assert st.stale_sync_fields(status, "new") == {
        "sync": None,
        "syncedVersion": None,
        "laggingPods": [],
        "skewedPods": [],
    }
    assert st.stale_sync_fields({**status, "syncedVersion": "new"}, "new") == {}
    assert st.stale_sync_fields({}, "new") == {}  # nothing counted yet: nothing to clear


def test_policy_status_never_shows_a_new_config_next_to_the_old_figure() -> None:
    bodies, live = objects(10)
    body = with_sync(bodies[2], "3/3", "0ld0ld0ld0ld")
    verdict = st.Verdict("RoutingPolicy/support", 1, [], 1, [], live.version)
    desired = st.policy_status(body, verdict, live, NOW)
    assert desired["configVersion"] == short_version(live.version)
    assert desired["sync"] is None and desired["syncedVersion"] is None
    body = with_sync(bodies[2], "3/3", short_version(live.version))
    assert "sync" not in st.policy_status(body, verdict, live, NOW)


@pytest.mark.parametrize(
    ("figure", "counted_live", "status", "reason"),
    [
        ("3/3", True, "True", "Acknowledged"),
        ("2/3", True, "False", "PendingRollout"),
        ("3/3", False, "False", "PendingRollout"),  # the figure counts an older config
        (None, True, "False", "PendingRollout"),  # not counted yet
        ("0/0", True, "False", "NoSidecars"),
    ],
)
def test_a_canary_weight_is_rolled_out_only_when_every_sidecar_acknowledged_it(
    figure: str | None, counted_live: bool, status: str, reason: str
) -> None:
    bodies, live = objects(10)
    version = short_version(live.version) if counted_live else "0ld0ld0ld0ld"
    rollout = st.canary_rollout(bodies[3], live, with_sync(bodies[2], figure, version))
    assert (rollout.status, rollout.reason) == (status, reason), rollout.message
    assert "10%" in rollout.message
    # The controller starts a step's clock from the same judgement.
    acknowledged = st.acknowledged_weight(bodies[3], live, with_sync(bodies[2], figure, version))
    assert acknowledged == (10 if status == "True" else None)


def test_a_weight_not_compiled_yet_is_pending() -> None:
    bodies, live = objects(10)
    ahead = copy.deepcopy(bodies[3])
    ahead["status"]["desiredWeight"] = 50  # the controller moved on; the live config still says 10
    synced = with_sync(bodies[2], "3/3", short_version(live.version))
    rollout = st.canary_rollout(ahead, live, synced)
    assert (rollout.status, rollout.reason) == ("False", "PendingRollout")
    assert "50%" in rollout.message and "10%" in rollout.message
    assert st.acknowledged_weight(ahead, live, synced) == 10  # what the sidecars do run


def test_a_split_for_other_endpoints_is_not_this_canary_rolled_out() -> None:
    bodies, live = objects(10)
    moved = copy.deepcopy(bodies[3])
    moved["spec"]["candidate"] = "llama-v3"  # the live config still splits to the old candidate
    synced = with_sync(bodies[2], "3/3", short_version(live.version))
    assert st.acknowledged_weight(moved, live, synced) is None
    assert st.canary_rollout(moved, live, synced).reason == "NotLive"


def test_a_mirror_is_rolled_out_only_once_the_live_config_carries_the_shadow() -> None:
    # The mirror phase runs at 0%, as the start does: the weight alone cannot tell a config compiled
    # before the phase (no shadow) from one that mirrors.
    before, before_live = objects(0, "Pending")
    mirroring, live = objects(0, "Mirroring")
    synced_before = with_sync(before[2], "3/3", short_version(before_live.version))
    assert before_live.policies[0].rules[0].shadow is None
    assert st.acknowledged_weight(mirroring[3], before_live, synced_before) is None
    rollout = st.canary_rollout(mirroring[3], before_live, synced_before)
    assert (rollout.reason, rollout.message) == (
        "PendingRollout",
        "the mirror to llama-next is not compiled yet",
    )
    synced = with_sync(mirroring[2], "3/3", short_version(live.version))
    assert st.acknowledged_weight(mirroring[3], live, synced) == 0
    assert st.canary_rollout(mirroring[3], live, synced).reason == "Acknowledged"


def test_the_canary_status_carries_the_rollout_condition() -> None:
    bodies, live = objects(10)
    verdict = st.Verdict("Canary/llama-next", 1, [], 1, [], live.version)
    desired = st.canary_status(
        bodies[3], verdict, NOW, live, with_sync(bodies[2], "1/2", short_version(live.version))
    )
    rolled = next(c for c in desired["conditions"] if c["type"] == "RolledOut")
    assert rolled["status"] == "False" and "1/2 sidecars" in rolled["message"]
