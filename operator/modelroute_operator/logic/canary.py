"""The canary controller's decision: one pure step from (spec, status, time, traffic stats) to the next
status, the Events to record and when to look again.

Everything a run needs to continue lives in the Canary's status (phase, step, weight, step start, failed
analyses, last analysis, history) plus `StepBaseline`: the cumulative sidecar counters when the current
step began, so a step's analysis judges only the traffic since then. The same inputs always give the
same outcome, so an operator that dies before writing status simply recomputes the same transition, and
one that restarts after writing continues at the same step with the same start time.

A step's clock and analysis window start when every sidecar runs its weight, not when it is decided:
`desiredWeight` is the decision (the compiler puts it in the config), `currentWeight` is the weight every
sidecar acknowledged (the caller passes it as `acknowledged`), and `stepStartedAt` stays unset while the
two differ. So a step is never judged on traffic split at another weight, a slow push cannot shorten a
step, and status never shows a weight the sidecars do not run. Both live in status, so a restart
resumes the wait.

Choices where the design is silent:
- Resuming a paused canary restarts the current step's clock and window (`stepStartedAt` = resume time,
  fresh baseline): no extra field is needed to remember when the pause began, and a step someone paused
  to investigate is judged on a full window of traffic after it.
- `status.manual` (written by `kubectl modelroute canary ...` through the status subresource) is obeyed
  like the spec's `paused`/`promote`/`abort`, whichever is set; a restart for new endpoints clears it.
- `spec.abort` and `spec.promote` are obeyed in every phase, terminal ones included (abort is the
  emergency lever after a promotion); nothing else leaves `Promoted` or `RolledBack`, except a change of
  `spec.stable` or `spec.candidate`, which restarts the run from step 0 (the old figures judged another
  endpoint).
- `failedAnalyses` counts over the whole run (like Argo Rollouts' failure limit). A failed analysis below
  the limit restarts the same step's clock and window, so the next analysis judges fresh traffic.
- When the summed counters go down (a sidecar restarted or left), the window cannot be computed: the
  baseline is reset to the current counters and the step's clock keeps running; the analysis then needs
  `minRequests` since the reset.
- The latency comparison with stable needs `minRequests` stable requests in the window; with fewer (at a
  100% step stable gets none) the comparison is skipped and the message says so.
- A step whose weight is edited mid-run keeps its clock (as before), but no analysis judges it until the
  new weight is acknowledged. Terminal phases (0% or 100%) have no clock; `currentWeight` still follows
  the acknowledgement, and the controller looks again every `ROLLOUT_RECHECK_SECONDS` until it comes.
- Stored times have whole seconds, like every metav1.Time, so a status is identical across a round trip.

The mirror phase (`spec.mirror`, phase `Mirroring`) runs before step 1 at weight 0: the compiler puts a
shadow to the candidate on the target rule, and the phase is judged like a step, on the rule's shadow
figures (the copies as the candidate side, the primary's answers to the same requests as the stable
side) instead of the endpoints' figures. Its clock starts once every sidecar runs the config with the
shadow (`acknowledged` is None until then). Feedback checks are skipped there (clients score the
primary's answers, never a copy's). A pause during the mirror, or before the start, holds at 0% and
resumes into a fresh mirror phase; removing `spec.mirror` mid-phase starts step 1. Nothing brings a
canary back to the mirror once a step has run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from modelroute_operator.logic.resources import (
    AnalysisResult,
    CanaryAnalysis,
    CanaryPhase,
    CanarySpec,
    CanaryStatus,
    HistoryEntry,
    SideFigures,
    StepBaseline,
    seconds,
)

from .traffic import CanaryStats, SideStats, counters, p95, window

_NO_TRAFFIC = SideStats(0, 0, ())

MAX_HISTORY = 50
"""History entries kept in status (oldest dropped first)."""
MAX_MESSAGE = 1024
"""Longest message the status schema accepts."""
RECHECK_SECONDS = 10.0
"""How often a held step (too little traffic, no stats) looks again; shorter steps look at their pace."""
ROLLOUT_RECHECK_SECONDS = 1.0
"""How often a decided weight that the sidecars have not all acknowledged yet is looked at again."""
MIN_REQUEUE_SECONDS = 0.1
"""Floor of `requeue_after`, so a step ending now is not polled in a busy loop."""


# --------------------------------------------------------------------------------------------- outcome


@dataclass(frozen=True)
class CanaryEvent:
    """A Kubernetes Event to record on the Canary."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class CanaryOutcome:
    """What one controller step decided."""

    status: CanaryStatus
    """The new status (fields other than the controller's are carried over unchanged)."""
    baseline: StepBaseline | None
    """The new `status.stepBaseline`."""
    events: tuple[CanaryEvent, ...]
    """Events to record, in order."""
    requeue_after: float | None
    """Seconds until the controller should look again; None when only a spec change matters."""
    changed: bool
    """Whether status or baseline differ from the input (nothing to write otherwise)."""


