"""HTTP views of the data plane: parse the request, ask the engine, hand the decision to the proxy.

Each API view is three steps (parse -> decide -> forward) plus the bookkeeping every request gets
whatever its fate: metrics, the audit line and the decision headers. Errors are raised as `ApiError`
below `serve_api`, which turns them into OpenAI-style responses carrying the decision headers; `ROUTES`
maps paths and methods to views for the data port's server (`server.py`) via `app.dispatcher`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from modelroute_contract import REQUEST_TOKEN_COUNT_FIELDS, PolicyConfig, token_count_problem

from .bandit import NOT_FAILURES
from .configstore import Snapshot
from .credentials import Client
from .engine import extract_features
from .engine.affinity import Affinity
from .engine.features import TextScanLimitError
from .engine.model import Api, Choice, Decision, RequestFeatures
from .errors import ApiError, error_response, unexpected
from .feedback import MAX_BODY_BYTES as MAX_FEEDBACK_BYTES
from .feedback import FeedbackError, Served, parse_feedback
from .metrics import CONTENT_TYPE
from .proxy import Call, Exchange, decision_headers
from .server import HttpRequest, HttpResponse, ResponseStream
from .shadow import Mirror
from .state import Sidecar

View = Callable[[Sidecar, HttpRequest, ResponseStream, str], Awaitable[HttpResponse | None]]
"""A data-port view: the sidecar, the request, a stream to answer through, and the request id."""

_REQUIRED_FIELD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
"""The field each API cannot do without. The Responses API has none: `input` may come from a stored
prompt or a previous response, which the upstream judges."""

MAX_JSON_DEPTH = 1024
"""orjson's nesting limit; deeper bodies are refused with 400 (the standard library would recurse)."""

RESIDENCY_CODES = frozenset({"no_compliant_endpoint"})
"""Engine error codes that mean residency left nothing to call (counted as residency blocks)."""

TENANT_MAX_CHARS = 128
"""A claimed tenant (`x-modelroute-tenant`, `metadata.tenant`) longer than this is refused: it keys rate
buckets, fleet budgets and audit lines, and a client must not be able to make those entries large."""
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def api_view(api: Api) -> View:
    """The view of one OpenAI API (`POST /v1/chat/completions` and its siblings)."""

    async def view(
        sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
    ) -> HttpResponse | None:
        return await serve_api(sidecar, request, stream, Exchange(request_id, api), api)

    return view


async def serve_api(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, exchange: Exchange, api: Api
) -> HttpResponse | None:
    """Serve one API request and account for it, whatever happens; failures become OpenAI-style
    errors that carry the decision headers, so a refused request is as explainable as a served one.

    The accounting (metrics, audit line) is a callback for right after the answer, off the client's
    latency: it runs once this task step, which writes the response, yields, queued ahead of the step
    that starts this connection's next request. The latency it records is taken here, before."""
    try:
        response = await route_request(sidecar, request, stream, exchange, api)
        if response is not None:  # a streamed answer set its status when it started
            exchange.status = response.status
        return response
    except asyncio.CancelledError:
        exchange.outcome = "client_closed"  # the client left (also mid-stream): its exchange was stopped
        raise
    except Exception as exc:
        if stream.started:
            raise  # the answer is under way: nothing can replace it, the server cuts the connection
        error = unexpected(exc, request.path, exchange.request_id)
        exchange.status, exchange.outcome, exchange.error = error.status, error.code, error.message
        response = error_response(error, exchange.request_id)
    finally:
        ended = time.perf_counter()
        loop = sidecar.upstreams.loop if sidecar.upstreams is not None else asyncio.get_running_loop()
        loop.call_soon(record_exchange, sidecar, exchange, ended - exchange.started)
    response.headers.update(decision_headers(exchange))
    return response


async def route_request(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, exchange: Exchange, api: Api
) -> HttpResponse | None:
    """Parse -> decide -> forward."""
    snapshot = sidecar.config.current
    if snapshot is None:
        raise ApiError(503, "not_ready", "the router has no configuration loaded yet")
    exchange.config_version = snapshot.version
    client = authenticate(sidecar, request)
    raw = request.body  # the server refused bodies over the limit with 413 already
    body = parse_body(raw, exchange.route)
    exchange.model = body["model"]
    policy = snapshot.policies.get(body["model"])
    if policy is None:
        raise ApiError(404, "model_not_found", unknown_model_message(body["model"], snapshot), param="model")
    features = extract(request, exchange, api, body, policy, client)
    limit_tenant(sidecar, policy, features)
    if policy.fleet_limits is not None:  # fleet limits and budgets: no store round trip on a warm lease
        estimate = features.prompt_tokens + (features.max_output_tokens or 0)
        tier = features.metadata.get("tier", "")
        await sidecar.fleet.admit(policy, exchange.tenant, tier, estimate, exchange)
    decision = decide(sidecar, snapshot, features, exchange)
    if decision.shadow is not None:  # sent from `record_exchange`, once the answer is out
        endpoint = snapshot.endpoints.get(decision.shadow.endpoint)
        exchange.mirror = Mirror(decision.shadow, policy, endpoint, features, raw, body)
    assert sidecar.upstreams is not None
    deadline = sidecar.upstreams.now() + policy.resilience.deadline_seconds
    call = Call(stream, exchange, snapshot, policy, decision, features, raw, body, deadline)
    return await sidecar.upstreams.forward(call)


