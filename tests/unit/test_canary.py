"""The canary controller's step: progression on measured traffic, rollback with figures, holds, manual
controls, restarts mid-run, counter resets, and the p95 of cumulative histograms.

Runs are simulated: a clock, and sidecar counters that grow with traffic split by the live weight.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelroute_contract.stats import StatsSnapshot
from modelroute_operator.logic import canary as cn
from modelroute_operator.logic.canary import CanaryEvent, CanaryOutcome
from modelroute_operator.logic.resources import (
    CanaryPhase,
    CanarySpec,
    CanaryStatus,
    HistoryEntry,
    ManualActions,
    SideCounters,
    StepBaseline,
)
from modelroute_operator.logic.traffic import (
    CanaryStats,
    SideStats,
    counters,
    p95,
    quantile,
    sum_stats,
    window,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
INF = math.inf
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
P, MIRRORING, PROG, PAUSED, PROMOTED, ROLLED_BACK = (
    CanaryPhase.PENDING,
    CanaryPhase.MIRRORING,
    CanaryPhase.PROGRESSING,
    CanaryPhase.PAUSED,
    CanaryPhase.PROMOTED,
    CanaryPhase.ROLLED_BACK,
)


def canary(**spec: Any) -> CanarySpec:
    body: dict[str, Any] = {
        "target": {"policy": "chat", "rule": "default"},
        "stable": "llama-v1",
        "candidate": "llama-v2",
        "steps": [
            {"weight": 10, "pause": "1m"},
            {"weight": 50, "pause": "1m"},
            {"weight": 100, "pause": "1m"},
        ],
        "analysis": {"maxErrorRatePercent": 5, "minRequests": 20},
    }
    body.update(spec)
    return CanarySpec.model_validate(body)


# ------------------------------------------------------------------------------------------ simulator


@dataclass
class Side:
    """Cumulative counters of one endpoint, as the sidecars' /stats sum them."""

    requests: int = 0
    errors: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    feedback: int = 0
    score_sum: float = 0.0
    ejections: int = 0

    def add(self, requests: int, errors: int, latency: float, feedback: int = 0, score: float = 0.0) -> None:
        self.requests += requests
        self.errors += errors
        self.feedback += feedback
        self.score_sum += feedback * score
        index = next((i for i, bound in enumerate(BOUNDS) if latency <= bound), len(BOUNDS))
        self.counts[index] += requests

    def stats(self) -> SideStats:
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        buckets = tuple(zip((*BOUNDS, INF), cumulative, strict=True))
        return SideStats(self.requests, self.errors, buckets, self.feedback, self.score_sum, self.ejections)


@dataclass(frozen=True)
class Profile:
    """How an endpoint answers: error fraction, latency, and the quality score its answers get from the
    `feedback_share` of requests whose client posts feedback (None: no feedback)."""

    error_rate: float = 0.0
    latency: float = 0.2
    score: float | None = None
    feedback_share: float = 0.5


@dataclass
class Traffic:
    stable: Side = field(default_factory=Side)
    candidate: Side = field(default_factory=Side)
    primary: Side = field(default_factory=Side)
    """The rule's shadow figures: the primary (stable) on the requests copied to the candidate..."""
    copies: Side = field(default_factory=Side)
    """...and the copies, as the candidate answered them (no feedback: clients never see them)."""

    def flow(
        self, seconds: float, weight: int, rps: float, stable: Profile, candidate: Profile, mirror: float = 0
    ) -> None:
        total = int(seconds * rps)
        to_candidate = total * weight // 100
        for side, n, profile in (
            (self.candidate, to_candidate, candidate),
            (self.stable, total - to_candidate, stable),
        ):
            feedback = 0 if profile.score is None else int(n * profile.feedback_share)
            side.add(n, round(n * profile.error_rate), profile.latency, feedback, profile.score or 0.0)
        copied = int(total * mirror / 100)
        self.primary.add(copied, round(copied * stable.error_rate), stable.latency)
        self.copies.add(copied, round(copied * candidate.error_rate), candidate.latency)

    def stats(self) -> CanaryStats:
        mirror = CanaryStats(self.primary.stats(), self.copies.stats())
        return CanaryStats(self.stable.stats(), self.candidate.stats(), mirror)


def live_weight(status: CanaryStatus) -> int:
    """What the compiler sends to the candidate (see compiler.candidate_weight)."""
    if status.phase == PROMOTED:
        return 100
    if status.phase == ROLLED_BACK:
        return 0
    return (status.desired_weight if status.desired_weight is not None else status.current_weight) or 0


def live_mirror(spec: CanarySpec, status: CanaryStatus) -> float:
    """The share of the route the compiler copies to the candidate (see build._build_mirror)."""
    return spec.mirror.percent if spec.mirror is not None and status.phase == MIRRORING else 0.0


def step(
    spec: CanarySpec,
    status: CanaryStatus,
    now: datetime,
    stats: CanaryStats | None,
    baseline: StepBaseline | None,
) -> CanaryOutcome:
    """`canary.step` with sidecars that run every compiled weight at once: the sidecars acknowledge
    the weight compiled from `status`, and a newly decided weight is acknowledged at the same instant
    (tests of a slow rollout call `cn.step` with `acknowledged` themselves)."""
    first = cn.step(spec, status, now, stats, baseline, live_weight(status))
    if first.status.current_weight == live_weight(first.status):
        return first
    second = cn.step(spec, first.status, now, stats, first.baseline, live_weight(first.status))
    changed = second.status != status or second.baseline != baseline
    return CanaryOutcome(
        second.status, second.baseline, first.events + second.events, second.requeue_after, changed
    )


def roundtrip(
    status: CanaryStatus, baseline: StepBaseline | None
) -> tuple[CanaryStatus, StepBaseline | None]:
    """What an operator restart reads back: status as the API server stores it (JSON, camelCase)."""
    stored = json.loads(json.dumps(status.model_dump(by_alias=True, mode="json", exclude_none=True)))
    base = (
        None if baseline is None else json.loads(json.dumps(baseline.model_dump(by_alias=True, mode="json")))
    )
    return CanaryStatus.model_validate(stored), None if base is None else StepBaseline.model_validate(base)


@dataclass
class Run:
    status: CanaryStatus
    baseline: StepBaseline | None
    events: list[CanaryEvent]
    weights: list[int]
    """Live weight after each step() call."""
    now: datetime


def drive(
    spec: CanarySpec,
    candidate: Profile = Profile(),
    stable: Profile = Profile(),
    rps: float = 10,
    restarts: bool = False,
    max_calls: int = 100,
) -> Run:
    """Call step() at the times it asks for, with traffic flowing at the live weight in between."""
    traffic, status, baseline, now = Traffic(), CanaryStatus(), None, T0
    events: list[CanaryEvent] = []
    weights: list[int] = []
    for _ in range(max_calls):
        out = step(spec, status, now, traffic.stats(), baseline)
        status, baseline = out.status, out.baseline
        events += out.events
        weights.append(live_weight(status))
        if restarts:
            status, baseline = roundtrip(status, baseline)
        if out.requeue_after is None:
            break
        traffic.flow(
            out.requeue_after, live_weight(status), rps, stable, candidate, live_mirror(spec, status)
        )
        now += timedelta(seconds=out.requeue_after)
    return Run(status, baseline, events, weights, now)


