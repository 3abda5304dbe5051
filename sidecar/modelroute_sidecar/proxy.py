"""Calling upstreams: follow the decision's plan with retries, failover, escalation and streaming relay.

The engine already chose, in order, every replica the request may go to, all of them compliant with
its data class; this module only walks that list. It never builds a target of its own, so no retry,
fallback or escalation can leave the residency the engine enforced.

Rules of the walk: at most `maxAttempts` tries, each bounded by the per-try timeout until response
headers and all by the overall deadline; a retry needs the retry budget; connect errors, timeouts, 5xx
and 429 move on to the next choice, other 4xx go back to the client as they are. A stream can fail over
only until its first byte reached the client: its first whole event is awaited before the response
starts (an upstream that ends its body before one fails over too). After that a stream that breaks, or
ends without being complete (`sse.py` says what that is), ends with an OpenAI-style error event and no
`[DONE]`, and is counted as `stream_broken`.

A streamed request is sent with `stream_options.include_usage` (unless the endpoint says it does not
take it) so that its tokens and cost are counted like a non-streamed answer's; the usage event is
dropped from the relay when the client had not asked for it itself. (The Responses API always reports
usage in its terminal event: nothing is added there.)

Headers across the proxy: the client's OpenAI scoping headers and W3C trace context go upstream as sent
(`FORWARDED_REQUEST_HEADERS`); the answering upstream's `x-ratelimit-*` and its request id come back
(`relayed_headers`). Every failure after the router's own attempts says `x-should-retry: false`, so
an SDK does not multiply the router's retries by its own (`errors.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from modelroute_contract import EndpointConfig, PolicyConfig

from .configstore import Snapshot
from .credentials import CredentialError, UpstreamCredentials
from .deadlines import Deadlines
from .ejection import Ejections
from .engine.model import Choice, Decision, RequestFeatures
from .errors import ApiError
from .httpclient import Pool, Response, UpstreamError
from .metrics import Metrics
from .providers import Natives, Outbound, UnsupportedError
from .providers.common import MalformedAnswerError
from .ratelimit import EndpointLimiter, RetryBudget
from .server import ClientGoneError, HttpResponse, ResponseStream
from .sse import DONE_EVENT, StreamScanner, error_event
from .stats import EndpointStats
from .structured import Expected, SchemaProblemError, check_answer, expected_output
from .tls import TlsContexts, TlsError

log = logging.getLogger(__name__)

PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
}
"""Upstream path per API, appended to a replica's base URL (which ends in `/v1`)."""

FORWARDED_REQUEST_HEADERS = (
    "openai-organization",
    "openai-project",
    "openai-beta",
    "traceparent",
    "tracestate",
)
"""Client headers sent upstream as they came: OpenAI's organization and project scoping and beta opt-ins
change what the upstream serves, and W3C trace context lets the upstream's spans join the client's
trace. (The client's `authorization` never goes upstream: the endpoint's own credentials do.)"""
RELAYED_RESPONSE_PREFIX = "x-ratelimit-"
"""Upstream answer headers the client gets as they are: the rate-limit state SDKs and clients pace by."""
UPSTREAM_REQUEST_ID_HEADER = "x-modelroute-upstream-request-id"
"""The answering upstream's `x-request-id`, for its provider's support. The client's own `x-request-id`
stays the router's, the id of the audit line (and sent upstream as `x-request-id`)."""

_USAGE_IN = re.compile(rb'"(?:prompt|input)_tokens"\s*:\s*(\d+)')
_USAGE_OUT = re.compile(rb'"(?:completion|output)_tokens"\s*:\s*(\d+)')


@dataclass(slots=True)
class Attempt:
    """One upstream call, as the audit log and headers report it."""

    endpoint: str
    replica: str
    region: str
    role: str
    outcome: str
    status: int = 0
    ms: float = 0.0


