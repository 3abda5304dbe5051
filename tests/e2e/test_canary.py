"""Canaries that run themselves on real traffic: promotion step by step, automatic rollback with the
measured figures, a mirror phase judged on shadow copies before any user meets the candidate, and an
operator restart mid-canary that neither repeats nor skips a step."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import Cluster
from tests.e2e.load import Load
from tests.kube_harness import OperatorProcess, wait_for
from tests.manifests import local_endpoint as endpoint
from tests.manifests import to_yaml

pytestmark = pytest.mark.e2e


def canary_setup(
    cluster: Cluster,
    pause: str = "3s",
    candidate_fail_percent: float = 0,
    before_canary: Callable[[], None] | None = None,
    analysis: dict[str, Any] | None = None,
    feedback: dict[str, float] | None = None,
    mirror: dict[str, Any] | None = None,
) -> Load:
    stable, candidate = cluster.upstream("stable"), cluster.upstream("candidate")
    if candidate_fail_percent:
        import json
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{candidate.port}/_fake/behavior",
            data=json.dumps({"failPercent": candidate_fail_percent, "failStatus": 500}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()

    policy = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "support"},
        "spec": {
            "virtualModels": ["support-bot"],
            # One attempt: the analysis judges the candidate's own answers, not retries that hide them.
            "resilience": {"maxAttempts": 1},
            "rules": [{"name": "default", "targets": [{"endpoint": "llama-v1"}]}],
        },
    }
    cluster.kubectl.apply(
        to_yaml(endpoint("llama-v1", stable.url), endpoint("llama-v2", candidate.url), policy),
        cluster.namespace,
    )
    wait_for(cluster.live_version, "the config")
    sidecar = cluster.sidecar("app-0", "eu-west-1")
    load = Load(sidecar.base_url, sticky_users=500, feedback=feedback or {}).start()
    canary = {
        "apiVersion": "modelroute.dev/v1alpha1",
        "kind": "Canary",
        "metadata": {"name": "llama-v2"},
        "spec": {
            "target": {"policy": "support", "rule": "default"},
            "stable": "llama-v1",
            "candidate": "llama-v2",
            "steps": [{"weight": 20, "pause": pause}, {"weight": 50, "pause": pause}],
            "analysis": {"maxErrorRatePercent": 10, "minRequests": 10, "failureLimit": 1, **(analysis or {})},
            "stickiness": {"header": "x-user-id"},
            **({"mirror": mirror} if mirror else {}),
        },
    }
    if before_canary is not None:
        before_canary()
    cluster.kubectl.apply(to_yaml(canary), cluster.namespace)
    return load


def canary_status(cluster: Cluster) -> dict[str, Any]:
    return (cluster.kubectl.get("modelcanary", "llama-v2", cluster.namespace) or {}).get("status", {})


def rolled_back(cluster: Cluster, load: Load, timeout: float = 60) -> dict[str, Any]:
    """The Canary's status once it is RolledBack (the load stops either way)."""
    try:
        return wait_for(
            lambda: (s := canary_status(cluster)).get("phase") == "RolledBack" and s, "rollback", timeout
        )
    finally:
        load.stop()


def step_sequence(status: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(h["phase"], h["step"], h["weight"]) for h in status.get("history", [])]


def test_a_good_candidate_is_promoted_step_by_step(cluster: Cluster) -> None:
    load = canary_setup(cluster)
    try:
        status = wait_for(
            lambda: (s := canary_status(cluster)).get("phase") == "Promoted" and s, "promotion", 60
        )
    finally:
        load.stop()
    assert status["desiredWeight"] == 100
    # currentWeight claims 100 only once every sidecar runs it.
    wait_for(lambda: canary_status(cluster).get("currentWeight") == 100, "the 100% acknowledged", 30)
    weights = [w for phase, _, w in step_sequence(status) if phase == "Progressing"]
    assert weights == [20, 50], step_sequence(status)
    assert status["lastAnalysis"]["verdict"] == "Pass"
    assert status["lastAnalysis"]["candidate"]["requests"] >= 10
    live = cluster.live_config_json()
    assert '"candidateWeight":100.0' in live or '"candidateWeight":100' in live
    assert load.failures() == []
    assert load.endpoints_since(0)["llama-v2"] > 0, "the candidate served real traffic"
    # Stickiness: one user always lands on one side within a step (weights only grow, so a user on the
    # candidate never goes back to stable).
    events = cluster.kubectl.json(
        "get", "events", "-n", cluster.namespace, "--field-selector", "involvedObject.name=llama-v2"
    )
    assert "Promoted" in {e["reason"] for e in events["items"]}