# ------------------------------------------------------------------------------------ p95 and windows


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ([(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)], 0.95, 0.75),
        ([(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)], 0.5, 0.1),
        ([(0.2, 100), (INF, 100)], 0.95, 0.19),  # first bucket: interpolated from 0
        ([(0.1, 0), (1.0, 90), (INF, 100)], 0.95, 1.0),  # in +Inf: the highest finite bound
        ([(0.1, 0), (0.5, 0), (INF, 0)], 0.95, None),  # no observations
        ([], 0.95, None),
        ([(0.1, 10)], 0.95, None),  # no +Inf bucket: not a histogram
        ([(0.1, 0), (0.5, 100), (1.0, 100), (INF, 100)], 0.95, 0.48),
    ],
    ids=["middle", "median-at-bound", "first", "inf", "empty", "none", "no-inf", "one-bucket-full"],
)
def test_quantile_like_prometheus(buckets: list[tuple[float, int]], q: float, expected: float | None) -> None:
    result = quantile(q, buckets)
    assert result == expected if expected is None else result == pytest.approx(expected)


def test_p95_is_the_095_quantile() -> None:
    buckets = [(0.1, 50), (0.5, 90), (1.0, 100), (INF, 100)]
    assert p95(buckets) == quantile(0.95, buckets)


def side(requests: int, errors: int, *counts: int) -> SideStats:
    return SideStats(requests, errors, tuple(zip((0.1, 1.0, INF), counts, strict=True)))


@pytest.mark.parametrize(
    ("start", "now", "expected"),
    [
        (side(100, 5, 50, 90, 100), side(150, 6, 60, 130, 150), side(50, 1, 10, 40, 50)),
        (side(100, 5, 50, 90, 100), side(100, 5, 50, 90, 100), side(0, 0, 0, 0, 0)),
        (side(100, 5, 50, 90, 100), side(40, 1, 20, 30, 40), None),  # a sidecar restarted
        (side(100, 5, 50, 90, 100), side(150, 4, 60, 130, 150), None),  # errors went down
        (side(100, 5, 50, 90, 100), side(150, 6, 40, 130, 150), None),  # one bucket went down
        (side(100, 5, 50, 90, 100), SideStats(150, 6, ((0.2, 60), (INF, 150))), None),  # new buckets
        (SideStats(0, 0, ()), side(10, 1, 5, 8, 10), side(10, 1, 5, 8, 10)),  # no sidecar at start
    ],
    ids=["growth", "idle", "restart", "errors-down", "bucket-down", "buckets-changed", "empty-start"],
)
def test_window(start: SideStats, now: SideStats, expected: SideStats | None) -> None:
    assert window(now, counters(start)) == expected


def test_counters_store_without_infinity() -> None:
    stored = counters(side(100, 5, 50, 90, 100))
    assert stored.latency_bounds_seconds == [0.1, 1.0] and stored.latency_buckets == [50, 90, 100]
    assert json.loads(stored.model_dump_json(by_alias=True))["latencyBoundsSeconds"] == [0.1, 1.0]


# ---------------------------------------------------------------------------------------- progression


def test_good_candidate_is_promoted_step_by_step() -> None:
    run = drive(canary())
    assert run.status.phase == PROMOTED
    assert [(e.phase, e.step, e.weight) for e in run.status.history] == [
        (PROG, 0, 10),
        (PROG, 1, 50),
        (PROG, 2, 100),
        (PROMOTED, 2, 100),
    ]
    assert [e.reason for e in run.events] == ["Started", "StepPassed", "StepPassed", "Promoted"]
    assert not any(e.warning for e in run.events)
    # Each step lasts its pause: 3 steps of 1 minute.
    assert run.now - T0 == timedelta(minutes=3)
    assert run.weights == [10, 50, 100, 100]
    analysis = run.status.last_analysis
    assert analysis is not None and (analysis.verdict, analysis.step) == ("Pass", 2)
    # Only the last step's traffic is judged: 1 minute at 10 rps, all to the candidate.
    assert (analysis.candidate.requests, analysis.stable.requests) == (600, 0)


def test_step_windows_count_only_their_own_traffic() -> None:
    spec = canary(steps=[{"weight": 10, "pause": "1m"}, {"weight": 50, "pause": "1m"}])
    traffic, status, baseline = Traffic(), CanaryStatus(), None
    out = step(spec, status, T0, traffic.stats(), baseline)
    traffic.flow(60, 10, 10, Profile(), Profile())
    out = step(spec, out.status, T0 + timedelta(minutes=1), traffic.stats(), out.baseline)
    first = out.status.last_analysis
    assert first is not None and (first.candidate.requests, first.stable.requests) == (60, 540)
    traffic.flow(60, 50, 10, Profile(), Profile())
    out = step(spec, out.status, T0 + timedelta(minutes=2), traffic.stats(), out.baseline)
    second = out.status.last_analysis
    assert second is not None and (second.candidate.requests, second.stable.requests) == (300, 300)


def test_erroring_candidate_is_rolled_back_with_figures() -> None:
    run = drive(canary(), candidate=Profile(error_rate=0.3))
    assert run.status.phase == ROLLED_BACK and run.status.current_weight == 0
    assert run.weights[-1] == 0 and run.status.failed_analyses == 1
    analysis = run.status.last_analysis
    assert analysis is not None and (analysis.verdict, analysis.step) == ("Fail", 0)
    assert analysis.candidate.error_rate_percent == pytest.approx(30.0)
    assert (analysis.candidate.requests, analysis.candidate.errors) == (60, 18)
    assert analysis.stable.error_rate_percent == 0
    assert "error rate 30.0% > 5%" in analysis.message
    warning = run.events[-1]
    assert (warning.reason, warning.warning) == ("RolledBack", True)
    assert "30.0%" in warning.message and "18/60" in warning.message
    assert run.status.history[-1].phase == ROLLED_BACK


