"""Active health of ModelEndpoint replicas: one probe, its schedule, and the hysteresis that turns probe
results into a replica's health.

`observe` and `due` are pure and keep all their state in `ReplicaStatus`, so an operator restart resumes
streaks and the probe schedule from status. `probe` is the only I/O here: one GET that never raises.

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

import errno
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from yarl import URL

from .resources import HealthCheck, ReplicaHealth, ReplicaStatus, seconds

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


async def probe(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    timeout_seconds: float,
    token: str | None,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[bool, str | None]:
    """GET `path` on the host of the replica base URL `url`; `(True, None)` on a 2xx answer, else
    `(False, short reason)`. Never raises (except cancellation); a hanging endpoint times out.
    `tls` and `server_name` carry the endpoint's private CA and the name to verify (https only)."""
    try:
        target = URL(url).join(URL(path))
    except (ValueError, TypeError) as exc:
        return False, _short(f"invalid URL: {exc}")
    if not target.is_absolute():
        return False, _short(f"invalid URL: {url!r} has no host")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # A redirect is not an answer from the model server (often a login page): report it as it is.
        https = target.scheme == "https"
        async with session.get(
            target,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ssl=tls if https and tls is not None else True,
            server_hostname=server_name if https and server_name else None,
        ) as response:
            if 200 <= response.status < 300:
                return True, None
            return False, f"HTTP {response.status}"
    except TimeoutError:
        return False, f"timeout after {timeout_seconds:g}s"
    except aiohttp.ClientConnectorError as exc:
        return False, _connect_error(exc)
    except aiohttp.ServerDisconnectedError:
        return False, "server disconnected"
    except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:
        return False, _short(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the timer must keep probing whatever a probe hits
        return False, _short(f"probe error {type(exc).__name__}: {exc}")


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, socket.gaierror):
        return _short(f"DNS lookup failed for {exc.host}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return _short(f"TLS error: {exc}")
    if exc.os_error.errno == errno.ECONNREFUSED or isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return _short(f"connection failed: {exc.os_error.strerror or exc.os_error}")


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:197] + "..."


def _aware(moment: datetime) -> datetime:
    # Status times parse as aware UTC; a naive `now` from a caller is taken as UTC rather than crashing.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _whole_seconds(moment: datetime) -> datetime:
    # metav1.Time has whole seconds; storing them so keeps a status identical across a round trip.
    return _aware(moment).replace(microsecond=0)