@dataclass(frozen=True)
class _Judgement:
    verdict: Literal["Pass", "Fail", "Inconclusive"]
    candidate: SideFigures
    stable: SideFigures
    message: str


@dataclass
class _Run:
    """The status being built during one step, with the events and history it produces."""

    spec: CanarySpec
    status: CanaryStatus
    baseline: StepBaseline | None
    now: datetime
    """The caller's time, for comparisons."""
    stamp: datetime
    """`now` in whole seconds, for storing."""
    stats: CanaryStats | None
    acknowledged: int | None
    """The candidate weight every sidecar runs (None: unknown, or the sidecars disagree)."""
    events: list[CanaryEvent] = field(default_factory=list)

    @property
    def phase(self) -> CanaryPhase:
        return self.status.phase or CanaryPhase.PENDING

    @property
    def step_index(self) -> int:
        return min(self.status.current_step or 0, len(self.spec.steps) - 1)

    @property
    def mirroring(self) -> bool:
        return self.phase == CanaryPhase.MIRRORING

    @property
    def stage(self) -> str:
        """What is being judged, for messages: `mirror` or `step N`."""
        return "mirror" if self.mirroring else f"step {self.step_index + 1}"

    @property
    def figures(self) -> CanaryStats | None:
        """The figures the stage in progress is judged on: the shadow traffic's while mirroring."""
        if self.stats is None or not self.mirroring:
            return self.stats
        return self.stats.mirror or CanaryStats(_NO_TRAFFIC, _NO_TRAFFIC)

    @property
    def pause(self) -> str:
        """The stage's duration (`spec.mirror.pause` while mirroring)."""
        if self.mirroring and self.spec.mirror is not None:
            return self.spec.mirror.pause
        return self.spec.steps[self.step_index].pause

    @property
    def desired(self) -> int | None:
        """The weight decided (a status from before `desiredWeight` existed only has `currentWeight`)."""
        status = self.status
        return status.desired_weight if status.desired_weight is not None else status.current_weight

    @property
    def rolled_out(self) -> bool:
        return self.acknowledged is not None and self.acknowledged == self.desired

    def update(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def transition(
        self, phase: CanaryPhase, index: int, weight: int, reason: str, message: str, warning: bool = False
    ) -> None:
        """Move to (phase, step, weight), with a history entry and an Event."""
        entry = HistoryEntry(time=self.stamp, phase=phase, step=index, weight=weight, message=_cut(message))
        self.update(
            phase=phase,
            current_step=index,
            desired_weight=weight,
            history=[*self.status.history, entry][-MAX_HISTORY:],
        )
        self.events.append(CanaryEvent(reason, _cut(message), warning))

    def start_step(self, index: int, reason: str, message: str, warning: bool = False) -> None:
        """Begin step `index` now, with a fresh analysis window."""
        weight = self.spec.steps[index].weight
        pause = self.spec.steps[index].pause
        detail = f"step {index + 1}/{len(self.spec.steps)}: {weight}% to {self.spec.candidate} for {pause}"
        self.transition(CanaryPhase.PROGRESSING, index, weight, reason, f"{message}; {detail}", warning)
        self.update(step_started_at=None, failed_analyses=self.status.failed_analyses or 0)
        self.begin_if_rolled_out()

    def start_mirror(self, reason: str, message: str, warning: bool = False) -> None:
        """Begin the mirror phase now (at 0%), with a fresh analysis window."""
        mirror = self.spec.mirror
        assert mirror is not None
        share = f"{mirror.percent:g}% of the route's requests"
        detail = f"mirroring {share} to {self.spec.candidate} for {mirror.pause}"
        self.transition(CanaryPhase.MIRRORING, 0, 0, reason, f"{message}; {detail}", warning)
        self.update(step_started_at=None, failed_analyses=self.status.failed_analyses or 0)
        self.begin_if_rolled_out()

    def start(self, index: int, reason: str, message: str, warning: bool = False) -> None:
        """Begin the run's first stage: the mirror phase when the spec has one, else step `index`."""
        if self.spec.mirror is not None and index == 0:
            self.start_mirror(reason, message, warning)
        else:
            self.start_step(index, reason, message, warning)

    def begin_if_rolled_out(self) -> bool:
        """Start the step's clock and window now if every sidecar runs its weight; else keep waiting
        (the baseline keeps naming the run's endpoints, without counters)."""
        if not self.rolled_out:
            self.baseline = StepBaseline(
                stable_endpoint=self.spec.stable, candidate_endpoint=self.spec.candidate
            )
            return False
        self.update(step_started_at=self.stamp)
        self.take_baseline()
        return True

    def take_baseline(self) -> None:
        """Counters from now on count towards the stage (unset when stats could not be read)."""
        figures = self.figures
        self.baseline = StepBaseline(
            stable_endpoint=self.spec.stable,
            candidate_endpoint=self.spec.candidate,
            stable=counters(figures.stable) if figures else None,
            candidate=counters(figures.candidate) if figures else None,
        )

    def outcome(
        self, requeue_after: float | None, before: CanaryStatus, baseline_before: StepBaseline | None
    ) -> CanaryOutcome:
        changed = self.status != before or self.baseline != baseline_before
        return CanaryOutcome(self.status, self.baseline, tuple(self.events), requeue_after, changed)


# ------------------------------------------------------------------------------------------- the step


def step(
    spec: CanarySpec,
    status: CanaryStatus,
    now: datetime,
    stats: CanaryStats | None,
    baseline: StepBaseline | None,
    acknowledged: int | None,
) -> CanaryOutcome:
    """Advance the canary by one decision.

    `stats` are the current cumulative figures of stable and candidate summed over the namespace's
    sidecars (None when they could not be read: the canary then holds); `baseline` is the stored
    `status.stepBaseline`; `acknowledged` is the candidate weight of this canary that every sidecar
    runs (None when unknown, when no sidecar runs it or while some lag). Pure and deterministic: the
    same inputs give the same outcome.
    """
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    run = _Run(spec, status, baseline, now, now.replace(microsecond=0), stats, acknowledged)
    requeue = _decide(run)
    if acknowledged is not None and run.status.current_weight != acknowledged:
        run.update(current_weight=acknowledged)
    if not run.rolled_out and run.desired is not None:
        requeue = ROLLOUT_RECHECK_SECONDS if requeue is None else min(requeue, ROLLOUT_RECHECK_SECONDS)
    return run.outcome(requeue, status, baseline)


def _switch(run: _Run, name: str) -> str:
    """Who asks for `name` (paused, promote, abort): `spec.<name>`, the plugin, or '' (nobody)."""
    if getattr(run.spec, name):
        return f"spec.{name}"
    manual = run.status.manual
    if manual is not None and getattr(manual, name):
        return "kubectl modelroute" + (f" ({manual.by})" if manual.by else "")
    return ""


def _decide(run: _Run) -> float | None:
    _restart_if_endpoints_changed(run)
    phase = run.phase
    if (by := _switch(run, "abort")) and phase != CanaryPhase.ROLLED_BACK:
        run.transition(CanaryPhase.ROLLED_BACK, run.step_index, 0, "Aborted", f"aborted by {by}")
        _adopt_endpoints(run)
        return None
    if (by := _switch(run, "promote")) and phase != CanaryPhase.PROMOTED:
        run.transition(CanaryPhase.PROMOTED, run.step_index, 100, "Promoted", f"promoted by {by}")
        _adopt_endpoints(run)
        return None
    if phase in (CanaryPhase.PROMOTED, CanaryPhase.ROLLED_BACK):
        _adopt_endpoints(run)
        return None
    if by := _switch(run, "paused"):
        if phase != CanaryPhase.PAUSED:
            # A canary paused before it started holds at 0%: it has no step weight to hold yet.
            weight = (run.desired or 0) if phase == CanaryPhase.PROGRESSING else 0
            run.transition(CanaryPhase.PAUSED, run.step_index, weight, "Paused", f"paused by {by}")
        _adopt_endpoints(run)
        return None
    if phase == CanaryPhase.PAUSED:
        # Paused at 0% means no step had begun (paused before the start or while mirroring): resume
        # into the run's first stage, the mirror phase when the spec has one.
        index = 0 if not run.desired else run.step_index
        run.start(index, "Resumed", "resumed (the step's clock restarts)")
        return _pause_seconds(run)
    if phase == CanaryPhase.PENDING or run.desired is None:
        run.start(0 if phase == CanaryPhase.PENDING else run.step_index, "Started", "canary started")
        return _pause_seconds(run)
    if run.mirroring and run.spec.mirror is None:
        run.start_step(0, "MirrorRemoved", "spec.mirror was removed")
        return _pause_seconds(run)
    started = run.status.step_started_at
    if started is None:
        # The stage's weight (or mirror) is decided but not yet run by every sidecar: no clock yet.
        return _pause_seconds(run) if run.begin_if_rolled_out() else ROLLOUT_RECHECK_SECONDS
    return _progress(run, started)


def _restart_if_endpoints_changed(run: _Run) -> None:
    base = run.baseline
    if base is None or run.phase == CanaryPhase.PENDING:
        return
    if (base.stable_endpoint, base.candidate_endpoint) == (run.spec.stable, run.spec.candidate):
        return
    message = (
        f"restarting: stable/candidate changed from {base.stable_endpoint}/{base.candidate_endpoint}"
        f" to {run.spec.stable}/{run.spec.candidate}"
    )
    run.transition(CanaryPhase.PENDING, 0, 0, "Restarted", message)
    run.update(step_started_at=None, failed_analyses=0, last_analysis=None, manual=None)
    run.baseline = None


def _adopt_endpoints(run: _Run) -> None:
    # Record which endpoints the run is about even when it ends before any step, so a later change of
    # the candidate is recognised as a new run.
    if run.baseline is None:
        run.take_baseline()


def _progress(run: _Run, started: datetime) -> float | None:
    index = run.step_index
    if not run.mirroring and (
        index != run.status.current_step or run.spec.steps[index].weight != run.desired
    ):
        # spec.steps was edited mid-run: the live weight follows the spec of the step in progress.
        weight = run.spec.steps[index].weight
        run.transition(
            CanaryPhase.PROGRESSING, index, weight, "StepChanged", f"step {index + 1} now sends {weight}%"
        )
    windows = _windows(run)
    remaining = (started + timedelta(seconds=seconds(run.pause)) - run.now).total_seconds()
    if remaining > 0:
        return max(remaining, MIN_REQUEUE_SECONDS)
    if not run.rolled_out:
        return ROLLOUT_RECHECK_SECONDS  # never judge a weight the sidecars do not all run
    judgement = _judge(run.spec, windows, mirror=run.mirroring)
    if judgement.verdict == "Inconclusive":
        _hold(run, judgement)
        return _recheck_seconds(run)
    run.update(
        last_analysis=AnalysisResult(
            time=run.stamp,
            step=index,
            verdict=judgement.verdict,
            candidate=judgement.candidate,
            stable=judgement.stable,
            message=_cut(judgement.message),
        )
    )
    if judgement.verdict == "Fail":
        return _fail(run, judgement)
    if run.mirroring:
        run.start_step(0, "MirrorPassed", f"mirror passed: {judgement.message}")
        return _pause_seconds(run)
    if index + 1 < len(run.spec.steps):
        run.start_step(index + 1, "StepPassed", f"step {index + 1} passed: {judgement.message}")
        return _pause_seconds(run)
    run.transition(CanaryPhase.PROMOTED, index, 100, "Promoted", f"all steps passed: {judgement.message}")
    return None


def _windows(run: _Run) -> tuple[SideStats, SideStats] | str:
    """The step's traffic so far on (stable, candidate), or why there is none to judge yet."""
    figures = run.figures
    if figures is None:
        return "sidecar stats unavailable"
    base = run.baseline
    if base is None or base.stable is None or base.candidate is None:
        run.take_baseline()  # the stats were unreadable when the step began: the window starts now
        return "the analysis window just started (stats were unavailable before)"
    stable, candidate = window(figures.stable, base.stable), window(figures.candidate, base.candidate)
    if stable is None or candidate is None:
        run.take_baseline()
        run.events.append(
            CanaryEvent(
                "WindowRestarted",
                f"{run.stage}: traffic counters went down (a sidecar restarted or left);"
                " the analysis window restarts now",
            )
        )
        return "the analysis window just restarted (traffic counters went down)"
    return stable, candidate


def _judge(spec: CanarySpec, windows: tuple[SideStats, SideStats] | str, mirror: bool = False) -> _Judgement:
    """The verdict on a stage's window; `mirror`: the sides are the copies to the candidate and the
    primary's answers to the same requests, and feedback checks are skipped."""
    if isinstance(windows, str):
        return _Judgement("Inconclusive", SideFigures(), SideFigures(), windows)
    stable, candidate = windows
    cand, stab = _figures(candidate), _figures(stable)
    analysis = spec.analysis
    if mirror:
        summary = f"copies to candidate {_describe(cand)}; primary on the same requests {_describe(stab)}"
        unit = "copies"
    else:
        summary = f"candidate {_describe(cand)}; stable {_describe(stab)}"
        unit = "candidate requests"
    if candidate.requests < analysis.min_requests:
        need = f"{candidate.requests}/{analysis.min_requests} {unit}"
        if candidate.ejections and not mirror:
            # The sidecars took the candidate out of rotation for consecutive failed attempts: while it is
            # out its users fail over to other replicas and it gets no requests to reach minRequests
            # with, so holding would wait for ever on a candidate whose own failures already spoke.
            ejected = f"ejected {candidate.ejections}x by the sidecars for consecutive failures"
            return _Judgement("Fail", cand, stab, f"candidate {ejected} before {need}; {summary}")
        return _Judgement("Inconclusive", cand, stab, f"too little traffic ({need}); {summary}")
    if not mirror and _judges_feedback(analysis) and candidate.feedback < analysis.min_feedback:
        need = f"{candidate.feedback}/{analysis.min_feedback} candidate feedback posts"
        return _Judgement("Inconclusive", cand, stab, f"too little feedback ({need}); {summary}")
    failures, notes = _check(spec, candidate, stable, mirror)
    message = "; ".join([*failures, summary, *notes]) if failures else "; ".join([summary, *notes])
    return _Judgement("Fail" if failures else "Pass", cand, stab, message)


def _check(
    spec: CanarySpec, candidate: SideStats, stable: SideStats, mirror: bool = False
) -> tuple[list[str], list[str]]:
    """Threshold breaches of the candidate, and notes on checks that could not run."""
    analysis = spec.analysis
    failures: list[str] = []
    notes: list[str] = []
    rate = _error_rate(candidate)
    if rate > analysis.max_error_rate_percent:
        failures.append(f"error rate {rate:.1f}% > {analysis.max_error_rate_percent:g}%")
    cand_p95 = p95(candidate.latency_buckets)
    if analysis.max_p95_latency is not None:
        limit = seconds(analysis.max_p95_latency)
        if cand_p95 is None:
            notes.append("no latency figures for the p95 check")
        elif cand_p95 > limit:
            failures.append(f"p95 {_ms(cand_p95)} > {analysis.max_p95_latency}")
    if analysis.max_latency_increase_percent is not None:
        stable_p95 = p95(stable.latency_buckets)
        if (
            cand_p95 is None
            or stable_p95 is None
            or stable_p95 <= 0
            or stable.requests < analysis.min_requests
        ):
            side = "primary" if mirror else "stable"
            notes.append(f"p95 not compared with {side} ({stable.requests} {side} requests)")
        else:
            increase = (cand_p95 - stable_p95) / stable_p95 * 100
            if increase > analysis.max_latency_increase_percent:
                failures.append(
                    f"p95 {_ms(cand_p95)} is {increase:.0f}% above {'the primary' if mirror else 'stable'}'s"
                    f" {_ms(stable_p95)} (limit {analysis.max_latency_increase_percent:g}%)"
                )
    if mirror:
        if _judges_feedback(analysis):
            notes.append("feedback checks skipped while mirroring (clients score the primary's answers)")
        return failures, notes
    failures += _check_feedback(analysis, candidate, stable, notes)
    return failures, notes


def _judges_feedback(analysis: CanaryAnalysis) -> bool:
    return analysis.min_feedback_score is not None or analysis.max_feedback_score_drop is not None


def _check_feedback(
    analysis: CanaryAnalysis, candidate: SideStats, stable: SideStats, notes: list[str]
) -> list[str]:
    """Quality gates: the candidate's mean feedback score, alone and against stable's (called once the
    candidate has `min_feedback` posts)."""
    failures: list[str] = []
    mean = candidate.mean_feedback_score
    if mean is None:
        return failures
    if analysis.min_feedback_score is not None and mean < analysis.min_feedback_score:
        failures.append(f"mean feedback score {mean:.3f} < {analysis.min_feedback_score:g}")
    if analysis.max_feedback_score_drop is not None:
        stable_mean = stable.mean_feedback_score
        if stable_mean is None or stable.feedback < analysis.min_feedback:
            notes.append(f"feedback not compared with stable ({stable.feedback} stable feedback posts)")
        elif stable_mean - mean > analysis.max_feedback_score_drop:
            failures.append(
                f"mean feedback score {mean:.3f} is {stable_mean - mean:.3f} below stable's {stable_mean:.3f}"
                f" (limit {analysis.max_feedback_score_drop:g})"
            )
    return failures


def _hold(run: _Run, judgement: _Judgement) -> None:
    """Keep the step running; record why, writing (and telling) only what is new."""
    index, last = run.step_index, run.status.last_analysis
    same_hold = last is not None and last.step == index and last.verdict == "Inconclusive"
    figures = (judgement.candidate, judgement.stable, _cut(judgement.message))
    if last is not None and same_hold and (last.candidate, last.stable, last.message) == figures:
        return
    run.update(
        last_analysis=AnalysisResult(
            time=run.stamp,
            step=index,
            verdict="Inconclusive",
            candidate=judgement.candidate,
            stable=judgement.stable,
            message=_cut(judgement.message),
        )
    )
    if not same_hold:
        message = _cut(f"{run.stage} holds: {judgement.message}")
        run.events.append(CanaryEvent("AnalysisInconclusive", message))


def _fail(run: _Run, judgement: _Judgement) -> float | None:
    index, stage, mirroring = run.step_index, run.stage, run.mirroring
    failed = (run.status.failed_analyses or 0) + 1
    limit = run.spec.analysis.failure_limit
    run.update(failed_analyses=failed)
    if failed >= limit:
        message = f"{stage} failed analysis ({failed}/{limit}), rolled back: {judgement.message}"
        run.transition(CanaryPhase.ROLLED_BACK, index, 0, "RolledBack", message, warning=True)
        return None
    message = f"{stage} failed analysis ({failed}/{limit}): {judgement.message}"
    if mirroring:
        run.start_mirror("AnalysisFailed", message, warning=True)
    else:
        run.start_step(index, "AnalysisFailed", message, warning=True)
    return _pause_seconds(run)


# ----------------------------------------------------------------------------------------- small parts


def _figures(side: SideStats) -> SideFigures:
    latency = p95(side.latency_buckets)
    return SideFigures(
        requests=side.requests,
        errors=side.errors,
        error_rate_percent=round(_error_rate(side), 3),
        p95_latency_ms=None if latency is None else round(latency * 1000, 3),
        feedback=side.feedback,
        mean_feedback_score=None if side.mean_feedback_score is None else round(side.mean_feedback_score, 4),
        ejections=side.ejections,
    )


def _error_rate(side: SideStats) -> float:
    # Clamped: counters summed from sidecars scraped a moment apart can show errors above requests.
    return min(100.0, side.errors / side.requests * 100) if side.requests else 0.0


def _describe(figures: SideFigures) -> str:
    latency = "n/a" if figures.p95_latency_ms is None else f"{figures.p95_latency_ms:.0f}ms"
    text = f"{figures.error_rate_percent:.1f}% errors ({figures.errors}/{figures.requests}), p95 {latency}"
    if figures.mean_feedback_score is not None:
        text += f", feedback {figures.mean_feedback_score:.3f} ({figures.feedback})"
    if figures.ejections:
        text += f", ejected {figures.ejections}x"
    return text


def _ms(latency_seconds: float) -> str:
    return f"{latency_seconds * 1000:.0f}ms"


def _pause_seconds(run: _Run) -> float:
    return max(seconds(run.pause), MIN_REQUEUE_SECONDS)


def _recheck_seconds(run: _Run) -> float:
    return min(RECHECK_SECONDS, max(1.0, seconds(run.pause)))


def _cut(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