def test_failure_limit_restarts_the_step_until_reached() -> None:
    run = drive(canary(analysis={"minRequests": 20, "failureLimit": 2}), candidate=Profile(error_rate=0.3))
    assert [(e.phase, e.step, e.weight) for e in run.status.history] == [
        (PROG, 0, 10),
        (PROG, 0, 10),  # first failure: same step, fresh window
        (ROLLED_BACK, 0, 0),
    ]
    assert [(e.reason, e.warning) for e in run.events] == [
        ("Started", False),
        ("AnalysisFailed", True),
        ("RolledBack", True),
    ]
    assert run.status.failed_analyses == 2
    assert run.now - T0 == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("analysis", "candidate", "stable", "fails", "text"),
    [
        ({"maxP95Latency": "500ms"}, Profile(latency=0.9), Profile(), True, "p95 "),
        ({"maxP95Latency": "2s"}, Profile(latency=0.9), Profile(), False, ""),
        ({"maxLatencyIncreasePercent": 50}, Profile(latency=0.9), Profile(latency=0.2), True, "above stable"),
        ({"maxLatencyIncreasePercent": 50}, Profile(latency=0.2), Profile(latency=0.2), False, ""),
        ({"maxErrorRatePercent": 40}, Profile(error_rate=0.3), Profile(), False, ""),
    ],
    ids=["p95-over-limit", "p95-under-limit", "slower-than-stable", "as-fast", "errors-under-limit"],
)
def test_thresholds(
    analysis: dict[str, Any], candidate: Profile, stable: Profile, fails: bool, text: str
) -> None:
    spec = canary(steps=[{"weight": 50, "pause": "1m"}], analysis={"minRequests": 20, **analysis})
    run = drive(spec, candidate=candidate, stable=stable)
    result = run.status.last_analysis
    assert result is not None and result.verdict == ("Fail" if fails else "Pass")
    assert run.status.phase == (ROLLED_BACK if fails else PROMOTED)
    assert text in result.message


@pytest.mark.parametrize(
    ("analysis", "candidate", "stable", "verdict", "text"),
    [
        ({"minFeedbackScore": 0.7}, Profile(score=0.5), Profile(score=0.9), "Fail", "0.500 < 0.7"),
        ({"minFeedbackScore": 0.7}, Profile(score=0.8), Profile(score=0.9), "Pass", "feedback 0.800"),
        (
            {"maxFeedbackScoreDrop": 0.1},
            Profile(score=0.7),
            Profile(score=0.9),
            "Fail",
            "0.200 below stable's 0.900 (limit 0.1)",
        ),
        ({"maxFeedbackScoreDrop": 0.1}, Profile(score=0.85), Profile(score=0.9), "Pass", ""),
        ({"maxFeedbackScoreDrop": 0.1}, Profile(score=0.3), Profile(), "Pass", "feedback not compared"),
    ],
    ids=["below-minimum", "above-minimum", "worse-than-stable", "close-to-stable", "stable-unscored"],
)
def test_feedback_gates(
    analysis: dict[str, Any], candidate: Profile, stable: Profile, verdict: str, text: str
) -> None:
    spec = canary(steps=[{"weight": 50, "pause": "1m"}], analysis={"minRequests": 20, **analysis})
    run = drive(spec, candidate=candidate, stable=stable)
    result = run.status.last_analysis
    assert result is not None and result.verdict == verdict, result
    assert text in result.message
    assert result.candidate.feedback > 0 and result.candidate.mean_feedback_score == candidate.score


def test_too_little_feedback_holds_the_step() -> None:
    spec = canary(
        steps=[{"weight": 50, "pause": "1m"}],
        analysis={"minRequests": 20, "minFeedbackScore": 0.5, "minFeedback": 1000},
    )
    run = drive(spec, candidate=Profile(score=0.1), stable=Profile(score=0.9), max_calls=5)
    result = run.status.last_analysis
    assert run.status.phase == PROG and result is not None and result.verdict == "Inconclusive"
    assert "too little feedback" in result.message and "/1000 candidate feedback posts" in result.message


def test_feedback_counts_go_into_the_baseline_and_window() -> None:
    start = SideStats(10, 1, ((0.1, 5), (INF, 10)), feedback=4, feedback_score_sum=2.0)
    later = SideStats(30, 2, ((0.1, 15), (INF, 30)), feedback=10, feedback_score_sum=8.0)
    assert window(later, counters(start)) == SideStats(20, 1, ((0.1, 10), (INF, 20)), 6, 6.0)
    fewer = SideStats(30, 2, ((0.1, 15), (INF, 30)), feedback=3, feedback_score_sum=8.0)
    assert window(fewer, counters(start)) is None  # a sidecar restarted: its feedback went back to zero


def test_latency_not_compared_when_stable_has_no_traffic() -> None:
    spec = canary(steps=[{"weight": 100, "pause": "1m"}], analysis={"maxLatencyIncreasePercent": 10})
    run = drive(spec, candidate=Profile(latency=3.0))
    result = run.status.last_analysis
    assert run.status.phase == PROMOTED and result is not None
    assert "not compared with stable (0 stable requests)" in result.message


# ----------------------------------------------------------------------------------------------- holds


def test_too_little_traffic_holds_and_says_so_once() -> None:
    spec = canary(analysis={"minRequests": 100})
    traffic = Traffic()
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    traffic.flow(60, 10, 10, Profile(), Profile())  # 60 candidate requests < 100
    end = T0 + timedelta(minutes=1)
    held = step(spec, out.status, end, traffic.stats(), out.baseline)
    assert (held.status.phase, held.status.current_step, held.requeue_after) == (PROG, 0, 10.0)
    analysis = held.status.last_analysis
    assert analysis is not None and analysis.verdict == "Inconclusive"
    assert "60/100 candidate requests" in analysis.message
    assert [e.reason for e in held.events] == ["AnalysisInconclusive"]
    # Nothing new: nothing to write, nothing to say.
    again = step(spec, held.status, end + timedelta(seconds=10), traffic.stats(), held.baseline)
    assert (again.changed, again.events, again.status) == (False, (), held.status)
    # More traffic: figures move without another Event, and then the step passes.
    traffic.flow(20, 10, 10, Profile(), Profile())
    more = step(spec, again.status, end + timedelta(seconds=20), traffic.stats(), again.baseline)
    assert more.changed and more.events == ()
    traffic.flow(40, 10, 10, Profile(), Profile())
    passed = step(spec, more.status, end + timedelta(seconds=60), traffic.stats(), more.baseline)
    assert (passed.status.current_step, [e.reason for e in passed.events]) == (1, ["StepPassed"])


def test_a_candidate_the_sidecars_ejected_fails_without_waiting_for_min_requests() -> None:
    # Seen on a loaded box: the candidate failed its first 3 requests, every sidecar ejected it, its
    # users failed over to stable, and the step held at "3/10 candidate requests" while the ejection
    # backoff doubled. The ejection is the sidecars' own verdict on the candidate: it decides.
    spec = canary(analysis={"minRequests": 100})
    traffic = Traffic()
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    traffic.flow(60, 10, 10, Profile(), Profile())
    traffic.candidate.add(3, 3, 0.01)
    traffic.candidate.ejections += 1
    failed = step(spec, out.status, T0 + timedelta(minutes=1), traffic.stats(), out.baseline)
    assert failed.status.phase == ROLLED_BACK and failed.status.desired_weight == 0
    analysis = failed.status.last_analysis
    assert analysis is not None and analysis.verdict == "Fail" and analysis.candidate.ejections == 1
    assert "candidate ejected 1x by the sidecars for consecutive failures before 63/100" in analysis.message
    assert "ejected 1x" in failed.events[-1].message


