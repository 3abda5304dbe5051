"""Active health of ModelEndpoint replicas: one probe, its schedule, and the hysteresis that turns probe
results into a replica's health.

`observe` and `due` are pure and keep all their state in `ReplicaStatus`, so an operator restart resumes
streaks and the probe schedule from status. The probe itself (I/O: one GET that never raises) is
`clients.probe`.

Hysteresis (`HealthCheck` thresholds):
- `Unknown` (never probed, or probing just enabled) is routable, so a new replica is trusted on its first
  successful probe (`Unknown → Healthy`), and is only drained after `unhealthyThreshold` failures in a
  row, exactly like a healthy one (`Unknown → Unhealthy`).
- `Healthy → Unhealthy` after `unhealthyThreshold` consecutive failures.
- `Unhealthy → Healthy` after `healthyThreshold` consecutive successes.
- Any other sequence (flapping) keeps the health it had; only the streaks move.

`lastError` keeps the text of the most recent failed probe even after later successes, because the reason
a replica was drained stays useful after it recovers; it describes the current state only while
`consecutiveFailures > 0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelroute_operator.logic.resources import (
    HealthCheck,
    ModelEndpointSpec,
    ReplicaHealth,
    ReplicaStatus,
    seconds,
)

MAX_ERROR_CHARS = 1024
"""`ReplicaStatus.lastError` is limited to this many characters by the schema."""


@dataclass(frozen=True)
class Transition:
    """A replica's health changed: the operator records an Event and recompiles the namespace."""

    replica: str
    region: str
    before: ReplicaHealth
    after: ReplicaHealth
    reason: str
    """CamelCase Event reason: `ReplicaHealthy` or `ReplicaUnhealthy`."""
    message: str

    @property
    def warning(self) -> bool:
        """Whether the Event is a Warning (a replica was drained) rather than Normal."""
        return self.after == ReplicaHealth.UNHEALTHY


def observe(
    previous: ReplicaStatus, ok: bool, error: str | None, check: HealthCheck, now: datetime
) -> tuple[ReplicaStatus, Transition | None]:
    """The replica's status after one probe result, and the health transition it caused, if any."""
    now = _whole_seconds(now)
    # Streaks stop at their threshold: a longer one decides nothing more, and a capped streak makes a
    # steady state write no status at all (probe times stay in memory).
    if ok:
        successes, failures = min(previous.consecutive_successes + 1, check.healthy_threshold), 0
        last_error = previous.last_error
    else:
        successes, failures = 0, min(previous.consecutive_failures + 1, check.unhealthy_threshold)
        last_error = (error or "probe failed")[:MAX_ERROR_CHARS]
    after = _next_health(previous.health, successes, failures, check)
    status = previous.model_copy(
        update={
            "health": after,
            "since": now if after != previous.health else previous.since,
            "consecutive_successes": successes,
            "consecutive_failures": failures,
            "last_probe_time": now,
            "last_error": last_error,
        }
    )
    if after == previous.health:
        return status, None
    return status, _transition(previous, status, check)


def _next_health(current: ReplicaHealth, successes: int, failures: int, check: HealthCheck) -> ReplicaHealth:
    if successes and (current == ReplicaHealth.UNKNOWN or successes >= check.healthy_threshold):
        return ReplicaHealth.HEALTHY
    if failures >= check.unhealthy_threshold:
        return ReplicaHealth.UNHEALTHY
    return current


def _transition(before: ReplicaStatus, after: ReplicaStatus, check: HealthCheck) -> Transition:
    where = f"replica {after.name} ({after.region})"
    if after.health == ReplicaHealth.UNHEALTHY:
        message = (
            f"{where} is unhealthy after {after.consecutive_failures} consecutive failed probes"
            f" of {check.path}: {after.last_error}"
        )
        reason = "ReplicaUnhealthy"
    else:
        again = " again" if before.health == ReplicaHealth.UNHEALTHY else ""
        count = after.consecutive_successes
        message = f"{where} is healthy{again} after {count} successful probe{'s' if count > 1 else ''}"
        reason = "ReplicaHealthy"
    return Transition(after.name, after.region, before.health, after.health, reason, message)


def due(status: ReplicaStatus, check: HealthCheck, now: datetime) -> bool:
    """Whether the replica should be probed at `now`: never probed, or its interval has passed since the
    last probe recorded in status (so a restarted operator keeps the schedule). Disabled checks are
    never due."""
    if not check.enabled:
        return False
    if status.last_probe_time is None:
        return True
    interval = timedelta(seconds=seconds(check.interval))
    last, now = _aware(status.last_probe_time), _aware(now)
    # A last probe further in the future than one interval means a clock jumped back (or another
    # operator's clock is off): waiting for it could stop probing for hours, and a probe is cheap.
    return last + interval <= now or last > now + interval


def short_reason(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


def _aware(moment: datetime) -> datetime:
    # Status times parse as aware UTC; a naive `now` from a caller is taken as UTC rather than crashing.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _whole_seconds(moment: datetime) -> datetime:
    # metav1.Time has whole seconds; storing them so keeps a status identical across a round trip.
    return _aware(moment).replace(microsecond=0)


ANTHROPIC_VERSION = "2023-06-01"


def probe_request(spec: ModelEndpointSpec, key: str | None) -> tuple[str, dict[str, str]] | str:
    """What the active probe of a replica of `spec` asks: (path, headers) of a cheap authenticated GET
    that proves the provider answers *and* takes the key (listing models costs no tokens), or why its
    replicas are not probed (their health then stays as it is; the sidecars' passive ejection still
    applies). `healthCheck.path` is the probe of `openai` endpoints; a native provider's is its own."""
    settings = spec.provider_settings
    auth = (settings.auth if settings else None) or ""
    if spec.provider == "openai":
        return spec.health_check.path, {"Authorization": f"Bearer {key}"} if key else {}
    if key is None:
        return "not probed: the provider's credentials are not set"
    if spec.provider == "azure-openai":
        version = settings.api_version if settings else ""
        header = {"Authorization": f"Bearer {key}"} if auth == "entra-token" else {"api-key": key}
        return f"/openai/models?api-version={version}", header
    if spec.provider == "anthropic":
        version = (settings.api_version if settings else None) or ANTHROPIC_VERSION
        return "/v1/models?limit=1", {"x-api-key": key, "anthropic-version": version}
    if spec.provider == "gemini" and auth != "service-account":
        return "/v1/models?pageSize=1", {"x-goog-api-key": key}
    if spec.provider == "gemini":
        return (
            "not probed: Vertex AI takes only a token signed with the service-account key, which the "
            "operator does not hold a signer for; the sidecars' passive ejection applies"
        )
    return (
        "not probed: Bedrock's runtime has no authenticated read to probe (listing models is another "
        "service, on another host); the sidecars' passive ejection applies"
    )
