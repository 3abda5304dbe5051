"""The RouterConfig: the one contract between the operator (which compiles it) and the sidecar (obeying it).

Everything the data plane needs to decide and proxy a request is in here, already resolved: no references
to chase, no Kubernetes types. The document is versioned by schema (`schemaVersion`) and identified by a
content hash (`version`) so the operator can tell which sidecar runs what. This module imports nothing
from kopf, kubernetes or aiohttp: both sides depend on it, it depends on neither.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

SCHEMA_VERSION: Final = 1
"""Bumped on any change a sidecar of the previous schema could misread."""


class ContractModel(BaseModel):
    """Base of every contract model: camelCase on the wire, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


class Health(StrEnum):
    """What the operator's active health checks last concluded about a replica."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


class CredentialRef(ContractModel):
    """Where the sidecar finds an upstream API key: a key of a Secret mounted into the sidecar."""

    secret: str
    """Name of the Secret (mounted under the sidecar's secrets directory)."""
    key: str
    """Key inside the Secret; the file `<secretsDir>/<secret>/<key>` holds the credential."""


class Capabilities(ContractModel):
    """What a model can do; used to drop endpoints that cannot serve a request."""

    context_window: int = 8192
    """Maximum prompt plus completion tokens."""
    max_output_tokens: int = 4096
    """Largest completion the model returns."""
    streaming: bool = True
    """Whether the endpoint can stream (SSE)."""
    tools: bool = False
    """Whether the endpoint accepts tool/function definitions."""
    json_mode: bool = False
    """Whether the endpoint honours `response_format: json_object`."""


class Pricing(ContractModel):
    """Price of the endpoint in US dollars per million tokens, for cost budgets and cost metrics."""

    input_per_million: float = 0.0
    """USD per 1M prompt tokens."""
    output_per_million: float = 0.0
    """USD per 1M completion tokens."""


class ReplicaConfig(ContractModel):
    """One regional deployment of an endpoint's model."""

    name: str
    """Replica name, unique within its endpoint."""
    region: str
    """Region the replica runs in; residency and locality are decided on it."""
    zone: str = ""
    """Optional zone within the region."""
    url: str
    """Base URL of the OpenAI-compatible API, e.g. `https://eu.example.com/v1`."""
    weight: int = 100
    """Relative share among replicas of equal locality preference."""
    compliance: tuple[str, ...] = ()
    """Compliance labels that hold where this replica runs (e.g. `gdpr`, `hipaa`), sorted."""
    health: Health = Health.UNKNOWN
    """Last active health verdict; `Unhealthy` replicas are never chosen."""


class EndpointConfig(ContractModel):
    """A logical model (one ModelEndpoint) with its replicas, fully resolved."""

    name: str
    """ModelEndpoint name; what rules and canaries refer to."""
    model: str
    """Model id sent upstream in the request body's `model` field."""
    provider: Literal["openai"] = "openai"
    """API style of the upstream."""
    tier: str = ""
    """Free-form tier label (e.g. `fast`, `expert`), reported in headers and metrics."""
    capabilities: Capabilities = Capabilities()
    """What the model can do."""
    pricing: Pricing = Pricing()
    """Token prices for budgets and cost metrics."""
    credentials: CredentialRef | None = None
    """Secret key holding the upstream API key; none for unauthenticated upstreams."""
    connect_timeout_seconds: float = 2.0
    """TCP/TLS connect timeout to a replica."""
    request_timeout_seconds: float = 60.0
    """Upper bound for one upstream attempt (a policy's per-try timeout may be shorter)."""
    max_requests_per_minute: int | None = None
    """Endpoint-wide request rate limit enforced per sidecar; none for unlimited."""
    replicas: tuple[ReplicaConfig, ...]
    """Replicas sorted by name."""


class HeaderMatch(ContractModel):
    """Matches when the request header `name` has one of `values` (case-insensitive name)."""

    name: str
    """Header name, lower-cased."""
    values: tuple[str, ...]
    """Accepted values; the match is exact."""


class RangeMatch(ContractModel):
    """An inclusive numeric range; a bound left out is open."""

    min: int | None = None
    """Smallest accepted value."""
    max: int | None = None
    """Largest accepted value."""


class RuleMatch(ContractModel):
    """Conditions of a rule; all given conditions must hold, an empty match holds for every request."""

    models: tuple[str, ...] = ()
    """Virtual model names this rule applies to; empty for all the policy serves."""
    headers: tuple[HeaderMatch, ...] = ()
    """Header conditions."""
    metadata: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Request metadata key (tenant, tier, task, domain, language, ...) to accepted values."""
    prompt_tokens: RangeMatch | None = None
    """Estimated prompt token range."""
    complexity: RangeMatch | None = None
    """Heuristic complexity score range (0-100)."""
    data_classes: tuple[str, ...] = ()
    """Data classes this rule applies to; `public` names requests with no restricted data."""


class Target(ContractModel):
    """A weighted endpoint a rule sends traffic to."""

    endpoint: str
    """EndpointConfig name."""
    weight: int
    """Relative share among the rule's targets."""


class CanarySplit(ContractModel):
    """A running canary on a rule: traffic is split between stable and candidate by a sticky hash."""

    name: str
    """Canary object name, reported in headers and metrics."""
    stable: str
    """Stable endpoint name."""
    candidate: str
    """Candidate endpoint name."""
    candidate_weight: float
    """Percentage (0-100) of requests sent to the candidate."""
    stickiness_header: str = ""
    """Header whose value keeps one user on one side; empty hashes the request id (no stickiness)."""
    stickiness_metadata: str = ""
    """Metadata key used instead of a header when set."""


class RuleConfig(ContractModel):
    """One ordered routing rule, resolved."""

    name: str
    """Rule name, unique in its policy; reported in the `x-modelroute-rule` header."""
    match: RuleMatch = RuleMatch()
    """When the rule applies."""
    targets: tuple[Target, ...]
    """Weighted endpoints, sorted by endpoint name."""
    fallback: tuple[str, ...] = ()
    """Endpoints tried in order once every target is unavailable or has failed."""
    escalation: tuple[str, ...] = ()
    """Endpoints tried in order when an answer fails quality checks (cascade), after the targets."""
    canary: CanarySplit | None = None
    """Canary running on this rule, if any."""


class DataClassRule(ContractModel):
    """Where data of one class may be processed. Both conditions must hold for a replica."""

    name: str
    """Data class name (e.g. `eu-personal`)."""
    allowed_regions: tuple[str, ...] = ()
    """Regions allowed; empty allows any region."""
    required_compliance: tuple[str, ...] = ()
    """Compliance labels a replica must all carry."""


class Detector(ContractModel):
    """A content detector that assigns a data class when it finds a pattern in the prompt."""

    kind: Literal["email", "phone", "card", "iban"]
    """What to look for."""
    data_class: str
    """Data class assigned when found."""


class Residency(ContractModel):
    """How a request's data class is known and what each class allows."""

    data_classes: tuple[DataClassRule, ...] = ()
    """Restricted data classes, sorted by name."""
    header: str = "x-modelroute-data-class"
    """Header a client uses to declare the data class."""
    tenant_defaults: dict[str, str] = Field(default_factory=dict)
    """Tenant to the data class its requests carry by default."""
    detectors: tuple[Detector, ...] = ()
    """Content detectors, applied to every request."""
    default_class: str = ""
    """Data class for requests nothing else classifies; empty means unrestricted."""


class Locality(ContractModel):
    """Region preference: the caller's own region first, then this order, then anything else allowed."""

    prefer_local: bool = True
    """Prefer replicas in the sidecar's own region."""
    failover_order: tuple[str, ...] = ()
    """Regions in order of preference after the local one."""


class Resilience(ContractModel):
    """Retry budget and timeouts of a policy."""

    max_attempts: int = 3
    """Upstream attempts per request, first try included."""
    retry_budget_percent: float = 20.0
    """Retries allowed as a percentage of recent requests, so a failing upstream is not stormed."""
    per_try_timeout_seconds: float = 30.0
    """Time allowed for one attempt until response headers arrive."""
    deadline_seconds: float = 120.0
    """Time allowed for the whole request, all attempts included."""
    eject_after_failures: int = 3
    """Consecutive failures that eject a replica from this sidecar's rotation."""
    base_ejection_seconds: float = 5.0
    """First ejection time; doubled on each repeated ejection up to `maxEjectionSeconds`."""
    max_ejection_seconds: float = 120.0
    """Longest ejection."""
    escalate_on: tuple[str, ...] = ("error", "timeout")
    """Answer failures that send the request on to the rule's escalation: `error`, `timeout`, `length`
    (finish_reason length), `invalidJson` (JSON requested, not returned)."""


class Budgets(ContractModel):
    """Limits that drop endpoints which would be too expensive or too slow."""

    max_cost_per_request_usd: float | None = None
    """Estimated cost ceiling for one request (prompt estimate plus max output)."""
    max_latency_ms: int | None = None
    """Endpoints whose observed p95 latency exceeds this are avoided while others remain."""


class TenantLimit(ContractModel):
    """A token-bucket limit applied per tenant."""

    tenant_tier: str = ""
    """Tenant tier this limit applies to; empty is the default for every tenant."""
    requests_per_minute: int | None = None
    """Request rate per tenant."""
    tokens_per_minute: int | None = None
    """Estimated token rate per tenant."""


class PolicyConfig(ContractModel):
    """One RoutingPolicy, resolved."""

    name: str
    """RoutingPolicy name."""
    virtual_models: tuple[str, ...]
    """Model names clients use, sorted."""
    rules: tuple[RuleConfig, ...]
    """Rules in evaluation order (the policy's order, which is meaningful)."""
    residency: Residency = Residency()
    """Data residency."""
    locality: Locality = Locality()
    """Region preference."""
    resilience: Resilience = Resilience()
    """Retries, timeouts and ejection."""
    budgets: Budgets = Budgets()
    """Cost and latency budgets."""
    tenant_limits: tuple[TenantLimit, ...] = ()
    """Per-tenant rate limits."""


class RouterConfig(ContractModel):
    """A namespace's complete routing configuration, as the sidecars run it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    """Contract schema version; a sidecar refuses a schema it does not know."""
    namespace: str
    """Namespace the configuration was compiled for."""
    version: str = ""
    """Content hash (`sha256:` + 16 hex) of everything else; set by `seal`, checked by `verify`."""
    endpoints: tuple[EndpointConfig, ...] = ()
    """Endpoints sorted by name."""
    policies: tuple[PolicyConfig, ...] = ()
    """Policies sorted by name."""

    @model_validator(mode="after")
    def _virtual_models_unique(self) -> RouterConfig:
        seen: dict[str, str] = {}
        for policy in self.policies:
            for model in policy.virtual_models:
                if model in seen:
                    raise ValueError(
                        f"virtual model {model!r} is served by both {seen[model]!r} and {policy.name!r}"
                    )
                seen[model] = policy.name
        return self

    def content_hash(self) -> str:
        """Hash of the canonical JSON of everything but `version`: equal content, equal hash."""
        body = self.model_dump(mode="json", by_alias=True, exclude={"version"})
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def seal(self) -> RouterConfig:
        """Return a copy whose `version` is its content hash."""
        return self.model_copy(update={"version": self.content_hash()})

    def verify(self) -> None:
        """Raise ValueError when `version` does not match the content (tampered or truncated push)."""
        expected = self.content_hash()
        if self.version != expected:
            raise ValueError(f"version {self.version!r} does not match content hash {expected!r}")

    def to_json(self) -> str:
        """Canonical JSON, as stored in the ConfigMap and pushed to sidecars."""
        body = self.model_dump(mode="json", by_alias=True)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RouterConfig:
        """Parse and verify a document produced by `to_json`."""
        config = cls.model_validate_json(text)
        config.verify()
        return config


def short_version(version: str) -> str:
    """The hash part a person reads in columns and headers (`sha256:ab12...` -> `ab12...`)."""
    return version.removeprefix("sha256:")