def test_an_ejection_counted_before_the_step_does_not_fail_it_and_enough_traffic_judges_as_usual() -> None:
    spec = canary(analysis={"minRequests": 20})
    traffic = Traffic()
    traffic.candidate.ejections = 2  # an earlier run's ejections are in the baseline, not the window
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    assert out.baseline is not None and out.baseline.candidate is not None
    assert out.baseline.candidate.ejections == 2
    traffic.flow(10, 10, 10, Profile(), Profile())  # 10 candidate requests < 20: holds
    held = step(spec, out.status, T0 + timedelta(minutes=1), traffic.stats(), out.baseline)
    assert held.status.last_analysis is not None and held.status.last_analysis.verdict == "Inconclusive"
    # With enough requests the error rate decides; an ejection in the window is only reported.
    traffic.flow(60, 10, 10, Profile(), Profile())
    traffic.candidate.ejections += 1
    passed = step(spec, held.status, T0 + timedelta(minutes=2), traffic.stats(), held.baseline)
    assert passed.status.current_step == 1, passed.status.last_analysis
    assert [e.reason for e in passed.events] == ["StepPassed"] and "ejected 1x" in passed.events[0].message


def test_no_stats_holds_the_step() -> None:
    spec = canary()
    traffic = Traffic()
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    held = step(spec, out.status, T0 + timedelta(minutes=1), None, out.baseline)
    assert held.status.current_step == 0 and held.baseline == out.baseline
    analysis = held.status.last_analysis
    assert analysis is not None and analysis.message == "sidecar stats unavailable"


def test_start_without_stats_takes_the_baseline_later() -> None:
    spec = canary()
    out = step(spec, CanaryStatus(), T0, None, None)
    assert out.status.phase == PROG and out.baseline is not None and out.baseline.candidate is None
    traffic = Traffic()
    traffic.flow(30, 10, 10, Profile(), Profile())  # before the baseline: not counted
    mid = step(spec, out.status, T0 + timedelta(seconds=30), traffic.stats(), out.baseline)
    assert mid.baseline is not None and mid.baseline.candidate == counters(traffic.candidate.stats())
    traffic.flow(30, 10, 10, Profile(), Profile())
    end = step(spec, mid.status, T0 + timedelta(minutes=1), traffic.stats(), mid.baseline)
    analysis = end.status.last_analysis
    assert analysis is not None and (analysis.verdict, analysis.candidate.requests) == ("Pass", 30)


def test_counter_reset_restarts_the_window_and_holds() -> None:
    spec = canary(analysis={"minRequests": 20})
    traffic = Traffic()
    traffic.flow(600, 10, 10, Profile(), Profile())  # the candidate served other routes before
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    traffic.flow(50, 10, 10, Profile(), Profile(error_rate=0.5))
    # The sidecars restart: the summed counters drop below the baseline (the bad stretch is lost with them).
    traffic = Traffic()
    traffic.flow(10, 10, 10, Profile(), Profile())
    reset = step(spec, out.status, T0 + timedelta(seconds=60), traffic.stats(), out.baseline)
    assert [e.reason for e in reset.events] == ["WindowRestarted", "AnalysisInconclusive"]
    assert reset.baseline is not None and reset.baseline.candidate == counters(traffic.candidate.stats())
    assert reset.status.current_step == 0 and reset.status.step_started_at == T0
    traffic.flow(200, 10, 10, Profile(), Profile())
    judged = step(spec, reset.status, T0 + timedelta(seconds=260), traffic.stats(), reset.baseline)
    analysis = judged.status.last_analysis
    assert analysis is not None and analysis.verdict == "Pass" and analysis.candidate.requests == 200


# --------------------------------------------------------------------------------------------- manual


def progressing(traffic: Traffic, spec: CanarySpec | None = None) -> CanaryOutcome:
    """A canary 30 seconds into step 2 (50%)."""
    spec = spec or canary()
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    traffic.flow(60, 10, 10, Profile(), Profile())
    out = step(spec, out.status, T0 + timedelta(minutes=1), traffic.stats(), out.baseline)
    traffic.flow(30, 50, 10, Profile(), Profile())
    assert (out.status.phase, out.status.current_step) == (PROG, 1)
    return out


@dataclass(frozen=True)
class ManualCase:
    name: str
    flags: dict[str, bool]
    phase: CanaryPhase
    weight: int
    reason: str
    requeue: bool


MANUAL = [
    ManualCase("pause holds the weight", {"paused": True}, PAUSED, 50, "Paused", False),
    ManualCase("abort rolls back", {"abort": True}, ROLLED_BACK, 0, "Aborted", False),
    ManualCase("promote promotes", {"promote": True}, PROMOTED, 100, "Promoted", False),
    ManualCase("abort wins over pause", {"abort": True, "paused": True}, ROLLED_BACK, 0, "Aborted", False),
]


@pytest.mark.parametrize("case", MANUAL, ids=[c.name for c in MANUAL])
def test_manual_controls(case: ManualCase) -> None:
    traffic = Traffic()
    out = progressing(traffic)
    now = T0 + timedelta(seconds=90)
    after = step(canary(**case.flags), out.status, now, traffic.stats(), out.baseline)
    assert (after.status.phase, after.status.current_step) == (case.phase, 1)
    assert live_weight(after.status) == case.weight == after.status.current_weight
    assert [e.reason for e in after.events] == [case.reason]
    assert (after.requeue_after is not None) == case.requeue
    assert after.status.history[-1].phase == case.phase
    # Asking again changes nothing.
    again = step(
        canary(**case.flags), after.status, now + timedelta(minutes=5), traffic.stats(), after.baseline
    )
    assert (again.changed, again.events) == (False, ())


def test_resume_restarts_the_step_clock() -> None:
    traffic = Traffic()
    out = progressing(traffic)
    paused = step(canary(paused=True), out.status, T0 + timedelta(seconds=90), traffic.stats(), out.baseline)
    traffic.flow(600, 50, 10, Profile(), Profile())  # traffic keeps flowing at 50% while paused
    resume_at = T0 + timedelta(minutes=11)
    resumed = step(canary(), paused.status, resume_at, traffic.stats(), paused.baseline)
    assert (resumed.status.phase, resumed.status.current_step, resumed.status.current_weight) == (PROG, 1, 50)
    assert resumed.status.step_started_at == resume_at and resumed.requeue_after == 60
    assert resumed.baseline is not None and resumed.baseline.candidate == counters(traffic.candidate.stats())
    assert [e.reason for e in resumed.events] == ["Resumed"]