def test_a_failing_candidate_is_rolled_back_with_the_figures(cluster: Cluster) -> None:
    load = canary_setup(cluster, candidate_fail_percent=30)
    status = rolled_back(cluster, load)
    assert status["desiredWeight"] == 0
    wait_for(lambda: canary_status(cluster).get("currentWeight") == 0, "the 0% acknowledged", 30)
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Fail"
    if analysis["candidate"].get("ejections") and analysis["candidate"]["requests"] < 10:
        # Its first few answers failed in a row (30% each): the sidecar ejected it and its users failed
        # over, so it could not reach minRequests; the ejection decided, as the analysis says.
        assert "ejected" in analysis["message"], analysis
    else:
        assert 15 <= analysis["candidate"]["errorRatePercent"] <= 50, analysis
        assert analysis["candidate"]["requests"] >= 10
    events = cluster.kubectl.json(
        "get", "events", "-n", cluster.namespace, "--field-selector", "involvedObject.name=llama-v2"
    )
    warnings = [e for e in events["items"] if e["type"] == "Warning" and e["reason"] == "RolledBack"]
    assert warnings and "%" in warnings[0]["message"]
    live = cluster.live_config_json()
    assert '"candidateWeight":0' in live


def test_a_candidate_the_sidecar_ejects_is_rolled_back_not_held_for_want_of_traffic(cluster: Cluster) -> None:
    """Every answer of the candidate fails: the sidecar ejects it after 3 and its users fail over to
    stable, so it never reaches minRequests. The ejection in /stats decides the analysis (before, the
    step held on "too little traffic" for as long as the ejection backoff kept doubling)."""
    load = canary_setup(cluster, candidate_fail_percent=100, analysis={"minRequests": 50})
    status = rolled_back(cluster, load)
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Fail" and analysis["candidate"]["ejections"] >= 1, analysis
    assert analysis["candidate"]["requests"] < 50 and "ejected" in analysis["message"], analysis
    # maxAttempts 1: the candidate's own failures reach their users, but only until each ejection;
    # everyone else was served by stable.
    failed, served = len(load.failures()), sum(load.endpoints_since(0).values())
    assert failed < 50 and served > 10 * failed, (failed, served)


def test_a_candidate_whose_answers_score_worse_is_rolled_back(cluster: Cluster) -> None:
    """No errors and the same latency: only the quality feedback the client posts through the data
    port tells the candidate (scored 0.4) from stable (0.9), and the analysis rolls it back on that."""
    load = canary_setup(
        cluster,
        analysis={"maxFeedbackScoreDrop": 0.2, "minFeedback": 5},
        feedback={"llama-v1": 0.9, "llama-v2": 0.4},
    )
    status = rolled_back(cluster, load)
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Fail", analysis
    assert analysis["candidate"]["errorRatePercent"] == 0
    assert analysis["candidate"]["meanFeedbackScore"] == 0.4 and analysis["candidate"]["feedback"] >= 5
    assert analysis["stable"]["meanFeedbackScore"] == 0.9
    assert "below stable's 0.900" in analysis["message"]
    assert load.feedback_answers and set(load.feedback_answers) == {200}, set(load.feedback_answers)


def events_of(cluster: Cluster) -> list[dict[str, Any]]:
    events = cluster.kubectl.json(
        "get", "events", "-n", cluster.namespace, "--field-selector", "involvedObject.name=llama-v2"
    )
    return list(events["items"])


def test_a_mirror_phase_passes_on_shadow_copies_then_the_steps_run(cluster: Cluster) -> None:
    load = canary_setup(cluster, mirror={"percent": 100, "pause": "3s"})
    try:
        mirroring = wait_for(
            lambda: canary_status(cluster).get("phase") == "Mirroring", "the mirror phase", 30
        )
        assert mirroring
        wait_for(
            lambda: '"shadow":{"endpoint":"llama-v2"' in cluster.live_config_json(), "the mirror live", 30
        )
        status = wait_for(
            lambda: (s := canary_status(cluster)).get("phase") == "Promoted" and s, "promotion", 90
        )
    finally:
        load.stop()
    assert step_sequence(status) == [
        ("Mirroring", 0, 0),
        ("Progressing", 0, 20),
        ("Progressing", 1, 50),
        ("Promoted", 1, 100),
    ]
    passed = [e for e in events_of(cluster) if e["reason"] == "MirrorPassed"]
    assert passed and "copies to candidate 0.0% errors" in passed[0]["message"], passed
    # The copies came from real client requests: the candidate's fake saw them marked as shadow copies.
    seen = cluster.upstreams["candidate"].requests()
    assert any(r["headers"].get("x-modelroute-shadow") == "1" for r in seen)
    assert load.failures() == []
    # Once promoted the mirror is gone from the config: only a mirroring canary copies.
    wait_for(lambda: '"shadow"' not in cluster.live_config_json(), "the mirror removed", 30)