def authenticate(sidecar: Sidecar, request: HttpRequest) -> Client | None:
    """The client a request's API key belongs to; 401 when keys are configured and it has none valid."""
    keys = sidecar.client_keys
    if not keys.enabled:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    client = keys.lookup(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
    if client is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "a valid API key is required: send `Authorization: Bearer <key>`"
            if not header
            else "the API key is not valid",
        )
    return client


def parse_body(raw: bytes, api: str) -> dict[str, Any]:
    """The request JSON, checked for the fields routing needs (400 otherwise)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # not worth a second parse: the lenient one would recurse too
            raise ApiError(
                400, "invalid_json", f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        body = _lenient_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "invalid_request", "`model` is required and must be a string", param="model")
    field = _REQUIRED_FIELD.get(api)
    if field is not None and field not in body:
        raise ApiError(400, "invalid_request", f"`{field}` is required", param=field)
    if api == "chat" and not isinstance(body["messages"], list):
        raise ApiError(400, "invalid_request", "`messages` must be a list", param="messages")
    if not isinstance(body.get("stream", False), bool):
        raise ApiError(400, "invalid_request", "`stream` must be a boolean", param="stream")
    for name in REQUEST_TOKEN_COUNT_FIELDS:
        # A zero or negative count would otherwise be ignored for budgets and sent upstream as it is.
        if name in body and body[name] is not None and (problem := token_count_problem(body[name])):
            raise ApiError(400, "invalid_request", f"`{name}` {problem}", param=name)
    return body


def _lenient_json(raw: bytes) -> Any:
    """The standard library's parse, for what orjson refuses but `json` (and many upstreams) accept,
    such as NaN; a body neither can read is a 400."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(
            400, "invalid_json", f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
        ) from None


def unknown_model_message(model: str, snapshot: Snapshot) -> str:
    """The 404 text, naming the models that do exist so a typo is easy to spot."""
    served = ", ".join(sorted(snapshot.policies)) or "none"
    return f"the model {model!r} does not exist; this router serves: {served}"


def extract(
    request: HttpRequest,
    exchange: Exchange,
    api: Api,
    body: dict[str, Any],
    policy: PolicyConfig,
    client: Client | None,
) -> RequestFeatures:
    """Request features for the engine; an authenticated client's tenant and tier override any claim."""
    headers = {k: v for k, v in request.headers.items() if k != "authorization"}
    if client is not None:
        refuse_conflicting_tenant(request.headers, body, client)
        headers["x-modelroute-tenant"] = client.tenant
        headers["x-modelroute-tier"] = client.tier
    try:
        features = extract_features(
            body,
            headers,
            exchange.request_id,
            api,
            residency_header=policy.residency.header,
            scan=bool(policy.residency.detectors),  # no detector reads the walk's text: skip it
        )
    except TextScanLimitError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    if client is not None:
        features = dataclasses.replace(
            features, metadata=authoritative_metadata(features.metadata, client), tenant_source="key"
        )
    elif "tenant" in features.metadata:
        refuse_odd_tenant(features.metadata["tenant"])
        features = dataclasses.replace(features, tenant_source="asserted")
    exchange.features = features
    exchange.tenant = features.metadata.get("tenant", "")
    return features


def refuse_conflicting_tenant(headers: Mapping[str, str], body: Mapping[str, Any], client: Client) -> None:
    """403 when a request claims a tenant (header or body metadata) other than its API key's: with client
    keys configured the key decides the tenant, and a mismatch means a confused or hostile client."""
    claims = [v for k, v in headers.items() if k.lower() == "x-modelroute-tenant"]
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("tenant"), str):
        claims.append(metadata["tenant"])
    for claim in claims:
        if claim.strip().casefold() != client.tenant.casefold():
            raise ApiError(
                403,
                "tenant_mismatch",
                "the request names a tenant other than its API key's; the key decides the tenant "
                "(drop `x-modelroute-tenant` / `metadata.tenant`, or send the key's own tenant)",
            )