@dataclass(slots=True)
class Exchange:
    """Everything known about one client request so far; filled as it goes, read when it ends."""

    request_id: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    config_version: str = ""
    model: str = ""
    tenant: str = ""
    features: RequestFeatures | None = None
    decision: Decision | None = None
    attempts: list[Attempt] = field(default_factory=list)
    served: Choice | None = None
    status: int = 0
    outcome: str = ""
    error: str = ""
    escalated: str = ""
    """Why the request went to the escalation chain, when it did."""
    schema_check: str = ""
    """The structured-output check of the answer served (`ok`, `mismatch`, `timeout`), when checked."""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    """Spend of the request's answers, from their usage and the endpoints' prices."""
    fleet: object = None
    """The fleet-limit ticket (`fleet.Ticket`) until the answer is settled (`fleetstore`)."""
    mirror: object = None
    """The request's shadow copy (`shadow.Mirror`), when its rule mirrors it: sent once the answer is out."""
    budget_warning: str = ""
    """Budgets past their soft threshold: the `x-modelroute-budget-warning` header."""
    upstream_headers: dict[str, str] = field(default_factory=dict)
    """What the last upstream answer (or failure) returns to the client: `relayed_headers`."""
    provider: str = ""
    """The native provider (`anthropic`, ...) of the last attempt, the answering one when one answered;
    empty for `openai` (sent as `x-modelroute-provider` only when set)."""


def relayed_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """The headers of an upstream answer the client gets: `x-ratelimit-*` as they are, and the upstream's
    request id as `x-modelroute-upstream-request-id`."""
    relayed = {name: value for name, value in upstream.items() if name.startswith(RELAYED_RESPONSE_PREFIX)}
    upstream_id = upstream.get("x-request-id")
    if upstream_id:
        relayed[UPSTREAM_REQUEST_ID_HEADER] = upstream_id
    return relayed


def forwarded_headers(client: Mapping[str, str]) -> dict[str, str]:
    """The client's `FORWARDED_REQUEST_HEADERS` that it sent (names lower-case), for the upstream."""
    return {name: client[name] for name in FORWARDED_REQUEST_HEADERS if name in client}


def decision_headers(exchange: Exchange) -> dict[str, str]:
    """The `x-modelroute-*` headers explaining where a request went (empty values when not known)."""
    decision = exchange.decision
    where: Choice | Attempt | None = exchange.served
    if where is None and exchange.attempts:
        where = exchange.attempts[-1]
    headers = {
        "x-modelroute-endpoint": where.endpoint if where else "",
        "x-modelroute-replica": where.replica if where else "",
        "x-modelroute-region": where.region if where else "",
        "x-modelroute-rule": decision.rule if decision else "",
        "x-modelroute-policy": decision.policy if decision else "",
        "x-modelroute-data-class": decision.data_class if decision else "",
        "x-modelroute-data-class-source": data_class_source(decision),
        "x-modelroute-config-version": exchange.config_version,
        "x-modelroute-attempts": str(len(exchange.attempts)),
        "x-request-id": exchange.request_id,
    }
    if exchange.provider:
        headers["x-modelroute-provider"] = exchange.provider
    if decision is not None:
        if decision.complexity_scorer:  # a rule needed the score: which scorer gave what
            headers["x-modelroute-complexity"] = f"{decision.complexity};scorer={decision.complexity_scorer}"
        if decision.semantic_route:
            headers["x-modelroute-semantic-route"] = (
                f"{decision.semantic_route};similarity={decision.semantic_similarity:.3f}"
            )
    if exchange.escalated:
        headers["x-modelroute-escalated"] = exchange.escalated
    if decision is not None and decision.canary:
        headers["x-modelroute-canary"] = f"{decision.canary}:{decision.canary_side}"
    if decision is not None and decision.bandit is not None:
        headers["x-modelroute-strategy"] = decision.bandit.header()
    if decision is not None and decision.affinity is not None:
        served = (exchange.served.endpoint, exchange.served.replica) if exchange.served else None
        headers["x-modelroute-affinity"] = decision.affinity.header(served)
    if exchange.budget_warning:
        headers["x-modelroute-budget-warning"] = exchange.budget_warning
    if exchange.upstream_headers:
        headers.update(exchange.upstream_headers)
    return headers


def data_class_source(decision: Decision | None) -> str:
    """Where the data class came from; `;kept-strict` when the client declared a laxer class."""
    if decision is None:
        return ""
    declared = any(source == "header" for source, _ in decision.signals)
    if declared and decision.data_class_source != "header" and decision.data_classes:
        return f"{decision.data_class_source};declared-laxer-kept-strict"
    return decision.data_class_source