def test_a_candidate_failing_its_copies_is_rolled_back_before_serving_anyone(cluster: Cluster) -> None:
    """The candidate answers 30% of requests with 500s. Its copies fail, so the mirror phase rolls it back;
    no client request was answered by it, and no client saw an error."""
    load = canary_setup(cluster, candidate_fail_percent=30, mirror={"percent": 100, "pause": "3s"})
    status = rolled_back(cluster, load)
    assert step_sequence(status) == [("Mirroring", 0, 0), ("RolledBack", 0, 0)]
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Fail" and analysis["message"].startswith("error rate"), analysis
    assert analysis["candidate"]["requests"] >= 10 and analysis["candidate"]["errors"] > 0
    assert analysis["stable"]["errors"] == 0  # the primary's answers to the very same requests
    warnings = [e for e in events_of(cluster) if e["type"] == "Warning" and e["reason"] == "RolledBack"]
    assert warnings and warnings[0]["message"].startswith("mirror failed analysis"), warnings
    assert load.failures() == [], "clients never see a copy's answer"
    assert "llama-v2" not in load.endpoints_since(0), "the candidate answered no client"
    assert cluster.upstreams["candidate"].requests(), "the copies reached the candidate"


def test_an_operator_restart_mid_canary_resumes_at_the_same_step(cluster: Cluster) -> None:
    load = canary_setup(cluster, pause="6s")
    try:
        wait_for(lambda: canary_status(cluster).get("currentStep") == 1, "step 1", 60)
        before = canary_status(cluster)
        assert cluster.operator.proc is not None
        os.killpg(cluster.operator.proc.pid, signal.SIGKILL)
        cluster.operator.proc.wait()
        cluster.operator = OperatorProcess(
            cluster.plane, cluster.workdir / "operator-2.log", namespaces=[cluster.namespace]
        )
        cluster.operator.start()
        status = wait_for(
            lambda: (s := canary_status(cluster)).get("phase") == "Promoted" and s, "promotion", 60
        )
    finally:
        load.stop()
    sequence = step_sequence(status)
    progressing = [(step, weight) for phase, step, weight in sequence if phase == "Progressing"]
    assert progressing == [(0, 20), (1, 50)], sequence
    # The step that was running when the operator died kept its start time.
    assert any(h["step"] == 1 for h in before["history"])
    assert status["history"][: len(before["history"])] == before["history"]


def test_a_step_starts_when_every_sidecar_runs_its_weight(cluster: Cluster) -> None:
    """A second sidecar is frozen (SIGSTOP) before the canary starts, so the 20% step's config cannot
    reach it: the weight is decided but not acknowledged. The step's clock and window wait (far past its
    pause) and `currentWeight` keeps the weight every sidecar runs; once the sidecar thaws and
    acknowledges, the step starts, and the canary is promoted as usual."""
    frozen: list[int] = []

    def freeze_a_second_sidecar() -> None:
        lagging = cluster.sidecar("app-1", "eu-west-1")
        wait_for(lambda: cluster.policy_status("support").get("sync") == "2/2", "both sidecars synced")
        assert lagging.proc is not None
        os.killpg(lagging.proc.pid, signal.SIGSTOP)
        frozen.append(lagging.proc.pid)

    load = canary_setup(cluster, pause="2s", before_canary=freeze_a_second_sidecar)
    try:
        pending = wait_for(
            lambda: (s := canary_status(cluster)).get("desiredWeight") == 20 and s, "the 20% step decided", 60
        )
        # Three times the step's pause: nothing starts, nothing is judged, and no weight is claimed.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            status = canary_status(cluster)
            assert status.get("stepStartedAt") is None, status
            assert status.get("lastAnalysis") is None, status
            # No weight of this canary has run on every sidecar yet.
            assert status.get("currentWeight") in (None, 0) and status["phase"] == "Progressing", status
            time.sleep(0.2)  # a polling interval, not a wait for an outcome
        rolled = next(c for c in pending.get("conditions", []) if c["type"] == "RolledOut")
        assert rolled["status"] != "True", rolled
        thawed_at = datetime.now(UTC).replace(microsecond=0)
        os.killpg(frozen.pop(), signal.SIGCONT)
        started = wait_for(
            lambda: (s := canary_status(cluster)).get("stepStartedAt") and s,
            "the step to start at the ack",
            60,
        )
        assert datetime.fromisoformat(started["stepStartedAt"]) >= thawed_at, (started, thawed_at)
        assert started["currentWeight"] in (20, 50), started  # 50 only if step 1 ran and was acked already
        status = wait_for(
            lambda: (s := canary_status(cluster)).get("phase") == "Promoted" and s, "promotion", 90
        )
    finally:
        for pid in frozen:
            os.killpg(pid, signal.SIGCONT)
        load.stop()
    assert [w for phase, _, w in step_sequence(status) if phase == "Progressing"] == [20, 50]
    assert status["lastAnalysis"]["verdict"] == "Pass"
    assert wait_for(lambda: canary_status(cluster).get("currentWeight") == 100, "the 100% acknowledged", 30)