def refuse_odd_tenant(tenant: str) -> None:
    """400 for a claimed tenant that is too long or carries control characters (a header cannot carry
    them, body metadata can)."""
    if len(tenant) > TENANT_MAX_CHARS or _CONTROL.search(tenant):
        raise ApiError(
            400,
            "invalid_request",
            f"the tenant (`x-modelroute-tenant` / `metadata.tenant`) must be at most {TENANT_MAX_CHARS} "
            "characters, without control characters",
            param="metadata.tenant",
        )


def authoritative_metadata(metadata: Mapping[str, str], client: Client) -> dict[str, str]:
    """Metadata with tenant and tier taken from the client's key (body metadata cannot claim others)."""
    merged = {k: v for k, v in metadata.items() if k not in ("tenant", "tier")}
    merged["tenant"] = client.tenant
    if client.tier:
        merged["tier"] = client.tier
    return merged


def limit_tenant(sidecar: Sidecar, policy: PolicyConfig, features: RequestFeatures) -> None:
    """429 with `retry-after` when the tenant's request or token bucket is empty."""
    tokens = features.prompt_tokens + (features.max_output_tokens or 0)
    tenant = features.metadata.get("tenant", "")
    wait = sidecar.tenants.check(policy, tenant, features.metadata.get("tier", ""), tokens)
    if wait > 0:
        retry_after = str(max(1, int(wait + 0.999)))
        raise ApiError(
            429,
            "rate_limit_exceeded",
            f"tenant rate limit of policy {policy.name!r} exceeded; retry in {retry_after}s",
            headers={"retry-after": retry_after},
        )


def decide(sidecar: Sidecar, snapshot: Snapshot, features: RequestFeatures, exchange: Exchange) -> Decision:
    """Ask the engine; its refusal (unknown model, nothing compliant or healthy) becomes the error."""
    decision = snapshot.router.decide(
        features, sidecar.ejections, sessions=sidecar.sessions, bandits=sidecar.bandits
    )
    exchange.decision = decision
    if decision.error is not None:
        raise ApiError(decision.error.status, decision.error.code, decision.error.message)
    if not decision.plan:
        raise ApiError(503, "no_healthy_endpoint", "no endpoint can serve this request")
    return decision


def record_exchange(sidecar: Sidecar, exchange: Exchange, elapsed: float) -> None:
    """Metrics and the audit line of a finished request that took `elapsed` seconds."""
    if exchange.fleet is not None:
        sidecar.fleet.settle(exchange)
    served = exchange.served
    decision = exchange.decision
    if served is not None and decision is not None:  # an answered request can get feedback
        sidecar.served.remember(
            exchange.request_id, decision.policy, decision.rule, served.endpoint, exchange.tenant
        )
    outcome = exchange.outcome or ("cancelled" if exchange.status == 0 else "ok")
    sidecar.metrics.count_request(
        exchange.route,
        served.endpoint if served else "",
        served.replica if served else "",
        served.region if served else "",
        outcome,
        elapsed,
    )
    if decision is not None and decision.affinity is not None:
        note_affinity(sidecar, decision.affinity, served, outcome)
    if decision is not None and decision.bandit is not None:
        note_bandit(sidecar, decision, exchange)
    if decision is not None and decision.error is not None and decision.error.code in RESIDENCY_CODES:
        sidecar.metrics.residency_blocks.labels(exchange.route, decision.data_class).inc()
    mirror = exchange.mirror
    if isinstance(mirror, Mirror) and sidecar.shadows is not None:
        sidecar.shadows.start(mirror, exchange, elapsed)
    if sidecar.audit.enabled:
        sidecar.audit.write(audit_record(exchange, elapsed, sidecar.audit.include_prompts))


def note_affinity(sidecar: Sidecar, affinity: Affinity, served: Choice | None, outcome: str) -> None:
    """Count what affinity did, and pin the session to the replica that answered this turn (a failed
    turn leaves the pin as it was: the next turn's filters judge that replica again)."""
    pin = (served.endpoint, served.replica) if served is not None else None
    sidecar.metrics.affinity.labels(*affinity.settled(pin)).inc()
    if served is not None and outcome == "ok":
        sidecar.sessions.remember(affinity.session, served.endpoint, served.replica)


TARGET_ROLES = frozenset({"primary", "retry"})
"""Attempt roles on a rule's own targets (fallback and escalation endpoints are not its bandit's arms)."""