def test_paused_before_start_holds_at_zero_then_starts() -> None:
    paused = step(canary(paused=True), CanaryStatus(), T0, Traffic().stats(), None)
    assert (paused.status.phase, paused.status.current_weight, paused.status.step_started_at) == (
        PAUSED,
        0,
        None,
    )
    resumed = step(canary(), paused.status, T0 + timedelta(minutes=1), Traffic().stats(), paused.baseline)
    assert (resumed.status.phase, resumed.status.current_step, resumed.status.current_weight) == (PROG, 0, 10)


@pytest.mark.parametrize("terminal", [{"abort": True}, {"promote": True}], ids=["rolled-back", "promoted"])
def test_terminal_phases_stay_terminal(terminal: dict[str, bool]) -> None:
    traffic = Traffic()
    out = progressing(traffic)
    ended = step(canary(**terminal), out.status, T0 + timedelta(seconds=90), traffic.stats(), out.baseline)
    for spec in (canary(), canary(paused=True), canary(steps=[{"weight": 5}])):
        later = step(spec, ended.status, T0 + timedelta(hours=1), traffic.stats(), ended.baseline)
        assert (later.changed, later.events, later.requeue_after) == (False, (), None)


def test_manual_override_between_terminal_phases() -> None:
    run = drive(canary())
    assert run.status.phase == PROMOTED
    aborted = step(canary(abort=True), run.status, run.now, None, run.baseline)
    assert (aborted.status.phase, live_weight(aborted.status)) == (ROLLED_BACK, 0)
    assert [e.reason for e in aborted.events] == ["Aborted"]


def test_changed_candidate_restarts_the_run() -> None:
    run = drive(canary(), candidate=Profile(error_rate=0.3))
    assert run.status.phase == ROLLED_BACK
    spec = canary(candidate="llama-v3")
    traffic = Traffic()
    restarted = step(spec, run.status, run.now, traffic.stats(), run.baseline)
    status = restarted.status
    assert (status.phase, status.current_step, status.current_weight, status.failed_analyses) == (
        PROG,
        0,
        10,
        0,
    )
    assert status.last_analysis is None and status.step_started_at == run.now
    assert [e.reason for e in restarted.events] == ["Restarted", "Started"]
    assert [(e.phase, e.step, e.weight) for e in status.history[-2:]] == [(P, 0, 0), (PROG, 0, 10)]
    assert restarted.baseline is not None and restarted.baseline.candidate_endpoint == "llama-v3"


def test_abort_before_start_remembers_the_endpoints() -> None:
    aborted = step(canary(abort=True), CanaryStatus(), T0, None, None)
    assert aborted.status.phase == ROLLED_BACK and aborted.baseline is not None
    retried = step(
        canary(candidate="llama-v3"), aborted.status, T0 + timedelta(minutes=1), None, aborted.baseline
    )
    assert retried.status.phase == PROG


def test_edited_step_weight_goes_live() -> None:
    traffic = Traffic()
    out = progressing(traffic)
    spec = canary(steps=[{"weight": 10, "pause": "1m"}, {"weight": 30, "pause": "1m"}, {"weight": 100}])
    edited = step(spec, out.status, T0 + timedelta(seconds=70), traffic.stats(), out.baseline)
    assert (edited.status.current_step, edited.status.current_weight) == (1, 30)
    assert [e.reason for e in edited.events] == ["StepChanged"]
    assert edited.status.step_started_at == out.status.step_started_at


# ------------------------------------------------------------------------------------------- restarts


@pytest.mark.parametrize(
    ("candidate", "failure_limit"),
    [(Profile(), 1), (Profile(error_rate=0.3), 1), (Profile(error_rate=0.3), 3)],
    ids=["promoted", "rolled-back", "retried-then-rolled-back"],
)
def test_restart_after_every_call_changes_nothing(candidate: Profile, failure_limit: int) -> None:
    spec = canary(analysis={"minRequests": 20, "failureLimit": failure_limit})
    plain = drive(spec, candidate=candidate)
    restarted = drive(spec, candidate=candidate, restarts=True)
    assert restarted.status == roundtrip(plain.status, plain.baseline)[0]
    assert (restarted.events, restarted.weights, restarted.now) == (plain.events, plain.weights, plain.now)


def test_restart_mid_step_resumes_at_the_same_step_and_start() -> None:
    traffic = Traffic()
    out = progressing(traffic)
    status, baseline = roundtrip(out.status, out.baseline)
    assert (status.current_step, status.step_started_at, baseline) == (
        1,
        T0 + timedelta(minutes=1),
        out.baseline,
    )
    for now in (T0 + timedelta(seconds=100), T0 + timedelta(minutes=2)):
        before = step(canary(), out.status, now, traffic.stats(), out.baseline)
        after = step(canary(), status, now, traffic.stats(), baseline)
        assert after == before
    mid = step(canary(), status, T0 + timedelta(seconds=100), traffic.stats(), baseline)
    assert (mid.changed, mid.events, mid.requeue_after) == (False, (), 20)


def test_a_lost_status_write_repeats_nothing() -> None:
    """The operator dies after deciding but before writing: the next call decides the same transition."""
    traffic = Traffic()
    out = progressing(traffic)
    traffic.flow(30, 50, 10, Profile(), Profile())
    first = step(canary(), out.status, T0 + timedelta(minutes=2), traffic.stats(), out.baseline)
    retried = step(canary(), out.status, T0 + timedelta(minutes=2, seconds=5), traffic.stats(), out.baseline)
    assert [e.reason for e in first.events] == [e.reason for e in retried.events] == ["StepPassed"]
    assert first.status.current_step == retried.status.current_step == 2
    assert len(retried.status.history) == len(out.status.history) + 1


def test_same_inputs_same_outcome() -> None:
    traffic = Traffic()
    out = progressing(traffic)
    calls = [
        step(canary(), out.status, T0 + timedelta(minutes=2), traffic.stats(), out.baseline) for _ in range(3)
    ]
    assert calls[0] == calls[1] == calls[2]


def test_times_are_whole_seconds() -> None:
    out = step(canary(), CanaryStatus(), T0 + timedelta(microseconds=600_000), Traffic().stats(), None)
    assert out.status.step_started_at == T0 and out.status.history[-1].time == T0
    # The pause still counts from the caller's clock: a whole minute after the real start.
    assert out.requeue_after == 60


def test_history_keeps_the_last_50() -> None:
    old = [HistoryEntry(time=T0, phase=PROG, step=0, weight=10, message=f"old {i}") for i in range(50)]
    out = step(
        canary(abort=True),
        CanaryStatus(phase=PROG, current_step=0, current_weight=10, history=old),
        T0,
        None,
        None,
    )
    assert len(out.status.history) == 50
    assert out.status.history[0].message == "old 1" and out.status.history[-1].phase == ROLLED_BACK
    CanaryStatus.model_validate(out.status.model_dump(by_alias=True))