def rewrite_model(raw: bytes, body: dict[str, Any], upstream_model: str) -> bytes:
    """The request body with `model` replaced, every other byte as the client sent it.

    The top-level `"model": "<name>"` is spliced in place when the pattern occurs exactly once in the
    raw bytes. Without any backslash in the body that one occurrence is the top-level pair (keys and
    values are spelled literally); with escapes it could be a nested key while the top-level one is
    escape-spelled, so the result is checked with one parse. Anything unusual falls back to
    re-serializing the body, parsed again with `json` so that numbers keep every digit.
    """
    if body["model"] == upstream_model:
        return raw
    pattern = _model_key(body["model"])
    found = pattern.search(raw)
    if found is not None and pattern.search(raw, found.end()) is None:
        start, end = found.span()
        spliced = b"".join((raw[:start], b'"model":', _json_string(upstream_model), raw[end:]))
        if raw.find(b"\\") < 0 or _top_level_model(spliced) == upstream_model:
            return spliced
    return json.dumps({**json.loads(raw), "model": upstream_model}).encode()


USAGE_OPTION = b'"stream_options":{"include_usage":true},'
"""What `ask_for_usage` splices in after the opening brace of a body that has no `stream_options`."""


def client_asked_for_usage(body: dict[str, Any]) -> bool:
    """Whether a streamed request asks for the usage event itself (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def ask_for_usage(raw: bytes, body: dict[str, Any]) -> bytes | None:
    """The request body with `stream_options.include_usage` set, every other byte as the client sent
    it; None when the body's `stream_options` is not an object (left for the upstream to judge).

    Without `stream_options` in the parsed body, no key of the top-level object can be spelled that
    way (escapes included), so inserting the pair right after the object's opening brace is exact.
    A `stream_options` object that lacks the flag is rare: the body is re-serialized then, parsed
    again with `json` so that numbers keep every digit."""
    if "stream_options" not in body:
        start = len(raw) - len(raw.lstrip())
        if raw[start : start + 1] == b"{":  # not for a BOM or a UTF-16 body: those are re-encoded
            return b"".join((raw[: start + 1], USAGE_OPTION, raw[start + 1 :]))
    reparsed = json.loads(raw)
    options = reparsed.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return None
    return json.dumps({**reparsed, "stream_options": {**(options or {}), "include_usage": True}}).encode()


def choices_asked(body: dict[str, Any]) -> int:
    """How many choices a request asks for (`n`, default 1)."""
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


def _top_level_model(raw: bytes) -> object:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = json.loads(raw)  # what only the lenient parser reads (NaN), as the views did
    return parsed.get("model") if isinstance(parsed, dict) else None


@functools.lru_cache(maxsize=1024)
def _model_key(virtual: str) -> re.Pattern[bytes]:
    """`"model": "<virtual>"` as a pattern, compiled once per virtual model."""
    return re.compile(rb'"model"\s*:\s*' + re.escape(_json_string(virtual)))


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> bytes:
    return json.dumps(text).encode()


def read_usage(raw: bytes, parsed: dict[str, Any] | None) -> tuple[int, int]:
    """Prompt and completion tokens an upstream reported (`input_tokens`/`output_tokens` in the
    Responses API), without parsing the body when not parsed yet."""
    if parsed is not None:
        usage = parsed.get("usage") or {}
        return (
            int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0),
            int(usage.get("completion_tokens") or usage.get("output_tokens") or 0),
        )
    at = raw.rfind(b'"usage"')
    tail = raw[at:] if at >= 0 else b""
    found_in = _USAGE_IN.search(tail)
    found_out = _USAGE_OUT.search(tail)
    return (int(found_in.group(1)) if found_in else 0, int(found_out.group(1)) if found_out else 0)


def answer_problem(parsed: dict[str, Any], escalate_on: Sequence[str], needs_json: bool) -> str:
    """Why a successful chat answer fails the policy's checks (`length`, `invalidJson`), or ''."""
    choices = parsed.get("choices") or [{}]
    first = choices[0] if isinstance(choices[0], dict) else {}
    if "length" in escalate_on and first.get("finish_reason") == "length":
        return "length"
    if "invalidJson" in escalate_on and needs_json:
        content = (first.get("message") or {}).get("content")
        try:
            json.loads(content or "")
        except (TypeError, ValueError):
            return "invalidJson"
    return ""


@dataclass(slots=True)
class Answer:
    """The result of walking a list of choices."""

    kind: Literal["ok", "passthrough", "streamed", "failed"]
    status: int = 0
    body: bytes = b""
    content_type: str = "application/json"
    parsed: dict[str, Any] | None = None
    reason: str = ""
    """For `failed`: the last failure (connect, timeout, upstream-5xx, upstream-429, ...)."""
    retry_after: str | None = None
    detail: str = ""
    """For `failed` with reason `unsupported`: what the provider cannot carry (the client's 400)."""