def note_bandit(sidecar: Sidecar, decision: Decision, exchange: Exchange) -> None:
    """Feed a bandit rule's posteriors from a finished request: its first pick is a pull, and each failed
    attempt on one of the rule's targets is reward 0 (quality comes later, by `POST /v1/feedback`)."""
    bandits, policy, rule = sidecar.bandits, decision.policy, decision.rule
    if decision.bandit is not None:
        bandits.pulled(policy, rule, decision.bandit.endpoint)
    for attempt in exchange.attempts:
        if attempt.outcome not in NOT_FAILURES and attempt.role in TARGET_ROLES:
            bandits.failed(policy, rule, attempt.endpoint)


def bandit_record(decision: Decision) -> dict[str, Any] | None:
    """The audit line's `bandit`: the strategy's arm, how it was chosen and its sample; None for weighted."""
    pick = decision.bandit
    if pick is None:
        return None
    return {"strategy": "bandit", "arm": pick.endpoint, "mode": pick.mode, "sampled": pick.sampled}


def affinity_record(decision: Decision, served: Choice | None) -> dict[str, str] | None:
    """The audit log's `affinity`: outcome, reason and the replica pinned before; None without affinity."""
    affinity = decision.affinity
    if affinity is None:
        return None
    outcome, reason = affinity.settled((served.endpoint, served.replica) if served is not None else None)
    return {"outcome": outcome, "reason": reason, "pinned": "/".join(affinity.pinned).strip("/")}


def audit_record(exchange: Exchange, elapsed: float, include_prompts: bool) -> dict[str, Any]:
    """The audit log line of a request: the decision and its outcome, no prompt unless enabled."""
    decision = exchange.decision or Decision()
    features = exchange.features
    served = exchange.served
    record: dict[str, Any] = {
        "requestId": exchange.request_id,
        "route": exchange.route,
        "model": exchange.model,
        "tenant": exchange.tenant,
        "configVersion": exchange.config_version,
        "policy": decision.policy,
        "rule": decision.rule,
        "dataClass": decision.data_class,
        "dataClassSource": decision.data_class_source,
        "dataClasses": list(decision.data_classes),
        "dataClassSignals": [{"source": src, "dataClass": cls} for src, cls in decision.signals],
        "tenantSource": features.tenant_source if features else "",
        "notes": list(decision.notes),
        "complexity": decision.complexity,
        "complexityScorer": decision.complexity_scorer,
        "semanticRoute": decision.semantic_route,
        "semanticSimilarity": decision.semantic_similarity,  # rounded by the engine
        "promptTokens": features.prompt_tokens if features else 0,
        "stream": features.stream if features else False,
        "canary": decision.canary,
        "canarySide": decision.canary_side,
        "affinity": affinity_record(decision, served),
        "shadow": exchange.mirror.record() if isinstance(exchange.mirror, Mirror) else None,
        "endpoint": served.endpoint if served else "",
        "replica": served.replica if served else "",
        "region": served.region if served else "",
        "provider": exchange.provider or ("openai" if served else ""),
        # dicts, not the dataclasses themselves: orjson encodes a slots dataclass ~4x slower than a dict
        "attempts": [
            {
                "endpoint": a.endpoint,
                "replica": a.replica,
                "region": a.region,
                "role": a.role,
                "outcome": a.outcome,
                "status": a.status,
                "ms": a.ms,
            }
            for a in exchange.attempts
        ],
        "escalated": exchange.escalated,
        "schemaCheck": exchange.schema_check,
        "dropped": [
            {
                "endpoint": d.endpoint,
                "replica": d.replica,
                "region": d.region,
                "reason": d.reason,  # a StrEnum: the encoder writes its value
                "detail": d.detail,
            }
            for d in decision.dropped
        ],
        "status": exchange.status,
        "outcome": exchange.outcome or "ok",
        "error": exchange.error,
        "latencyMs": round(elapsed * 1000, 3),
        "tokensIn": exchange.tokens_in,
        "tokensOut": exchange.tokens_out,
    }
    if decision.bandit is not None:  # only a bandit rule's line carries it: a weighted line stays as it was
        record["bandit"] = bandit_record(decision)
    if include_prompts and features is not None:
        record["prompt"] = features.prompt_text
    return record


def model_object(name: str, policy: PolicyConfig) -> dict[str, Any]:
    """A virtual model in OpenAI's `model` format; `owned_by` names the policy that routes it."""
    return {"id": name, "object": "model", "created": 0, "owned_by": f"modelroute/{policy.name}"}