# -------------------------------------------------------------------------------------------- sum_stats


def snapshot(
    pod: str, endpoints: dict[str, tuple[int, int, Sequence[int]]], bounds: Sequence[float]
) -> StatsSnapshot:
    return StatsSnapshot.model_validate(
        {
            "pod": pod,
            "latencyBucketsMs": list(bounds),
            "endpoints": {
                name: {"requests": r, "errors": e, "latencyBuckets": list(buckets), "replicas": {}}
                for name, (r, e, buckets) in endpoints.items()
            },
        }
    )


def test_sum_stats_adds_sidecars_and_converts_to_seconds() -> None:
    docs = [
        snapshot("a", {"v1": (10, 1, [5, 9, 10]), "v2": (4, 0, [1, 4, 4])}, [100, 1000]),
        snapshot("b", {"v1": (6, 2, [2, 6, 6])}, [100, 1000]),
    ]
    stats = sum_stats(docs, "v1", "v2")
    assert stats.stable == SideStats(16, 3, ((0.1, 7), (1.0, 15), (INF, 16)))
    assert stats.candidate == SideStats(4, 0, ((0.1, 1), (1.0, 4), (INF, 4)))
    assert sum_stats(docs, "v1", "v9").candidate == SideStats(0, 0, ((0.1, 0), (1.0, 0), (INF, 0)))
    assert sum_stats([], "v1", "v2").stable == SideStats(0, 0, ())


def test_sum_stats_adds_feedback_of_every_rule_per_endpoint() -> None:
    def scored(pod: str, feedback: list[tuple[str, str, int, float]]) -> StatsSnapshot:
        doc = snapshot(pod, {"v1": (10, 0, [5, 9, 10]), "v2": (10, 0, [5, 9, 10])}, [100, 1000])
        entries = [
            {"policy": "chat", "rule": rule, "endpoint": ep, "count": n, "scoreSum": total}
            for rule, ep, n, total in feedback
        ]
        return doc.model_copy(
            update={"feedback": StatsSnapshot.model_validate({"feedback": entries}).feedback}
        )

    docs = [
        scored("a", [("default", "v1", 4, 3.0), ("default", "v2", 2, 0.5), ("cheap", "v2", 1, 1.0)]),
        scored("b", [("default", "v2", 3, 1.0)]),
    ]
    stats = sum_stats(docs, "v1", "v2")
    assert (stats.stable.feedback, stats.stable.feedback_score_sum) == (4, 3.0)
    assert (stats.candidate.feedback, stats.candidate.feedback_score_sum) == (6, 2.5)
    assert stats.candidate.mean_feedback_score == pytest.approx(2.5 / 6)


def test_sum_stats_refuses_mismatched_buckets() -> None:
    docs = [snapshot("a", {}, [100, 1000]), snapshot("b", {}, [100, 2000])]
    with pytest.raises(ValueError, match="different latency buckets"):
        sum_stats(docs, "v1", "v2")


def test_baseline_model_round_trips() -> None:
    base = StepBaseline(
        stable_endpoint="v1",
        candidate_endpoint="v2",
        stable=counters(side(10, 1, 5, 9, 10)),
        candidate=SideCounters(),
    )
    dumped = base.model_dump(by_alias=True, mode="json")
    assert set(dumped) == {"stableEndpoint", "candidateEndpoint", "stable", "candidate"}
    assert StepBaseline.model_validate(dumped) == base


# ------------------------------------------------------------------- the clock waits for the sidecars


def test_the_step_clock_and_window_start_when_every_sidecar_runs_the_weight() -> None:
    spec, traffic = canary(), Traffic()
    out = cn.step(spec, CanaryStatus(), T0, traffic.stats(), None, 0)
    assert (out.status.desired_weight, out.status.current_weight, out.status.step_started_at) == (10, 0, None)
    assert out.requeue_after == cn.ROLLOUT_RECHECK_SECONDS
    # Five minutes of a push that does not land: the 1m pause does not run out, nothing is judged, and
    # traffic the candidate gets meanwhile (some sidecars already split) is not in the window.
    traffic.flow(300, 10, 10, Profile(), Profile(error_rate=0.5))
    later = T0 + timedelta(minutes=5)
    held = cn.step(spec, out.status, later, traffic.stats(), out.baseline, 0)
    assert (held.changed, held.status.step_started_at, held.status.last_analysis) == (False, None, None)
    assert held.requeue_after == cn.ROLLOUT_RECHECK_SECONDS
    acked_at = later + timedelta(seconds=7)
    begun = cn.step(spec, held.status, acked_at, traffic.stats(), held.baseline, 10)
    assert (begun.status.current_weight, begun.status.step_started_at) == (10, acked_at)
    assert begun.requeue_after == 60
    assert begun.baseline is not None and begun.baseline.candidate == counters(traffic.stats().candidate)
    traffic.flow(60, 10, 10, Profile(), Profile())
    judged = cn.step(
        spec, begun.status, acked_at + timedelta(seconds=60), traffic.stats(), begun.baseline, 10
    )
    analysis = judged.status.last_analysis
    assert analysis is not None and analysis.verdict == "Pass", analysis
    assert (analysis.candidate.requests, analysis.candidate.errors) == (60, 0)  # only the traffic since ack


def test_a_later_step_waits_for_its_weight_and_the_wait_survives_a_restart() -> None:
    traffic = Traffic()
    run = progressing(traffic)  # step 1 (50%) running, acknowledged at once
    traffic.flow(30, 50, 10, Profile(), Profile())
    end = T0 + timedelta(minutes=2)  # step 1 began at T0 + 1m
    passed = cn.step(canary(), run.status, end, traffic.stats(), run.baseline, 50)
    assert (passed.status.current_step, passed.status.desired_weight, passed.status.current_weight) == (
        2,
        100,
        50,
    )
    assert passed.status.step_started_at is None
    status, baseline = roundtrip(passed.status, passed.baseline)  # the operator restarts while waiting
    lagging = cn.step(canary(), status, end + timedelta(minutes=1), traffic.stats(), baseline, None)
    assert (lagging.changed, lagging.status.step_started_at) == (False, None)
    acked_at = end + timedelta(minutes=2)
    begun = cn.step(canary(), status, acked_at, traffic.stats(), baseline, 100)
    assert (begun.status.current_weight, begun.status.step_started_at) == (100, acked_at)
    early = cn.step(
        canary(), begun.status, acked_at + timedelta(seconds=59), traffic.stats(), begun.baseline, 100
    )
    assert early.status.phase == PROG and early.status.last_analysis == begun.status.last_analysis


