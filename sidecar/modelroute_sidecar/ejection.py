"""Passive ejection: this sidecar's own view of which replicas are failing, as the engine's HealthView.

The operator's active checks are slow (seconds) and global; a sidecar sees failures at once. A replica
with `ejectAfterFailures` consecutive failed attempts is left out of decisions for a backoff that
doubles with each repeated ejection (up to a maximum). When the backoff ends the replica is half-open:
the next decision may pick it, and exactly one request is let through as a trial; its success restores
the replica, its failure ejects it again for longer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelroute_contract import Resilience

from .stats import EndpointStats

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplicaState:
    """Failure streak and ejection of one replica."""

    failures: int = 0
    ejections: int = 0
    """Ejections since the last success; sets the backoff."""
    ejected_until: float = 0.0
    trial_in_flight: bool = False


class Ejections:
    """Ejection state of every replica this sidecar has called; implements the engine's HealthView."""

    def __init__(self, latency: EndpointStats, on_eject: Callable[[str, str], None] | None = None) -> None:
        self._states: dict[tuple[str, str], ReplicaState] = {}
        self._latency = latency
        self._on_eject = on_eject

    def is_ejected(self, endpoint: str, replica: str) -> bool:
        """True while the replica is ejected, or half-open with its one trial request under way."""
        state = self._states.get((endpoint, replica))
        if state is None or state.ejections == 0:
            return False
        return state.trial_in_flight or time.monotonic() < state.ejected_until

    def any_ejected(self) -> bool:
        """Whether any replica is ejected or half-open (only failing replicas have a state at all)."""
        return any(state.ejections for state in self._states.values())

    def p95_latency_ms(self, endpoint: str) -> float | None:
        """Recent p95 latency of the endpoint as this sidecar measured it."""
        return self._latency.p95_latency_ms(endpoint)

    def begin(self, endpoint: str, replica: str) -> None:
        """An attempt starts; when the replica is half-open it becomes the trial."""
        state = self._states.get((endpoint, replica))
        if state is not None and state.ejections and time.monotonic() >= state.ejected_until:
            state.trial_in_flight = True

    def abandon(self, endpoint: str, replica: str) -> None:
        """An attempt ended without a verdict (client gone, deadline): free the trial slot."""
        state = self._states.get((endpoint, replica))
        if state is not None:
            state.trial_in_flight = False

    def succeeded(self, endpoint: str, replica: str) -> None:
        """A successful attempt ends any streak and any backoff."""
        state = self._states.get((endpoint, replica))
        if state is not None and (state.failures or state.ejections):
            if state.ejections:
                log.info("replica %s/%s restored after a successful request", endpoint, replica)
            del self._states[(endpoint, replica)]

    def failed(self, endpoint: str, replica: str, policy: Resilience) -> bool:
        """Count a failed attempt; True when it ejected the replica."""
        key = (endpoint, replica)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = ReplicaState()
        now = time.monotonic()
        was_trial = state.trial_in_flight
        state.trial_in_flight = False
        if state.ejections and now < state.ejected_until and not was_trial:
            return False  # a late answer from before the ejection: already out
        state.failures += 1
        if not was_trial and state.failures < policy.eject_after_failures:
            return False
        state.ejections += 1
        backoff = min(policy.base_ejection_seconds * 2 ** (state.ejections - 1), policy.max_ejection_seconds)
        state.ejected_until = now + backoff
        state.failures = 0
        log.warning(
            "replica %s/%s ejected for %.1fs (ejection %d)", endpoint, replica, backoff, state.ejections
        )
        self._latency.ejected(endpoint, replica)  # in /stats: the canary sees a candidate taken out
        if self._on_eject is not None:
            self._on_eject(endpoint, replica)
        return True

    def state(self, endpoint: str, replica: str) -> ReplicaState | None:
        """The state of one replica (for tests and the admin view)."""
        return self._states.get((endpoint, replica))
