"""Shadow traffic: copies of a rule's requests sent to another endpoint in the background, for comparison.

The engine decides whether a request is mirrored and to which replica (`engine.shadow`: a stable hash of
the request id, and the rule's residency-filtered table, so a copy only ever goes where the request's
data may go). This module sends the copy and counts it:

- **Never on the client's time.** A copy starts from the request's accounting callback
  (`views.record_exchange`), which runs after the client's answer was written (for a stream: after its
  last event), as a task nobody awaits. Its answer is read and dropped; nothing of it reaches the client,
  which gets no header about it either (an unreleased model's name is the operator's business). The
  audit line says where the copy went, or why it was skipped.
- **Bounded.** At most the rule's `maxConcurrent` copies are in flight per worker; one more is skipped
  and counted `busy`; past the shadow endpoint's own request rate, `rate-limited`; a request the client
  abandoned is not copied (`client-closed`). Each copy has one attempt, no retries, and a deadline: the
  shadow endpoint's request timeout, capped by the policy's deadline (the per-try timeout until its
  headers arrive).
- **Non-streamed.** A streamed request is copied with `stream: false` (and without `stream_options`):
  the copy's latency is then the whole answer's, as is the streamed primary's in the figures, and its
  usage comes back in the body without relaying or draining a stream nobody reads.
- **Any provider.** A native provider's copy goes through the same translation and signing as a primary
  attempt (`providers.Natives`), non-streamed, and its answer is translated back for its usage.
- **Apart from routing.** A copy's result feeds neither passive ejection nor the latency figures the
  budgets read (`EndpointStats.record`): the shadow endpoint may also serve other rules, and an
  experiment must not move their traffic.

Figures: per (policy, rule, shadow endpoint) in `/stats` (`shadows`: the primary's figures on exactly
the mirrored requests beside the copies'), and `modelroute_shadow_total{policy,rule,endpoint,outcome}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from modelroute_contract import EndpointConfig, PolicyConfig

from .credentials import CredentialError
from .engine.model import Choice, RequestFeatures
from .engine.shadow import ShadowPick
from .httpclient import UpstreamError
from .providers import UnsupportedError
from .proxy import PATHS, Exchange, Upstreams, forwarded_headers, read_usage, rewrite_model
from .tls import TlsError

log = logging.getLogger(__name__)

SHADOW_HEADER = "x-modelroute-shadow"
"""Sent to the shadow upstream (never to the client): the request is a copy, its answer is discarded."""


@dataclass(slots=True)
class Mirror:
    """What a request's copy needs, kept from the request until its answer was written."""

    pick: ShadowPick
    policy: PolicyConfig
    endpoint: EndpointConfig | None
    """The shadow endpoint's config (None when the config lacks it: skipped)."""
    features: RequestFeatures
    raw: bytes
    body: dict[str, Any]
    outcome: str = ""
    """For the audit line: `sent`, or why not (`busy`, `rate-limited`, `client-closed`, `residency`,
    `unavailable`)."""

    def record(self) -> dict[str, str]:
        """The audit line's `shadow`."""
        choice = self.pick.choice
        return {
            "endpoint": self.pick.endpoint,
            "replica": choice.replica if choice is not None and self.outcome == "sent" else "",
            "region": choice.region if choice is not None and self.outcome == "sent" else "",
            "outcome": self.outcome,
        }


def copy_body(mirror: Mirror) -> dict[str, Any]:
    """The copy's parsed body, for a native provider's translation: the client's, without streaming."""
    if not mirror.features.stream:
        return mirror.body
    body = {k: v for k, v in mirror.body.items() if k != "stream_options"}
    body["stream"] = False
    return body


def copy_payload(mirror: Mirror, upstream_model: str) -> bytes:
    """The copy's body: the client's bytes with the model rewritten, or, for a streamed request, the
    body re-serialized without streaming (parsed again with `json` so that numbers keep every digit)."""
    if not mirror.features.stream:
        return rewrite_model(mirror.raw, mirror.body, upstream_model)
    body = json.loads(mirror.raw)
    body.pop("stream_options", None)
    body.update(model=upstream_model, stream=False)
    return json.dumps(body).encode()