@dataclass(slots=True)
class Call:
    """One client request being proxied."""

    stream: ResponseStream
    """Where a streamed answer is relayed to."""
    exchange: Exchange
    snapshot: Snapshot
    policy: PolicyConfig
    decision: Decision
    features: RequestFeatures
    raw: bytes
    body: dict[str, Any]
    deadline: float
    """When the whole request must be done, on the event loop's clock (`loop.time()`)."""
    payloads: dict[tuple[str, bool], bytes] = field(default_factory=dict)
    with_usage: bytes | None = None
    """The body with `stream_options.include_usage` set (made once, when first needed)."""
    expected: Expected | None = None
    """The request's structured output, compiled, when the policy checks it (`schemaMismatch`)."""

    def payload_for(self, upstream_model: str, ask_usage: bool = False) -> bytes:
        """The body to send to a replica serving `upstream_model` (rewritten once per model), asking
        for the usage event when `ask_usage` (and the body allows it)."""
        payload = self.payloads.get((upstream_model, ask_usage))
        if payload is None:
            raw = self.raw
            if ask_usage:
                if self.with_usage is None:
                    self.with_usage = ask_for_usage(self.raw, self.body) or self.raw
                raw = self.with_usage
            payload = self.payloads[(upstream_model, ask_usage)] = rewrite_model(
                raw, self.body, upstream_model
            )
        return payload

    def asks_usage_of(self, endpoint: EndpointConfig) -> bool:
        """Whether the sidecar adds `stream_options.include_usage` for this endpoint (a streamed
        request that does not ask for it, to an endpoint that takes the option)."""
        return (
            self.features.stream
            and self.features.api != "responses"  # its terminal event always carries the usage
            and endpoint.capabilities.stream_usage
            and not client_asked_for_usage(self.body)
            and isinstance(self.body.get("stream_options"), dict | None)
        )