def test_an_edited_weight_is_not_judged_until_acknowledged() -> None:
    traffic = Traffic()
    run = progressing(traffic)
    spec = canary(steps=[{"weight": 10, "pause": "1m"}, {"weight": 30, "pause": "1m"}, {"weight": 100}])
    traffic.flow(30, 50, 10, Profile(), Profile())
    end = T0 + timedelta(minutes=2)
    edited = cn.step(spec, run.status, end, traffic.stats(), run.baseline, 50)
    assert (edited.status.desired_weight, edited.status.current_weight) == (30, 50)
    assert edited.status.last_analysis == run.status.last_analysis
    assert edited.requeue_after == cn.ROLLOUT_RECHECK_SECONDS
    judged = cn.step(spec, edited.status, end + timedelta(seconds=2), traffic.stats(), edited.baseline, 30)
    assert judged.status.current_step == 2 and judged.status.current_weight == 30


def test_terminal_weights_are_shown_once_acknowledged() -> None:
    traffic = Traffic()
    run = progressing(traffic)
    promoted = cn.step(
        canary(promote=True),
        run.status,
        T0 + timedelta(minutes=1, seconds=30),
        traffic.stats(),
        run.baseline,
        50,
    )
    assert (promoted.status.phase, promoted.status.desired_weight, promoted.status.current_weight) == (
        PROMOTED,
        100,
        50,
    )
    assert promoted.requeue_after == cn.ROLLOUT_RECHECK_SECONDS
    shown = cn.step(
        canary(promote=True),
        promoted.status,
        T0 + timedelta(minutes=2),
        traffic.stats(),
        promoted.baseline,
        100,
    )
    assert (shown.status.current_weight, shown.requeue_after) == (100, None)
    assert [e.reason for e in shown.events] == []


def test_a_status_from_before_desired_weight_resumes_as_acknowledged() -> None:
    """An operator upgrade: status has only `currentWeight` (then the decided weight) and a clock."""
    old = CanaryStatus(phase=PROG, current_step=1, current_weight=50, step_started_at=T0)
    base = StepBaseline(stable_endpoint="llama-v1", candidate_endpoint="llama-v2")
    out = cn.step(canary(), old, T0 + timedelta(seconds=20), Traffic().stats(), base, 50)
    assert out.status.step_started_at == T0 and out.requeue_after == 40


# --- actions of the kubectl plugin (status.manual) --------------------------------------------------


def with_manual(status: CanaryStatus, **actions: Any) -> CanaryStatus:
    return status.model_copy(update={"manual": ManualActions(by="alice", **actions)})


def test_the_plugins_pause_and_resume_act_like_the_specs_without_touching_it() -> None:
    traffic = Traffic()
    out = progressing(traffic)
    spec = canary()
    paused = step(
        spec, with_manual(out.status, paused=True), T0 + timedelta(seconds=90), traffic.stats(), out.baseline
    )
    assert (paused.status.phase, paused.status.current_weight) == (PAUSED, 50)
    assert paused.status.history[-1].message == "paused by kubectl modelroute (alice)"
    held = step(spec, paused.status, T0 + timedelta(hours=1), traffic.stats(), paused.baseline)
    assert (held.changed, held.status.phase) == (False, PAUSED)  # held however long, nothing in spec
    resume_at = T0 + timedelta(hours=2)
    resumed = step(spec, with_manual(held.status, paused=False), resume_at, traffic.stats(), held.baseline)
    assert (resumed.status.phase, resumed.status.step_started_at) == (PROG, resume_at)
    assert spec == canary(), "the spec is never changed"


@pytest.mark.parametrize(
    ("action", "phase", "weight"), [("abort", ROLLED_BACK, 0), ("promote", PROMOTED, 100)]
)
def test_the_plugins_abort_and_promote_end_the_run(action: str, phase: CanaryPhase, weight: int) -> None:
    traffic = Traffic()
    out = progressing(traffic)
    ended = step(
        canary(),
        with_manual(out.status, **{action: True}),
        T0 + timedelta(seconds=90),
        traffic.stats(),
        out.baseline,
    )
    assert (ended.status.phase, ended.status.current_weight) == (phase, weight)
    assert ended.status.history[-1].message.endswith("by kubectl modelroute (alice)")


def test_a_restart_for_new_endpoints_clears_the_plugins_actions() -> None:
    run = drive(canary())
    aborted = step(canary(), with_manual(run.status, abort=True), run.now, None, run.baseline)
    assert aborted.status.phase == ROLLED_BACK
    restarted = step(
        canary(candidate="llama-v3"), aborted.status, run.now, Traffic().stats(), aborted.baseline
    )
    assert (restarted.status.phase, restarted.status.manual) == (PROG, None)


# ------------------------------------------------------------------------------------ the mirror phase

MIRROR = {"percent": 50, "pause": "2m"}


def test_a_mirror_phase_judges_copies_before_any_user_sees_the_candidate() -> None:
    run = drive(canary(mirror=MIRROR))
    assert run.status.phase == PROMOTED
    assert [(e.phase, e.step, e.weight) for e in run.status.history] == [
        (MIRRORING, 0, 0),
        (PROG, 0, 10),
        (PROG, 1, 50),
        (PROG, 2, 100),
        (PROMOTED, 2, 100),
    ]
    assert [e.reason for e in run.events] == [
        "Started",
        "MirrorPassed",
        "StepPassed",
        "StepPassed",
        "Promoted",
    ]
    assert run.weights[0] == 0, "the candidate serves nobody while mirrored"
    assert run.status.history[0].message.endswith("mirroring 50% of the route's requests to llama-v2 for 2m")
    assert run.now - T0 == timedelta(minutes=5)  # 2m mirror + 3 steps of 1m
    passed = run.events[1].message
    # 2 minutes at 10 rps, half of it copied: judged on the 600 copies and the same 600 primary answers.
    assert "copies to candidate 0.0% errors (0/600)" in passed
    assert "primary on the same requests 0.0% errors (0/600)" in passed


def test_an_erroring_candidate_is_rolled_back_in_the_mirror_phase() -> None:
    run = drive(canary(mirror=MIRROR), candidate=Profile(error_rate=0.3))
    assert run.status.phase == ROLLED_BACK
    assert set(run.weights) == {0}, "no request was ever answered by the candidate"
    analysis = run.status.last_analysis
    assert analysis is not None and (analysis.verdict, analysis.step) == ("Fail", 0)
    assert (analysis.candidate.requests, analysis.candidate.errors) == (600, 180)
    assert "error rate 30.0% > 5%" in analysis.message
    warning = run.events[-1]
    assert (warning.reason, warning.warning) == ("RolledBack", True)
    assert warning.message.startswith("mirror failed analysis (1/1), rolled back: error rate 30.0% > 5%")


def test_the_mirror_compares_latency_on_the_same_requests() -> None:
    spec = canary(mirror=MIRROR, analysis={"minRequests": 20, "maxLatencyIncreasePercent": 50})
    slow = drive(spec, candidate=Profile(latency=0.9), stable=Profile(latency=0.2))
    assert slow.status.phase == ROLLED_BACK
    assert "above the primary's" in slow.events[-1].message
    same = drive(spec, candidate=Profile(latency=0.2), stable=Profile(latency=0.2))
    assert same.status.phase == PROMOTED