class Shadows:
    """The copies of one worker: the in-flight count per rule, the tasks, and the figures."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams
        self.in_flight: dict[tuple[str, str], int] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, mirror: Mirror, exchange: Exchange, elapsed: float) -> None:
        """Count the primary's side and send the copy (or count why not); never waits for it. Called
        once the client's answer is out."""
        decision = exchange.decision
        assert decision is not None
        policy, rule, pick = decision.policy, decision.rule, mirror.pick
        upstreams = self.upstreams
        tally = upstreams.stats.shadows
        key = (policy, rule)
        skipped: str = pick.skipped
        if not skipped and (pick.choice is None or mirror.endpoint is None):
            skipped = "unavailable"
        if not skipped and exchange.outcome == "client_closed":
            # the client hung up: no answer to compare, and a copy would be a whole generation paid for a
            # request anyone can open and abandon at once
            skipped = "client-closed"
        if not skipped and self.in_flight.get(key, 0) >= pick.max_concurrent:
            skipped = "busy"
        # the shadow endpoint's own request rate holds for copies too: it may serve other rules as a
        # primary, and its provider's quota is one
        limit = mirror.endpoint.max_requests_per_minute if mirror.endpoint is not None else None
        if not skipped and not upstreams.endpoint_limits.admit(pick.endpoint, limit):
            skipped = "rate-limited"
        if skipped:
            mirror.outcome = skipped
            tally.skip(policy, rule, pick.endpoint, skipped)
            upstreams.metrics.shadow.inc((policy, rule, pick.endpoint, skipped))
            return
        mirror.outcome = "sent"
        primary_error = (exchange.outcome or "ok") != "ok"
        tally.entry(policy, rule, pick.endpoint).primary.add(
            elapsed * 1000, primary_error, exchange.tokens_in, exchange.tokens_out
        )
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        task = upstreams.loop.create_task(self._send(mirror, policy, rule, exchange.request_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, mirror: Mirror, policy: str, rule: str, request_id: str) -> None:
        pick, endpoint = mirror.pick, mirror.endpoint
        assert pick.choice is not None and endpoint is not None
        choice: Choice = pick.choice
        upstreams = self.upstreams
        started = time.monotonic()
        outcome, tokens = "error", (0, 0)
        try:
            outcome, tokens = await self._call(mirror, choice, endpoint, request_id)
        except asyncio.CancelledError:
            outcome = "cancelled"  # the worker is stopping: not a verdict on the endpoint
            raise
        except Exception:  # a bug here must not become an unretrieved task error (or a leak of the count)
            log.exception("shadow copy of %s failed unexpectedly", request_id)
        finally:
            self.in_flight[(policy, rule)] -= 1
            if outcome != "cancelled":
                elapsed_ms = (time.monotonic() - started) * 1000
                side = upstreams.stats.shadows.entry(policy, rule, pick.endpoint).shadow
                side.add(elapsed_ms, outcome != "ok", *tokens)
                upstreams.metrics.shadow.inc((policy, rule, pick.endpoint, outcome))

    async def _call(
        self, mirror: Mirror, choice: Choice, endpoint: EndpointConfig, request_id: str
    ) -> tuple[str, tuple[int, int]]:
        """One attempt at the shadow replica: (outcome, usage). The answer's bytes are dropped (a native
        provider's answer is translated first, for its usage)."""
        upstreams = self.upstreams
        native = endpoint.provider != "openai"
        headers = {
            "content-type": "application/json",
            "x-request-id": request_id,
            SHADOW_HEADER: "1",
            **forwarded_headers(mirror.features.headers),
        }
        try:
            tls = upstreams.tls.get(choice.endpoint, endpoint.tls)
            if native:  # the same translation and signing as a primary attempt (`proxy._native_request`)
                if endpoint.credentials is None:
                    raise CredentialError(
                        f"endpoint {endpoint.name} ({endpoint.provider}) has no credentials"
                    )
                outbound = upstreams.natives.request(
                    endpoint,
                    mirror.features.api,
                    copy_body(mirror),
                    choice.upstream_model,
                    choice.region,
                    choice.url,
                    upstreams.credentials.secret(endpoint.credentials),
                    lambda: copy_payload(mirror, choice.upstream_model),
                )
                path, payload = outbound.path, outbound.body
                headers.update(outbound.headers)
            else:
                path, payload = PATHS[mirror.features.api], copy_payload(mirror, choice.upstream_model)
                authorization = upstreams.credentials.authorization(endpoint.credentials)
                if authorization is not None:
                    headers["authorization"] = authorization
        except (CredentialError, TlsError, UnsupportedError, ValueError) as exc:  # never quotes a secret
            log.error("shadow copy of %s to %s: %s", request_id, choice.endpoint, exc)
            return "error", (0, 0)
        resilience = mirror.policy.resilience
        now = upstreams.now()
        deadline = now + min(resilience.deadline_seconds, endpoint.request_timeout_seconds)
        header_deadline = min(deadline, now + resilience.per_try_timeout_seconds)
        response = None
        try:
            async with upstreams.deadlines.scope(header_deadline) as scope:
                response = await upstreams.pool.post(
                    choice.url,
                    path,
                    payload,
                    headers,
                    connect_timeout=endpoint.connect_timeout_seconds,
                    tls=tls,
                )
                scope.reschedule(deadline)
                body = await response.read()
            if response.status >= 400:
                return "error", (0, 0)
            if native:  # MalformedAnswerError (a ValueError) when the answer has the wrong shape
                body = upstreams.natives.answer(
                    endpoint.provider, response.status, body, response.headers, choice.upstream_model
                )
        except TimeoutError:
            return "timeout", (0, 0)
        except (UpstreamError, OSError, ValueError) as exc:
            log.info(
                "shadow copy of %s to %s/%s failed: %s", request_id, choice.endpoint, choice.replica, exc
            )
            return "error", (0, 0)
        finally:
            if response is not None:
                response.release()
        return "ok", read_usage(body, None)

    async def close(self) -> None:
        """Stop the copies still in flight (at shutdown: a copy is worth less than a prompt exit)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