class Upstreams:
    """The upstream side of the sidecar: pooled connections plus everything an attempt updates."""

    def __init__(
        self,
        pool: Pool,
        credentials: UpstreamCredentials,
        ejections: Ejections,
        stats: EndpointStats,
        metrics: Metrics,
        *,
        retry_floor_per_second: float,
        tls: TlsContexts | None = None,
    ) -> None:
        self.pool = pool
        self.credentials = credentials
        self.tls = tls if tls is not None else TlsContexts(credentials.secrets_dir)
        self.ejections = ejections
        self.stats = stats
        self.metrics = metrics
        self.endpoint_limits = EndpointLimiter()
        self.natives = Natives()
        self.loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(self.loop)
        self._retry_floor = retry_floor_per_second
        self._budgets: dict[str, RetryBudget] = {}

    def budget(self, policy: str) -> RetryBudget:
        """The retry budget of a policy (kept across config swaps)."""
        budget = self._budgets.get(policy)
        if budget is None:
            budget = self._budgets[policy] = RetryBudget(self._retry_floor)
        return budget

    def now(self) -> float:
        """The event loop's clock, on which a call's deadline is given."""
        return self.loop.time()

    async def forward(self, call: Call) -> HttpResponse | None:
        """Serve the request along the decision's plan (then its escalation); raise ApiError on failure.
        None when the answer was streamed to the client already."""
        resilience = call.policy.resilience
        if self._checks_schema(call):  # before any upstream call: a broken schema is the client's 400
            try:
                call.expected = expected_output(call.body)
            except SchemaProblemError as exc:
                raise ApiError(400, "invalid_json_schema", str(exc), param=exc.field) from None
        self.budget(call.policy.name).record_request()
        answer = await self._walk(call, call.decision.plan, resilience.max_attempts)
        problem = self._escalation_reason(call, answer)
        if problem:
            call.exchange.escalated = problem
            self.metrics.escalations.labels(call.decision.plan[0].endpoint, problem).inc()
            escalated = await self._walk(call, call.decision.escalation, len(call.decision.escalation))
            if escalated.kind in ("ok", "passthrough") or answer.kind == "failed":
                answer = escalated
                if call.expected is not None and answer.kind == "ok" and answer.parsed is not None:
                    result = check_answer(answer.parsed, call.expected)  # what the client gets, said
                    self.metrics.schema_checks.labels(result).inc()
                    call.exchange.schema_check = result
        return self._respond(call, answer)

    def _escalation_reason(self, call: Call, answer: Answer) -> str:
        """Why this answer should go on to the escalation chain, or '' when it stands."""
        if not call.decision.escalation or call.features.api != "chat" or call.features.stream:
            return ""
        escalate_on = call.policy.resilience.escalate_on
        if answer.kind == "failed":
            reason = "timeout" if answer.reason == "timeout" else "error"
            if reason in escalate_on and self.now() < call.deadline:
                return reason
            return ""
        if answer.kind == "ok" and answer.parsed is not None:
            problem = answer_problem(answer.parsed, escalate_on, call.features.needs_json)
            if not problem and call.expected is not None:
                result = check_answer(answer.parsed, call.expected)
                self.metrics.schema_checks.labels(result).inc()
                call.exchange.schema_check = result
                if result == "mismatch":
                    problem = "schemaMismatch"
            return problem
        return ""

    @staticmethod
    def _checks_schema(call: Call) -> bool:
        """Whether this request's structured output is checked: the policy opts in, the rule has an
        escalation to send a failed answer to, and the answer is not streamed (a stream is the
        client's as it comes: there is nothing left to escalate once it failed)."""
        return (
            "schemaMismatch" in call.policy.resilience.escalate_on
            and bool(call.decision.escalation)
            and call.features.api == "chat"
            and not call.features.stream
        )

    def _respond(self, call: Call, answer: Answer) -> HttpResponse | None:
        exchange = call.exchange
        if answer.kind == "streamed":
            return None
        if answer.kind in ("ok", "passthrough"):
            exchange.outcome = "ok" if answer.kind == "ok" else "upstream_4xx"
            return HttpResponse(answer.status, answer.body, decision_headers(exchange), answer.content_type)
        raise self._failure(call, answer)

    def _failure(self, call: Call, answer: Answer) -> ApiError:
        """The error a client gets when every choice failed."""
        tried = ", ".join(f"{a.endpoint}/{a.replica}: {a.outcome}" for a in call.exchange.attempts) or "none"
        residency = [d for d in call.decision.dropped if d.reason.value.startswith("residency")]
        note = ""
        if residency:
            note = (
                f"; {len(residency)} replica(s) excluded by residency for data class "
                f"{call.decision.data_class!r} were not tried"
            )
        if self.now() >= call.deadline or answer.reason == "deadline":
            return ApiError(
                504,
                "deadline_exceeded",
                f"deadline of {call.policy.resilience.deadline_seconds}s exceeded (attempts: {tried}){note}",
            )
        if answer.reason == "unsupported":
            return ApiError(400, "unsupported_request", f"{answer.detail} (attempts: {tried})")
        if answer.reason == "upstream-429":
            headers = {"retry-after": answer.retry_after} if answer.retry_after else {}
            return ApiError(
                429,
                "upstream_rate_limited",
                f"upstreams are rate limiting (attempts: {tried})",
                headers=headers,
            )
        if answer.reason in ("upstream-5xx", "upstream-protocol", "stream-empty"):
            return ApiError(502, "upstream_error", f"every allowed upstream failed (attempts: {tried}){note}")
        return ApiError(
            503,
            "no_healthy_endpoint",
            f"no allowed upstream could be reached (attempts: {tried}){note}",
        )

    async def _walk(self, call: Call, choices: Sequence[Choice], max_attempts: int) -> Answer:
        """Try `choices` in order until one answers; the last failure when none does."""
        exchange = call.exchange
        budget = self.budget(call.policy.name)
        answer = Answer("failed", reason="no-choice")
        made = 0
        for choice in choices:
            if made >= max_attempts:
                break
            if self.now() >= call.deadline:
                return Answer("failed", reason="deadline")
            if made and self.ejections.is_ejected(choice.endpoint, choice.replica):
                continue  # ejected (or on trial) since the decision was made
            endpoint = call.snapshot.endpoints[choice.endpoint]
            if not self.endpoint_limits.admit(choice.endpoint, endpoint.max_requests_per_minute):
                exchange.attempts.append(
                    Attempt(
                        choice.endpoint, choice.replica, choice.region, choice.role, "endpoint-rate-limited"
                    )
                )
                answer = Answer("failed", reason="upstream-429", retry_after="1")
                continue
            if exchange.attempts:
                if not budget.try_spend(call.policy.resilience.retry_budget_percent):
                    self.metrics.retries_denied.labels(exchange.route).inc()
                    break
                self.metrics.retries.labels(choice.endpoint, answer.reason).inc()
            made += 1
            answer = await self._attempt(call, choice, endpoint)
            if answer.kind != "failed":
                first = exchange.attempts[0]
                if first.endpoint != choice.endpoint or first.region != choice.region:
                    self.metrics.failovers.labels(first.endpoint, choice.endpoint).inc()
                return answer
        return answer

    async def _attempt(self, call: Call, choice: Choice, endpoint: EndpointConfig) -> Answer:
        """Call one replica; record the attempt; relay the stream when it is one."""
        exchange = call.exchange
        attempt = Attempt(choice.endpoint, choice.replica, choice.region, choice.role, "pending")
        exchange.attempts.append(attempt)
        native = endpoint.provider != "openai"
        ask_usage = call.asks_usage_of(endpoint)
        try:
            if native:  # a native provider's API: translated (`providers`); never the OpenAI-to-OpenAI path
                exchange.provider = endpoint.provider  # the attempt that answers sets it last
                outbound = self._native_request(call, choice, endpoint, ask_usage)
                path, payload, authorization = outbound.path, outbound.body, None
            else:
                exchange.provider = ""  # openai: no header (the OpenAI path stays as it was)
                authorization = self.credentials.authorization(endpoint.credentials)
                path, payload = PATHS[call.features.api], call.payload_for(choice.upstream_model, ask_usage)
        except UnsupportedError as exc:
            attempt.outcome = "unsupported"
            return Answer("failed", reason="unsupported", detail=str(exc))
        except (CredentialError, ValueError) as exc:  # the providers' key parsers never quote the secret
            log.error("request %s: %s", exchange.request_id, exc)
            attempt.outcome = "credentials"
            return Answer("failed", reason="credentials")
        try:
            tls = self.tls.get(choice.endpoint, endpoint.tls)
        except TlsError as exc:
            log.error("request %s: %s", exchange.request_id, exc)
            attempt.outcome = "tls-config"
            return Answer("failed", reason="tls-config")
        headers = {
            "content-type": "application/json",
            "x-request-id": exchange.request_id,
            **forwarded_headers(call.features.headers),
        }
        if native:
            headers.update(outbound.headers)
        elif authorization is not None:
            headers["authorization"] = authorization
        resilience = call.policy.resilience
        started = time.monotonic()
        now = self.now()
        attempt_deadline = min(call.deadline, now + endpoint.request_timeout_seconds)
        header_deadline = min(attempt_deadline, now + resilience.per_try_timeout_seconds)
        self.ejections.begin(choice.endpoint, choice.replica)
        response: Response | None = None
        scanner: StreamScanner | None = None
        first_events = b""
        try:
            # one deadline scope per attempt: the per-try timeout until the answer starts, then moved
            # out to the attempt's deadline for the body (or the relayed stream)
            async with self.deadlines.scope(header_deadline) as scope:
                response = await self.pool.post(
                    choice.url,
                    path,
                    payload,
                    headers,
                    connect_timeout=endpoint.connect_timeout_seconds,
                    tls=tls,
                )
                exchange.upstream_headers = relayed_headers(response.headers)
                if call.features.stream and response.status == 200:
                    # wait for the first whole event before answering the client: until then failover
                    # is possible, also when the upstream ends its body without sending one
                    scanner = StreamScanner(
                        choices=choices_asked(call.body),
                        hide_usage=ask_usage,
                        responses=call.features.api == "responses",
                    )
                    if native:  # the native stream, translated to OpenAI chunks before the scanner
                        model = choice.upstream_model
                        scanner = self.natives.scanner(endpoint.provider, model, call.body, scanner)
                        response.headers["content-type"] = "text/event-stream"
                    first_events = await _first_events(response, scanner)
                    if not first_events:
                        log.warning(
                            "request %s: %s/%s ended its stream before any event",
                            exchange.request_id, choice.endpoint, choice.replica,
                        )  # fmt: skip
                        return self._failed(call, choice, attempt, started, "stream-empty", 200, None)
                status = response.status
                scope.reschedule(attempt_deadline)
                if scanner is not None:
                    return await self._relay(call, choice, attempt, started, response, first_events, scanner)
                body = await response.read()
                if native:
                    body = self.natives.answer(
                        endpoint.provider, status, body, response.headers, choice.upstream_model
                    )
        except TimeoutError:
            if call.stream.started:  # the deadline passed mid-stream: too late to fail over
                await self._break_stream(
                    call, choice, attempt, "timeout", replica_failed=False, scanner=scanner
                )
                return Answer("streamed", status=call.exchange.status)
            return self._failed(call, choice, attempt, started, "timeout", 0, None)
        except (UpstreamError, OSError, ValueError) as exc:
            log.info(
                "request %s: %s/%s failed: %s", exchange.request_id, choice.endpoint, choice.replica, exc
            )
            # a request the upstream may have read is not resent: this attempt failed, the walk decides
            if isinstance(exc, UpstreamError):
                reason = exc.reason
            else:  # a native answer we cannot translate is the upstream's protocol error, as a bad frame is
                reason = "upstream-protocol" if isinstance(exc, MalformedAnswerError) else "connect"
            return self._failed(call, choice, attempt, started, reason, 0, None)
        except BaseException:
            self.ejections.abandon(choice.endpoint, choice.replica)
            raise
        finally:
            if response is not None:
                response.release()
        if status >= 500 or status == 429:
            reason = "upstream-429" if status == 429 else "upstream-5xx"
            log.warning(
                "request %s: %s/%s answered %d: %.200r",
                exchange.request_id, choice.endpoint, choice.replica, status, body,
            )  # fmt: skip
            return self._failed(
                call, choice, attempt, started, reason, status, response.headers.get("retry-after")
            )
        content_type = "application/json" if native else response.content_type
        return self._answered(call, choice, attempt, started, status, body, content_type)

    def _native_request(
        self, call: Call, choice: Choice, endpoint: EndpointConfig, ask_usage: bool
    ) -> Outbound:
        """The request to a native provider's replica (or UnsupportedError, CredentialError)."""
        if endpoint.credentials is None:
            raise CredentialError(f"endpoint {endpoint.name} ({endpoint.provider}) has no credentials")
        return self.natives.request(
            endpoint,
            call.features.api,
            call.body,
            choice.upstream_model,
            choice.region,
            choice.url,
            self.credentials.secret(endpoint.credentials),
            lambda: call.payload_for(choice.upstream_model, ask_usage),
        )

    def _failed(
        self,
        call: Call,
        choice: Choice,
        attempt: Attempt,
        started: float,
        reason: str,
        status: int,
        retry_after: str | None,
    ) -> Answer:
        elapsed = time.monotonic() - started
        attempt.outcome, attempt.status, attempt.ms = reason, status, round(elapsed * 1000, 3)
        self.stats.record(  # first: an ejection below is counted on the replica's figures
            choice.endpoint, choice.replica, choice.region, elapsed * 1000, error=True, client_error=False
        )
        if self.ejections.failed(choice.endpoint, choice.replica, call.policy.resilience):
            self.metrics.ejections.labels(choice.endpoint, choice.replica).inc()
        self.metrics.observe_upstream(choice.endpoint, choice.replica, choice.region, reason, elapsed)
        return Answer("failed", status=status, reason=reason, retry_after=retry_after)

    def _succeeded(self, call: Call, choice: Choice, attempt: Attempt, started: float, status: int) -> float:
        elapsed = time.monotonic() - started
        outcome = "ok" if status < 400 else "upstream-4xx"
        attempt.outcome, attempt.status, attempt.ms = outcome, status, round(elapsed * 1000, 3)
        self.ejections.succeeded(choice.endpoint, choice.replica)
        self.stats.record(
            choice.endpoint,
            choice.replica,
            choice.region,
            elapsed * 1000,
            error=False,
            client_error=status >= 400,
        )
        self.metrics.observe_upstream(choice.endpoint, choice.replica, choice.region, outcome, elapsed)
        call.exchange.served = choice
        return elapsed

    def _answered(
        self,
        call: Call,
        choice: Choice,
        attempt: Attempt,
        started: float,
        status: int,
        body: bytes,
        content_type: str,
    ) -> Answer:
        """A complete non-streamed answer: count it, read its usage, parse it only when a check needs it."""
        self._succeeded(call, choice, attempt, started, status)
        if status >= 400:
            return Answer("passthrough", status=status, body=body, content_type=content_type)
        parsed: dict[str, Any] | None = None
        if self._needs_parse(call):
            try:
                loaded = json.loads(body)
                parsed = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                parsed = {}
        self._count_tokens(call, choice, read_usage(body, parsed))
        return Answer("ok", status=status, body=body, content_type=content_type, parsed=parsed)

    def _needs_parse(self, call: Call) -> bool:
        escalate_on = call.policy.resilience.escalate_on
        return (
            bool(call.decision.escalation)
            and call.features.api == "chat"
            and (
                "length" in escalate_on
                or ("invalidJson" in escalate_on and call.features.needs_json)
                or call.expected is not None
            )
        )

    def _count_tokens(self, call: Call, choice: Choice, usage: tuple[int, int]) -> None:
        tokens_in, tokens_out = max(0, usage[0]), max(0, usage[1])  # counters only go up
        exchange = call.exchange
        exchange.tokens_in += tokens_in
        exchange.tokens_out += tokens_out
        if tokens_in or tokens_out:
            pricing = call.snapshot.endpoints[choice.endpoint].pricing
            cost = (tokens_in * pricing.input_per_million + tokens_out * pricing.output_per_million) / 1e6
            exchange.cost_usd += cost
            self.metrics.count_tokens(choice.endpoint, tokens_in, tokens_out, cost)

    async def _relay(
        self,
        call: Call,
        choice: Choice,
        attempt: Attempt,
        started: float,
        upstream: Response,
        first_events: bytes,
        scanner: StreamScanner,
    ) -> Answer:
        """Relay an SSE stream event by event (under the caller's deadline), each piece scanned and
        written from the upstream's protocol callback; from here on a failure can only end the stream.
        A complete stream ends with `[DONE]` (added when the upstream left it out), any other with an
        error event; the usage event counts tokens whatever the ending."""
        self._succeeded(call, choice, attempt, started, upstream.status)
        exchange = call.exchange
        exchange.outcome, exchange.status = "ok", upstream.status
        headers = {
            "content-type": upstream.headers.get("content-type", "text/event-stream"),
            "cache-control": "no-cache",
            **decision_headers(exchange),
        }
        stream = call.stream
        relay_piece = stream.sink(scanner.feed)  # called by the upstream's protocol, once per piece
        try:
            await stream.start(upstream.status, headers)
            await stream.write(first_events)
            await upstream.relay(relay_piece, stream.drain)
            tail = scanner.finish()
            if tail:
                await stream.write(tail)
            if scanner.complete:
                if not scanner.done:
                    await stream.write(DONE_EVENT)
                await stream.end()
            elif scanner.error:  # the upstream's own error event told the client already
                log.warning(
                    "request %s: %s/%s sent an error event mid-stream",
                    exchange.request_id, choice.endpoint, choice.replica,
                )  # fmt: skip
                exchange.outcome, exchange.error = "stream_broken", "upstream error event"
                attempt.outcome = "stream-error"
                await stream.end()
            else:
                log.warning(
                    "request %s: stream from %s/%s ended incomplete (no [DONE], no finish_reason)",
                    exchange.request_id, choice.endpoint, choice.replica,
                )  # fmt: skip
                await self._break_stream(
                    call, choice, attempt, "stream-incomplete", replica_failed=True, scanner=scanner
                )
        except ClientGoneError:
            exchange.outcome = "client_closed"
        except (UpstreamError, OSError, ValueError, TimeoutError) as exc:
            log.warning(
                "request %s: stream from %s/%s broke: %s",
                exchange.request_id, choice.endpoint, choice.replica, exc.__class__.__name__,
            )  # fmt: skip
            await self._break_stream(
                call, choice, attempt, "stream-broken", replica_failed=True, scanner=scanner
            )
        finally:
            if scanner.usage is not None:  # once, the last report: what the upstream says it generated
                self._count_tokens(call, choice, scanner.usage)
        return Answer("streamed", status=upstream.status)

    async def _break_stream(
        self,
        call: Call,
        choice: Choice,
        attempt: Attempt,
        outcome: str,
        *,
        replica_failed: bool,
        scanner: StreamScanner | None = None,
    ) -> None:
        """End a stream the client already has part of: tell it the stream broke, in the SDKs' format
        (an `error` event, and no `[DONE]`). `replica_failed` counts it against the replica (not for
        our own deadline)."""
        if outcome == "stream-incomplete":
            message = "upstream ended the stream before the answer was complete"
        elif replica_failed:
            message = "upstream stream interrupted"
        else:
            message = "stream cut at the request's deadline"
        call.exchange.outcome, call.exchange.error = "stream_broken", message
        attempt.outcome = outcome
        if replica_failed and self.ejections.failed(choice.endpoint, choice.replica, call.policy.resilience):
            self.metrics.ejections.labels(choice.endpoint, choice.replica).inc()
        # an over-long event may have been passed on unfinished: close it first, so the error stands alone
        prefix = b"\n\n" if scanner is not None and scanner.open_event else b""
        with contextlib.suppress(ClientGoneError):
            await call.stream.write(prefix + error_event(message, "stream_broken"))
            await call.stream.end()


async def _first_events(response: Response, scanner: StreamScanner) -> bytes:
    """Read a stream until it yields a whole event to relay; b'' when the body ended without one."""
    while piece := await response.next_chunk():
        events = scanner.feed(piece)
        if events:
            return events
    return scanner.finish()