def test_the_mirror_phase_failure_limit_restarts_the_mirror() -> None:
    spec = canary(mirror=MIRROR, analysis={"minRequests": 20, "failureLimit": 2})
    run = drive(spec, candidate=Profile(error_rate=0.3))
    assert [(e.phase, e.weight) for e in run.status.history] == [
        (MIRRORING, 0),
        (MIRRORING, 0),  # first failure: a fresh mirror window
        (ROLLED_BACK, 0),
    ]
    assert [e.reason for e in run.events] == ["Started", "AnalysisFailed", "RolledBack"]


def test_min_requests_counts_copies() -> None:
    spec = canary(mirror={"percent": 1, "pause": "1m"}, analysis={"minRequests": 20})
    out = step(spec, CanaryStatus(), T0, Traffic().stats(), None)
    traffic = Traffic()
    traffic.flow(60, 0, 10, Profile(), Profile(), mirror=1)  # 600 requests, 6 copied
    held = step(spec, out.status, T0 + timedelta(minutes=1), traffic.stats(), out.baseline)
    assert held.status.phase == MIRRORING
    assert held.events[0].reason == "AnalysisInconclusive"
    assert held.events[0].message.startswith("mirror holds: too little traffic (6/20 copies)")


def test_feedback_gates_are_skipped_while_mirroring_and_apply_to_the_steps() -> None:
    spec = canary(mirror=MIRROR, analysis={"minRequests": 20, "minFeedbackScore": 0.8, "minFeedback": 5})
    run = drive(spec, max_calls=3)
    assert [e.reason for e in run.events][:2] == ["Started", "MirrorPassed"]
    assert "feedback checks skipped while mirroring" in run.events[1].message
    # Step 1 needs feedback the copies never get: without any, it holds.
    assert run.status.phase == PROG and "too little feedback" in run.events[-1].message


def test_a_pause_while_mirroring_resumes_into_a_fresh_mirror() -> None:
    spec, traffic = canary(mirror=MIRROR), Traffic()
    out = step(spec, CanaryStatus(), T0, traffic.stats(), None)
    paused = step(
        canary(mirror=MIRROR, paused=True), out.status, T0 + timedelta(seconds=30), None, out.baseline
    )
    assert (paused.status.phase, paused.status.desired_weight) == (PAUSED, 0)
    assert live_mirror(spec, paused.status) == 0, "a pause stops the copies"
    resume_at = T0 + timedelta(minutes=10)
    resumed = step(spec, paused.status, resume_at, traffic.stats(), paused.baseline)
    assert (resumed.status.phase, resumed.status.step_started_at) == (MIRRORING, resume_at)
    assert [e.reason for e in resumed.events] == ["Resumed"]


def test_a_canary_paused_before_start_starts_with_its_mirror() -> None:
    paused = step(canary(mirror=MIRROR, paused=True), CanaryStatus(), T0, Traffic().stats(), None)
    assert paused.status.phase == PAUSED
    resumed = step(canary(mirror=MIRROR), paused.status, T0 + timedelta(minutes=1), Traffic().stats(), None)
    assert resumed.status.phase == MIRRORING


def test_removing_the_mirror_mid_phase_starts_step_1() -> None:
    out = step(canary(mirror=MIRROR), CanaryStatus(), T0, Traffic().stats(), None)
    later = step(canary(), out.status, T0 + timedelta(seconds=30), Traffic().stats(), out.baseline)
    assert (later.status.phase, later.status.desired_weight) == (PROG, 10)
    assert [e.reason for e in later.events] == ["MirrorRemoved"]


def test_the_mirror_clock_waits_until_every_sidecar_runs_the_shadow() -> None:
    spec, traffic = canary(mirror=MIRROR), Traffic()
    # `acknowledged` stays None until the live config carries the shadow (status.acknowledged_weight).
    out = cn.step(spec, CanaryStatus(), T0, traffic.stats(), None, None)
    assert (out.status.phase, out.status.step_started_at) == (MIRRORING, None)
    traffic.flow(300, 0, 10, Profile(), Profile(error_rate=0.5), mirror=50)
    held = cn.step(spec, out.status, T0 + timedelta(minutes=5), traffic.stats(), out.baseline, None)
    assert (held.status.phase, held.status.step_started_at) == (MIRRORING, None)
    live_at = T0 + timedelta(minutes=6)
    begun = cn.step(spec, held.status, live_at, traffic.stats(), held.baseline, 0)
    assert begun.status.step_started_at == live_at
    assert begun.baseline is not None and begun.baseline.candidate == counters(traffic.copies.stats())


def test_a_mirror_run_survives_restarts_after_every_step() -> None:
    for candidate in (Profile(), Profile(error_rate=0.3)):
        plain = drive(canary(mirror=MIRROR), candidate=candidate)
        restarted = drive(canary(mirror=MIRROR), candidate=candidate, restarts=True)
        assert restarted.status.history == plain.status.history
        assert restarted.now == plain.now


def test_sum_stats_takes_the_mirror_from_the_target_rules_shadow_to_the_candidate() -> None:
    def shadow(rule: str, endpoint: str, primary: tuple[int, int], copies: tuple[int, int]) -> dict[str, Any]:
        return {
            "policy": "chat",
            "rule": rule,
            "endpoint": endpoint,
            "primary": {"requests": primary[0], "errors": primary[1], "latencyBuckets": [primary[0]] * 3},
            "shadow": {
                "requests": copies[0],
                "errors": copies[1],
                "latencyBuckets": [0, copies[0], copies[0]],
            },
        }

    docs = [
        snapshot("a", {"v1": (10, 0, [10, 10, 10])}, [100, 1000]).model_copy(
            update={
                "shadows": StatsSnapshot.model_validate(
                    {
                        "shadows": [
                            shadow("default", "v2", (4, 0), (4, 1)),
                            shadow("cheap", "v2", (9, 0), (9, 9)),
                        ]
                    }
                ).shadows
            }
        ),
        snapshot("b", {}, [100, 1000]).model_copy(
            update={
                "shadows": StatsSnapshot.model_validate(
                    {
                        "shadows": [
                            shadow("default", "v2", (2, 1), (2, 0)),
                            shadow("default", "v9", (7, 0), (7, 7)),
                        ]
                    }
                ).shadows
            }
        ),
    ]
    stats = sum_stats(docs, "v1", "v2", ("chat", "default"))
    assert stats.mirror is not None
    assert stats.mirror.stable == SideStats(6, 1, ((0.1, 6), (1.0, 6), (INF, 6)))
    assert stats.mirror.candidate == SideStats(6, 1, ((0.1, 0), (1.0, 6), (INF, 6)))
    assert sum_stats(docs, "v1", "v2").mirror is None