async def list_models(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """GET /v1/models: the virtual models the applied config serves, in OpenAI's list format."""
    snapshot = sidecar.config.current
    models = sorted(snapshot.policies.items()) if snapshot is not None else []
    return json_response({"object": "list", "data": [model_object(name, policy) for name, policy in models]})


MODEL_PREFIX = "/v1/models/"


async def retrieve_model(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """GET /v1/models/{id}: one virtual model (the SDKs percent-encode an id's `/`), or a 404 naming the
    models there are."""
    name = urllib.parse.unquote(request.path[len(MODEL_PREFIX) :])
    snapshot = sidecar.config.current
    if snapshot is None:
        raise ApiError(503, "not_ready", "the router has no configuration loaded yet")
    policy = snapshot.policies.get(name)
    if policy is None:
        raise ApiError(404, "model_not_found", unknown_model_message(name, snapshot), param="model")
    return json_response(model_object(name, policy))


async def healthz(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """GET /healthz: the process serves."""
    return json_response({"status": "ok"})


async def readyz(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """GET /readyz: ready once a config is loaded (before that every request would fail)."""
    version = sidecar.config.version
    if not version:
        return json_response({"status": "no config loaded"}, status=503)
    return json_response({"status": "ready", "configVersion": version})


async def metrics(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """GET /metrics: Prometheus text exposition."""
    return HttpResponse(200, await sidecar.render_metrics(), content_type=CONTENT_TYPE)


async def feedback(
    sidecar: Sidecar, request: HttpRequest, stream: ResponseStream, request_id: str
) -> HttpResponse:
    """POST /v1/feedback: a quality score (0-1) for a request this sidecar served (any of its workers),
    authenticated like the requests; it counts for the rule and endpoint that answered (`/stats`,
    metrics, canaries), once."""
    try:
        taken = await _take_feedback(sidecar, request)
    except ApiError as error:
        reason = {401: "unauthenticated", 404: "unknown_request"}.get(error.status, "invalid")
        sidecar.metrics.feedback_refused.inc((reason,))
        return error_response(error, request_id)
    served, score = taken
    sidecar.stats.feedback.add(served.policy, served.rule, served.endpoint, score)
    sidecar.bandits.reward(served.policy, served.rule, served.endpoint, score)
    sidecar.metrics.feedback_score.observe((served.policy, served.rule, served.endpoint), score)
    return json_response(
        {
            "object": "feedback",
            "policy": served.policy,
            "rule": served.rule,
            "endpoint": served.endpoint,
            "score": score,
        }
    )


async def _take_feedback(sidecar: Sidecar, request: HttpRequest) -> tuple[Served, float]:
    client = authenticate(sidecar, request)
    if len(request.body) > MAX_FEEDBACK_BYTES:
        raise ApiError(
            400,
            "invalid_request",
            f"the feedback body is {len(request.body)} bytes; at most {MAX_FEEDBACK_BYTES}",
        )
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the feedback body is not valid JSON: {exc}") from None
    try:
        given = parse_feedback(body)
    except FeedbackError as exc:
        raise ApiError(400, "invalid_request", str(exc), param=exc.field) from None
    # another tenant's request reads as unknown: feedback must not reveal which ids exist
    tenant = client.tenant if client is not None else None
    served = sidecar.served.claim(given.request_id, tenant)
    if served is None and sidecar.sibling_claim is not None:
        # a new connection may land on another worker than the one that answered: ask the siblings,
        # the one that remembers the id forgets it, and the score is tallied here (counted once)
        served = await sidecar.sibling_claim(given.request_id, tenant)
    if served is None:
        raise ApiError(
            404,
            "request_not_found",
            f"no answered request {given.request_id!r} is remembered here (unknown, already scored, or "
            "older than the feedback window)",
            param="request_id",
        )
    return served, given.score


def json_response(data: Any, status: int = 200) -> HttpResponse:
    """A JSON body."""
    return HttpResponse(status, json.dumps(data).encode())


ROUTES: dict[str, dict[str, View]] = {
    "/v1/chat/completions": {"POST": api_view("chat")},
    "/v1/completions": {"POST": api_view("completions")},
    "/v1/embeddings": {"POST": api_view("embeddings")},
    "/v1/responses": {"POST": api_view("responses")},
    "/v1/models": {"GET": list_models},
    "/v1/feedback": {"POST": feedback},
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": metrics},
}
"""Path -> method -> view: the whole data port but the paths under `PREFIX_ROUTES`."""

PREFIX_ROUTES: dict[str, dict[str, View]] = {MODEL_PREFIX: {"GET": retrieve_model}}
"""Path prefix -> method -> view, for paths that carry an id (tried when no exact path matches)."""
