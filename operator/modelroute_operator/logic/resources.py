"""API models of the three custom resources (group modelroute.dev, version v1alpha1): spec and status.

These models are the single source of truth for the resource shapes: the CRD YAML in `crds/` is generated
from them (`modelroute crds`), the compiler reads objects through them, and status is written from them.
Field docstrings become the OpenAPI descriptions that `kubectl explain` shows; constraints become schema
enums, ranges and patterns; `CEL` rules on a model become `x-kubernetes-validations` on its schema.

Defaults live here, not in the CRD schema: the API server stores exactly what the user applied, so GitOps
tools never see defaulted fields as drift.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

import modelroute_contract as contract

GROUP = "modelroute.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 63
"""Longest name a reference (`Name`), a label value or a header token carries."""
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]*$"
LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=DNS_LABEL)]
Region = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Label = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]
Duration = Annotated[str, Field(max_length=32, pattern=DURATION)]
HeaderName = Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_NAME)]
Percent = Annotated[float, Field(ge=0, le=100)]
Weight = Annotated[int, Field(ge=0, le=1000)]

# CEL list literal of the headers no rule may match on (one definition: contract.HOP_BY_HOP_HEADERS).
_HOP_BY_HOP_CEL = "[" + ", ".join(f"'{h}'" for h in sorted(contract.HOP_BY_HOP_HEADERS)) + "]"
_HOP_BY_HOP_MESSAGE = (
    "must not be a hop-by-hop or framing header (" + ", ".join(sorted(contract.HOP_BY_HOP_HEADERS)) + ")"
)


def _refuse_hop_by_hop(name: str | None) -> str | None:
    problem = contract.hop_by_hop_problem(name) if name else None
    if problem:
        raise ValueError(problem)
    return name


class CEL:
    """A CEL validation rule attached to a model's schema (`x-kubernetes-validations`)."""

    def __init__(self, rule: str, message: str, field_path: str = "", reason: str = "FieldValueInvalid"):
        self.rule, self.message, self.field_path, self.reason = rule, message, field_path, reason

    def to_schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry."""
        entry = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


class ApiModel(BaseModel):
    """Base of every API model: camelCase fields, unknown fields refused, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )
    cel_rules: ClassVar[tuple[CEL, ...]] = ()
    """CEL rules the generated schema carries for this model."""


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """Seconds in a Go-style duration such as `1m30s` or `250ms` (already validated by the schema)."""
    total, pos = 0.0, 0
    for part in _DURATION_PART.finditer(duration):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        pos = part.end()
    if pos != len(duration) or not duration:
        raise ValueError(f"{duration!r} is not a duration such as 500ms, 10s, 1m30s")
    return total


# --------------------------------------------------------------------------------------------- common


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition: one aspect of the object's state."""

    type: Annotated[str, Field(max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    """Aspect this condition describes, e.g. `Ready`."""
    status: ConditionStatus
    """`True`, `False` or `Unknown`."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """`metadata.generation` the condition was computed from."""
    last_transition_time: datetime
    """When `status` last changed."""
    reason: Annotated[str, Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    """CamelCase machine-readable reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable details, naming the field at fault when there is one."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: Name
    """Secret name."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
    """Key within the Secret."""


# ------------------------------------------------------------------------------------- ModelEndpoint


class TlsSecretRef(ApiModel):
    """A `kubernetes.io/tls` Secret in the same namespace."""

    name: Name
    """Secret name; its `tls.crt` (PEM certificate chain) and `tls.key` (PEM private key) are used."""


class EndpointTls(ApiModel):
    """TLS towards the endpoint's https replicas. The Secrets are mounted into the sidecar and re-read
    when they rotate; the operator's health probes use them too (read where its credentials grant
    lets it read Secrets)."""

    ca_bundle: SecretKeyRef | None = None
    """Secret key holding PEM CA certificates the replicas' certificates must chain to. Replaces the
    system trust store for this endpoint; unset trusts the system CAs."""
    client_certificate: TlsSecretRef | None = None
    """A `kubernetes.io/tls` Secret whose certificate the sidecar presents to the replicas (mutual TLS)."""
    server_name: Annotated[str, Field(max_length=253, pattern=DNS_NAME)] | None = None
    """Name verified in the replicas' certificates and sent as SNI; unset uses each replica URL's host."""


class Capabilities(ApiModel):
    """What the model can do. Requests needing more are not sent to this endpoint."""

    cel_rules = (
        CEL(
            # Unset fields take the model defaults (the API server stores none), so compare with those.
            "(has(self.maxOutputTokens) ? self.maxOutputTokens : 4096)"
            " <= (has(self.contextWindow) ? self.contextWindow : 8192)",
            "maxOutputTokens must not exceed contextWindow",
            ".maxOutputTokens",
        ),
    )
    context_window: Annotated[int, Field(ge=256, le=10_000_000)] = 8192
    """Maximum prompt plus completion tokens (default 8192)."""
    max_output_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    """Largest completion the model returns (default 4096)."""
    streaming: bool = True
    """Whether the endpoint can stream responses (default true)."""
    tools: bool = True
    """Whether the endpoint accepts tool/function definitions (default true, as OpenAI and the common
    OpenAI-compatible servers do). Set false for a model that cannot call tools: requests with `tools`
    then go to other endpoints of the rule, or are refused with 400 when none can take them."""
    json_mode: bool = True
    """Whether the endpoint honours JSON output (`response_format`, or `text.format` in the Responses
    API, of type `json_object`/`json_schema`; default true, as OpenAI-style servers do). Set false for a
    server that ignores it."""
    stream_usage: bool = True
    """Whether the endpoint accepts `stream_options: {include_usage: true}` (default true). The sidecar
    adds it to every streamed request so that streamed tokens and cost are counted, and hides the
    usage event from clients that did not ask for it; set false for an upstream that refuses the
    field (its streamed answers are then counted only when the client asks for usage itself)."""


class Pricing(ApiModel):
    """Token prices in US dollars per one million tokens; used for cost budgets and cost metrics."""

    input_per_million: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    """USD per one million prompt tokens."""
    output_per_million: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    """USD per one million completion tokens."""


class Timeouts(ApiModel):
    """Upstream timeouts of this endpoint."""

    connect: Duration = "2s"
    """TCP/TLS connect timeout, e.g. `2s` (default 2s)."""
    request: Duration = "60s"
    """Upper bound for one upstream attempt, e.g. `60s` (default 60s)."""


class RateLimit(ApiModel):
    """Endpoint-wide rate limit, enforced by each sidecar."""

    requests_per_minute: Annotated[int, Field(ge=1, le=10_000_000)]
    """Requests per minute a single sidecar sends to this endpoint."""


class HealthCheck(ApiModel):
    """Active health check the operator runs against every replica."""

    cel_rules = (
        CEL(
            "duration(has(self.timeout) ? self.timeout : '2s')"
            " < duration(has(self.interval) ? self.interval : '10s')",
            "timeout must be shorter than interval",
            ".timeout",
        ),
    )
    enabled: bool = True
    """Whether to probe at all (default true). Without probes, health stays `Unknown` and routable."""
    path: Annotated[str, Field(max_length=256, pattern=r"^/[^\s]*$")] = "/v1/models"
    """HTTP path probed with GET, relative to the replica URL's host (default `/v1/models`); for `openai`
    endpoints only: a native provider is probed at its own model list with its own credentials, and
    `bedrock` and Vertex AI replicas are not probed."""
    interval: Duration = "10s"
    """Time between probes, e.g. `10s` (default 10s)."""
    timeout: Duration = "2s"
    """Probe timeout, e.g. `2s` (default 2s); must be shorter than interval."""
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    """Consecutive successes that mark an unhealthy replica healthy again (default 2)."""
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that mark a replica unhealthy (default 3)."""


class Replica(ApiModel):
    """One deployment of the model in a region."""

    cel_rules = (
        CEL(
            "!self.url.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')",
            "url must not carry user-info (user:password@): put credentials in a Secret (spec.credentials)",
            ".url",
        ),
    )

    name: Name
    """Replica name, unique within the endpoint (DNS label)."""
    region: Region
    """Region the replica runs in, e.g. `eu-west-1`. Residency and locality decide on it."""
    zone: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    """Optional zone within the region."""
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s/$.?#][^\s]*$")]
    """Base URL of the OpenAI-compatible API, including the version path, e.g. `https://eu.llm.internal/v1`.
    No user-info (credentials go in `credentials`); link-local/metadata hosts and the sidecar's own ports
    on loopback only with `allowPrivateTargets`."""
    weight: Weight = 100
    """Relative share among replicas the router prefers equally (0-1000, default 100; 0 = standby)."""
    compliance: Annotated[list[Label], Field(max_length=16)] = []
    """Compliance labels that hold where this replica runs, e.g. `gdpr`, `hipaa`, `on-prem`."""


class ProviderSettings(ApiModel):
    """Settings of a native provider's API. What each provider takes: `azure-openai` auth `api-key`
    (default) or `entra-token` and apiVersion (required); `anthropic` apiVersion (the `anthropic-version`,
    default 2023-06-01); `bedrock` none; `gemini` auth `api-key` (default, the Gemini API) or
    `service-account` with project (Vertex AI)."""

    auth: Literal["api-key", "entra-token", "service-account"] | None = None
    """How to authenticate: `api-key` (the provider's key header), `entra-token` (azure-openai: a
    Microsoft Entra access token in the Secret, sent as bearer), `service-account` (gemini: a Google
    service-account key JSON in the Secret, which signs its own access tokens for Vertex AI)."""
    api_version: Annotated[str, Field(max_length=32, pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$")] | None = None
    """azure-openai: the `api-version` query parameter, e.g. `2024-10-21` (required); anthropic: the
    `anthropic-version` header (default `2023-06-01`)."""
    project: Annotated[str, Field(max_length=30, pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")] | None = None
    """gemini with auth `service-account`: the Google Cloud project of Vertex AI."""


class ModelEndpointSpec(ApiModel):
    """A logical model and the regional replicas that serve it."""

    cel_rules = (
        CEL(
            "self.replicas.all(r, self.replicas.exists_one(s, s.name == r.name))",
            "replica names must be unique",
            ".replicas",
        ),
        CEL(
            "self.replicas.exists(r, !has(r.weight) || r.weight > 0)",
            "at least one replica must have a weight above 0",
            ".replicas",
        ),
    )
    model: Annotated[str, Field(min_length=1, max_length=256)]
    """Model id sent upstream in the request's `model` field, e.g. `meta-llama/Llama-3.1-70B-Instruct`."""
    provider: Literal["openai", "azure-openai", "anthropic", "bedrock", "gemini"] = "openai"
    """API style of the upstream: `openai` (default) covers every OpenAI-compatible server; `azure-openai`
    (`model` is the deployment name), `anthropic` (Messages API), `bedrock` (Converse API; each
    replica's `region` is the AWS region requests are signed for) and `gemini` (Gemini API, or Vertex AI
    where each replica's `region` is the location) are translated from and to the OpenAI API."""
    provider_settings: ProviderSettings | None = None
    """Settings of a native provider (auth mode, API version, project); not for `openai`."""
    tier: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    """Free-form tier label (e.g. `fast`, `balanced`, `expert`), shown in headers and metrics."""
    capabilities: Capabilities = Capabilities()
    """Context window, output limit and features."""
    pricing: Pricing = Pricing()
    """Token prices."""
    credentials: SecretKeyRef | None = None
    """Secret key holding the upstream credential (required for native providers); never put keys
    inline. openai: the API key, sent as a bearer token; azure-openai: the `api-key` or the Entra token;
    anthropic: the `x-api-key`; bedrock: the AWS access key as JSON (`accessKeyId`, `secretAccessKey`,
    optional `sessionToken`) or an AWS credentials file; gemini: the API key or a service-account key
    JSON. Re-read when the Secret rotates."""
    tls: EndpointTls | None = None
    """TLS settings for https replicas: a private CA bundle, a client certificate, the name to verify."""
    timeouts: Timeouts = Timeouts()
    """Connect and request timeouts."""
    rate_limit: RateLimit | None = None
    """Optional endpoint-wide rate limit."""
    health_check: HealthCheck = HealthCheck()
    """Active health check settings."""
    replicas: Annotated[list[Replica], Field(min_length=1, max_length=64)]
    """Where the model runs: one entry per regional deployment."""
    allow_private_targets: bool = False
    """Allow replica URLs at link-local or cloud-metadata addresses (169.254.0.0/16, fe80::/10,
    fd00:ec2::254, in any spelling) and at the sidecar's own ports on loopback (default false). Checked by
    the admission webhook, the operator and the sidecar on the URL as written; host names are not
    resolved at admission."""


class ReplicaHealth(StrEnum):
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


class ReplicaStatus(ApiModel):
    """Health of one replica as the operator's probes see it (enough to resume after a restart)."""

    name: Name
    """Replica name."""
    region: Region
    """Replica region."""
    health: ReplicaHealth = ReplicaHealth.UNKNOWN
    """`Healthy`, `Unhealthy` or `Unknown` (not probed yet, or probing disabled)."""
    since: datetime | None = None
    """When `health` last changed."""
    consecutive_successes: Annotated[int, Field(ge=0)] = 0
    """Current streak of successful probes."""
    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    """Current streak of failed probes."""
    last_probe_time: datetime | None = None
    """When the last probe finished."""
    last_error: Annotated[str, Field(max_length=1024)] | None = None
    """Error of the last failed probe."""


class ModelEndpointStatus(ApiModel):
    """Observed state of a ModelEndpoint."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """`metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """`Accepted` (the spec is valid), `Ready` (live, and not every replica failed its probes) and
    `Healthy` (every replica probed healthy)."""
    replicas: Annotated[list[ReplicaStatus], Field(max_length=64)] = []
    """Per-replica health."""
    ready_replicas: Annotated[int, Field(ge=0)] | None = None
    """Replicas a probe found healthy (a replica never probed does not count)."""
    ready_summary: Annotated[str, Field(max_length=64)] | None = None
    """`ready/total`, for the READY column (` (probes off)` added when health checks are off)."""
    regions: Annotated[str, Field(max_length=1024)] | None = None
    """Replicas probed healthy by region, e.g. `eu-west-1=2/2,us-east-1=1/1`."""


# ------------------------------------------------------------------------------------- RoutingPolicy


class HeaderMatch(ApiModel):
    """A request header condition."""

    cel_rules = (
        CEL(f"!(self.name.lowerAscii() in {_HOP_BY_HOP_CEL})", f"name {_HOP_BY_HOP_MESSAGE}", ".name"),
    )
    name: HeaderName
    """Header name (matched case-insensitively); not a hop-by-hop or framing header (connection,
    keep-alive, proxy-connection, te, trailer, transfer-encoding, upgrade, host, content-length)."""
    values: Annotated[list[Annotated[str, Field(max_length=256)]], Field(min_length=1, max_length=32)]
    """Accepted values; exact match."""

    _name_allowed = field_validator("name")(_refuse_hop_by_hop)


class IntRange(ApiModel):
    """An inclusive integer range; a bound left out is open."""

    cel_rules = (
        CEL("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not exceed max", ".min"),
    )
    min: Annotated[int, Field(ge=0)] | None = None
    """Smallest accepted value."""
    max: Annotated[int, Field(ge=0)] | None = None
    """Largest accepted value."""


class ComplexityRange(IntRange):
    """An inclusive complexity score range within 0-100; a bound left out is open."""

    min: Annotated[int, Field(ge=contract.COMPLEXITY_MIN, le=contract.COMPLEXITY_MAX)] | None = None
    """Smallest accepted score (0-100)."""
    max: Annotated[int, Field(ge=contract.COMPLEXITY_MIN, le=contract.COMPLEXITY_MAX)] | None = None
    """Largest accepted score (0-100)."""
    scorer: Name | None = None
    """Which score: `heuristic` (the default: length, code, math and multi-step cues) or the name of one
    of the policy's `difficultyModels` (100 x the probability that the weak tier fails a prompt the
    strong tier answers, net of the reverse)."""


class SemanticMatch(ApiModel):
    """Matches when the named route is the request's most similar semantic route."""

    route: Name
    """One of the policy's `semanticRoutes`."""
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    """Least cosine similarity between the prompt and the route's centroid, the mean of its examples
    (default 0)."""


class SemanticRouteSpec(ApiModel):
    """A route by meaning: prompts most like its examples take it (the best route wins)."""

    name: Name
    """Route name, used by rules' `match.semantic.route`."""
    examples: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=2048)]],
        Field(min_length=1, max_length=contract.SEMANTIC_EXAMPLES_MAX),
    ]
    """Example utterances, embedded when a sidecar loads the config (never per request)."""


class ConfigMapKey(ApiModel):
    """A key of a ConfigMap in the policy's namespace."""

    name: Name
    """The ConfigMap."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "head.json"
    """The key holding the head document (`modelroute router train` writes it as head.json)."""


class DifficultyModelSpec(ApiModel):
    """A learned difficulty model the rules may score complexity with: the builtin one, or a head a user
    trained (`modelroute router train`) kept in a ConfigMap and pinned by version and sha256."""

    cel_rules = (
        CEL(
            "has(self.builtin) && self.builtin ? !has(self.configMap)"
            " : (has(self.configMap) && has(self.sha256))",
            "give either builtin: true, or configMap and sha256",
            "",
        ),
    )
    name: Name
    """Name rules give in `match.complexity.scorer`."""
    builtin: bool | None = None
    """The model shipped with the sidecar (trained on MMLU and GSM8K prompts)."""
    version: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """The head's version; required to match. For builtin, the operator's builtin version when left out."""
    config_map: ConfigMapKey | None = None
    """Where the head document is; the operator reads it and carries it in the RouterConfig."""
    sha256: Annotated[str, Field(max_length=64, pattern=r"^[0-9a-f]{64}$")] | None = None
    """sha256 of the head document (`modelroute router train` prints it); a head that differs is refused."""

    @model_validator(mode="after")
    def _builtin_or_config_map(self) -> DifficultyModelSpec:
        # The CEL rule above, for manifests checked offline (`modelroute validate`).
        if self.builtin:
            if self.config_map is not None:
                raise ValueError("give either builtin: true, or configMap and sha256")
        elif self.config_map is None or self.sha256 is None:
            raise ValueError("give either builtin: true, or configMap and sha256")
        return self


class RuleMatch(ApiModel):
    """Conditions of a rule. All given conditions must hold; an empty match holds for every request."""

    cel_rules = (
        CEL(
            f"!has(self.metadata) || self.metadata.all(k, k.matches('{contract.METADATA_KEY_PATTERN}'))",
            "metadata keys must be header tokens such as `tenant` (lower-case, at most 63 characters): "
            "they are read from `x-modelroute-<key>` headers",
            ".metadata",
        ),
    )

    models: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=32)] = []
    """Virtual models (of this policy) the rule applies to; empty for all."""
    headers: Annotated[list[HeaderMatch], Field(max_length=16)] = []
    """Header conditions."""
    metadata: Annotated[
        dict[str, Annotated[list[Annotated[str, Field(max_length=128)]], Field(min_length=1, max_length=64)]],
        Field(max_length=16),
    ] = {}
    """Request metadata conditions: key (`tenant`, `tier`, `task`, `domain`, `language`, ...) to accepted
    values. Metadata comes from `x-modelroute-<key>` headers or the request body's `metadata` object."""
    prompt_tokens: IntRange | None = None
    """Estimated prompt tokens range."""
    complexity: ComplexityRange | None = None
    """Complexity score range, 0 (trivial) to 100 (hard): the heuristic's, or a learned model's (`scorer`)."""
    semantic: SemanticMatch | None = None
    """Match by meaning: the request's best semantic route."""
    data_classes: Annotated[list[Name], Field(max_length=16)] = []
    """Data classes the rule applies to (`public` for requests with no restricted data)."""

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in value:
            if not re.match(contract.METADATA_KEY_PATTERN, key):
                raise ValueError(f"key {key!r} is not a header token such as `tenant` (lower-case, max 63)")
        return value


class Target(ApiModel):
    """A weighted ModelEndpoint a rule routes to."""

    endpoint: Name
    """ModelEndpoint name in this namespace."""
    weight: Weight = 100
    """Relative share among the rule's targets (0-1000, default 100)."""


class SessionAffinitySpec(ApiModel):
    """Keep one conversation on one replica so the provider's prompt cache stays warm. The pin yields to
    residency, health, passive ejection and canaries; the `x-modelroute-affinity` header says whether it
    was kept or broken and why."""

    cel_rules = (
        CEL("has(self.header) != has(self.metadata)", "set exactly one of header or metadata"),
        CEL(
            f"!has(self.header) || !(self.header.lowerAscii() in {_HOP_BY_HOP_CEL})",
            f"header {_HOP_BY_HOP_MESSAGE}",
            ".header",
        ),
    )
    header: HeaderName | None = None
    """Request header naming the conversation, e.g. `x-session-id`."""

    _header_allowed = field_validator("header")(_refuse_hop_by_hop)
    metadata: Annotated[str, Field(max_length=63, pattern=r"^[a-z][a-z0-9_-]*$")] | None = None
    """Metadata key naming the conversation (`x-modelroute-<key>` header or body `metadata`)."""
    ttl_seconds: Annotated[int, Field(ge=1, le=contract.AFFINITY_TTL_MAX_SECONDS)] = 600
    """How long a conversation stays pinned after its last answered turn (default 600)."""
    max_sessions: Annotated[int, Field(ge=1, le=contract.AFFINITY_MAX_SESSIONS)] = 10000
    """Conversations each sidecar worker remembers for this rule (default 10000; oldest forgotten first)."""

    @model_validator(mode="after")
    def _one_key(self) -> SessionAffinitySpec:
        # The CEL rule above, for manifests checked offline (`modelroute validate`).
        if (self.header is None) == (self.metadata is None):
            raise ValueError("set exactly one of header or metadata")
        return self


class ShadowSpec(ApiModel):
    """Mirror a share of the rule's requests to another ModelEndpoint, to compare it with the rule's
    targets on live traffic. The copy is sent in the background after the client's answer: its answer is
    never returned and never delays the client. A copy goes only to a replica the request's data class
    allows (the same residency rules as the targets); copies over `maxConcurrent` are skipped and
    counted. Streamed requests are mirrored as non-streamed ones."""

    endpoint: Name
    """ModelEndpoint receiving the copies (any provider; not one of the rule's targets)."""
    percent: Percent
    """Share of the rule's requests copied (0-100), by a stable hash of the request id."""
    max_concurrent: Annotated[int, Field(ge=1, le=contract.SHADOW_MAX_CONCURRENT)] = (
        contract.SHADOW_DEFAULT_CONCURRENT
    )
    """Copies in flight per sidecar worker for this rule (1-256, default 8); more are skipped."""


class BanditSpec(ApiModel):
    """Settings of `strategy: bandit`: Thompson sampling over the rule's targets, learning from quality
    feedback (`POST /v1/feedback`) and failed attempts. It only chooses among the targets residency,
    health, ejection, budgets and limits kept, and a canary split on the rule is applied first."""

    cost_weight: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    """How much price counts against reward (0-1, default 0): each target scores its sampled reward
    minus costWeight times its price relative to the rule's dearest target."""
    explore: Annotated[float, Field(ge=0.0, le=contract.BANDIT_EXPLORE_MAX)] = 0.05
    """The least share of picks every eligible target keeps, so a target that had bad luck is tried again
    (0-0.5, default 0.05; with n targets at most 1/n)."""


class Rule(ApiModel):
    """One routing rule. Rules are evaluated in order; the first that matches routes the request."""

    cel_rules = (
        CEL(
            "!has(self.fallbackTo) || self.fallbackTo != self.name",
            "a rule cannot fall back to itself",
            ".fallbackTo",
        ),
        CEL(
            "!has(self.escalateTo) || self.escalateTo != self.name",
            "a rule cannot escalate to itself",
            ".escalateTo",
        ),
        CEL(
            "self.targets.exists(t, !has(t.weight) || t.weight > 0)",
            "at least one target must have a weight above 0",
            ".targets",
        ),
        CEL(
            "self.targets.all(t, self.targets.exists_one(u, u.endpoint == t.endpoint))",
            "a target endpoint may appear only once",
            ".targets",
        ),
        CEL(
            "!has(self.bandit) || (has(self.strategy) ? self.strategy : 'weighted') == 'bandit'",
            "bandit settings need strategy: bandit",
            ".bandit",
        ),
        CEL(
            "(has(self.strategy) ? self.strategy : 'weighted') != 'bandit'"
            " || size(self.targets.filter(t, !has(t.weight) || t.weight > 0)) >= 2",
            "strategy bandit needs at least two targets with a weight above 0 to choose between",
            ".strategy",
        ),
    )
    name: Name
    """Rule name, unique in the policy; shown in the `x-modelroute-rule` response header."""
    match: RuleMatch = RuleMatch()
    """When the rule applies; leave empty for a catch-all."""
    targets: Annotated[list[Target], Field(min_length=1, max_length=32)]
    """Endpoints the rule routes to, by weight."""
    fallback_to: Name | None = None
    """Rule whose targets are tried when every target of this rule is unavailable or failed (a chain)."""
    escalate_to: Name | None = None
    """Rule whose targets get the request when an answer fails a quality check (a cascade to a
    stronger tier)."""
    affinity: SessionAffinitySpec | None = None
    """Keep each conversation on the replica that answered its last turn."""
    shadow: ShadowSpec | None = None
    """Copy a share of the rule's requests to another endpoint (shadow traffic), for comparison only."""
    strategy: Literal["weighted", "bandit"] = "weighted"
    """How the first target is picked among those every filter kept: `weighted` (by weight, the default)
    or `bandit` (Thompson sampling over quality feedback; weights are then ignored but 0 still excludes)."""
    bandit: BanditSpec | None = None
    """Settings of `strategy: bandit` (defaults apply when it is left out)."""

    # The CEL rules above, for manifests checked offline (`modelroute validate`, the compiler), at the field.
    @field_validator("strategy")
    @classmethod
    def _enough_targets(cls, strategy: str, info: ValidationInfo) -> str:
        targets = info.data.get("targets")
        if strategy == "bandit" and targets is not None and sum(t.weight > 0 for t in targets) < 2:
            raise ValueError(
                "strategy bandit needs at least two targets with a weight above 0 to choose between"
            )
        return strategy

    @field_validator("bandit")
    @classmethod
    def _bandit_needs_strategy(cls, bandit: BanditSpec | None, info: ValidationInfo) -> BanditSpec | None:
        if bandit is not None and info.data.get("strategy", "weighted") != "bandit":
            raise ValueError("bandit settings need strategy: bandit")
        return bandit


class DataClass(ApiModel):
    """Where data of one class may be processed. A replica must satisfy both conditions."""

    cel_rules = (
        CEL(
            "(has(self.allowedRegions) && size(self.allowedRegions) > 0)"
            " || (has(self.requiredCompliance) && size(self.requiredCompliance) > 0)",
            "a data class must restrict regions or require compliance labels",
        ),
    )
    name: Name
    """Data class name, e.g. `eu-personal`. `public` is reserved for unrestricted data."""
    allowed_regions: Annotated[list[Region], Field(max_length=64)] = []
    """Regions where the data may be processed; empty allows any region."""
    required_compliance: Annotated[list[Label], Field(max_length=16)] = []
    """Compliance labels every chosen replica must carry."""


class Detector(ApiModel):
    """Assigns a data class when the prompt contains a recognisable identifier."""

    cel_rules = (
        CEL(
            "self.kind == 'pattern' ? (has(self.name) && has(self.pattern))"
            " : (!has(self.name) && !has(self.pattern))",
            "name and pattern are required with kind 'pattern' and not allowed with other kinds",
        ),
    )
    kind: Literal["email", "phone", "card", "iban", "pattern"]
    """What to look for: e-mail address, phone number, payment card number (Luhn-checked), IBAN
    (mod-97-checked), or `pattern`: the regular expression in `pattern`."""
    data_class: Name
    """Data class assigned when found."""
    name: Name | None = None
    """Name of a `pattern` detector, unique in the policy; the source is reported as
    `detector:pattern:<name>`. Only with kind `pattern`."""
    pattern: Annotated[str, Field(min_length=1, max_length=contract.PATTERN_MAX_LENGTH)] | None = None
    """Regular expression (RE2 syntax: linear-time matching, so no backreferences or look-around)
    searched for in every string the request carries, after the same normalisation the other detectors
    see (URL escapes decoded, NFKC, dashes made ASCII); `(?i)` makes it case-insensitive. An invalid
    expression is refused at admission. Only with kind `pattern`."""


class Residency(ApiModel):
    """Data residency: how a request's data class is known and where each class may go. A hard rule:
    retries, fallbacks and failover only ever choose among compliant replicas."""

    cel_rules = (
        CEL(
            "!has(self.dataClasses)"
            " || self.dataClasses.all(c, self.dataClasses.exists_one(d, d.name == c.name))",
            "data class names must be unique",
            ".dataClasses",
        ),
        CEL(
            "!has(self.dataClasses) || self.dataClasses.all(c, c.name != 'public')",
            "'public' is reserved for unrestricted data",
            ".dataClasses",
        ),
        CEL(
            f"!has(self.header) || !(self.header.lowerAscii() in {_HOP_BY_HOP_CEL})",
            f"header {_HOP_BY_HOP_MESSAGE}",
            ".header",
        ),
        CEL(
            "!has(self.detectors)"
            f" || self.detectors.filter(d, d.kind == 'pattern').size() <= {contract.PATTERN_DETECTORS_MAX}",
            f"at most {contract.PATTERN_DETECTORS_MAX} detectors of kind 'pattern'",
            ".detectors",
        ),
        CEL(
            "!has(self.detectors) || self.detectors.all(d, !has(d.name)"
            " || self.detectors.exists_one(e, has(e.name) && e.name == d.name))",
            "pattern detector names must be unique",
            ".detectors",
        ),
    )
    data_classes: Annotated[list[DataClass], Field(max_length=32)] = []
    """Restricted data classes."""
    header: HeaderName = "x-modelroute-data-class"
    """Header a client declares the data class with (default `x-modelroute-data-class`)."""

    _header_allowed = field_validator("header")(_refuse_hop_by_hop)
    tenant_defaults: Annotated[dict[str, Name], Field(max_length=1024)] = {}
    """Tenant (matched case-insensitively) to the data class its requests carry at least, whatever they
    declare. Without client keys the tenant is client-asserted (`x-modelroute-tenant` or
    `metadata.tenant`): a client can name any tenant, so a tenant default only tightens and never
    protects against a client that names another tenant. With client keys configured the tenant comes
    from the API key, and a request that names a different tenant is refused with 403
    `tenant_mismatch`."""
    detectors: Annotated[list[Detector], Field(max_length=8 + contract.PATTERN_DETECTORS_MAX)] = []
    """Content detectors run on every string the request carries; each that finds adds its class. At
    most 32 of kind `pattern`, with unique names."""
    default_class: Name | None = None
    """Data class every request carries at least; unset means `public`."""
    precedence: Annotated[list[Name], Field(max_length=32)] = []
    """Data classes, strictest first. Every signal is evaluated (the declared header, the tenant
    default, every detector, `defaultClass`) and the strictest class wins: a declaration can raise
    strictness, never lower it (a laxer one is kept strict and noted in the audit log and the
    `x-modelroute-data-class-source` header). `public` is always the laxest; a class a signal names
    that is not defined is stricter than all and no replica may take it. Whatever the order, a replica
    must satisfy every signalled class. Empty: the order `dataClasses` are written in."""


class Locality(ApiModel):
    """Which regions are preferred: the caller's own region first, then `failoverOrder`."""

    prefer_local: bool = True
    """Prefer replicas in the sidecar's own region (default true)."""
    failover_order: Annotated[list[Region], Field(max_length=64)] = []
    """Regions in order of preference after the local one; regions not listed come last."""


class Resilience(ApiModel):
    """Retries, timeouts and passive ejection."""

    cel_rules = (
        CEL(
            "duration(has(self.perTryTimeout) ? self.perTryTimeout : '30s')"
            " <= duration(has(self.deadline) ? self.deadline : '120s')",
            "perTryTimeout must not exceed deadline",
            ".perTryTimeout",
        ),
        CEL(
            "duration(has(self.baseEjectionTime) ? self.baseEjectionTime : '5s')"
            " <= duration(has(self.maxEjectionTime) ? self.maxEjectionTime : '120s')",
            "baseEjectionTime must not exceed maxEjectionTime",
            ".baseEjectionTime",
        ),
    )
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    """Upstream attempts per request, the first included (default 3)."""
    retry_budget_percent: Percent = 20.0
    """Retries allowed as a percentage of recent requests (default 20)."""
    per_try_timeout: Duration = "30s"
    """Time one attempt may take until response headers (default 30s)."""
    deadline: Duration = "120s"
    """Time the whole request may take (default 120s)."""
    eject_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failures that eject a replica from a sidecar's rotation (default 3)."""
    base_ejection_time: Duration = "5s"
    """First ejection time, doubled on each repeat (default 5s)."""
    max_ejection_time: Duration = "120s"
    """Longest ejection (default 120s)."""
    escalate_on: Annotated[
        list[Literal["error", "timeout", "length", "invalidJson", "schemaMismatch"]], Field(max_length=5)
    ] = ["error", "timeout"]
    """Answer failures that escalate to the rule's `escalateTo`: upstream `error`, `timeout`, `length`
    (finish_reason length), `invalidJson` (JSON requested, not returned), `schemaMismatch` (a non-streamed
    chat answer that does not follow the request's `response_format` JSON schema or its tools' parameter
    schemas; an invalid schema is then the client's 400)."""


class Budgets(ApiModel):
    """Cost and latency budgets; endpoints that would break them are dropped while others remain."""

    max_cost_per_request_usd: Annotated[float, Field(gt=0, le=1000)] | None = None
    """Ceiling for the estimated cost of one request (prompt estimate plus requested max output)."""
    max_latency: Duration | None = None
    """Endpoints whose observed p95 latency is above this are avoided."""


class TenantLimit(ApiModel):
    """Token-bucket limits per tenant, so no tenant can starve others or force expensive tiers.

    Whose tenant: without client keys the tenant and tier are client-asserted (`x-modelroute-tenant`
    / `metadata.tenant`, `x-modelroute-tier` / `metadata.tier`): a client can name any tenant, and so
    draw on another tenant's bucket or a fresh one. With client keys configured the tenant and tier
    come from the API key, and a request that names a different tenant is refused with 403
    `tenant_mismatch`.

    Scope: per pod. All worker processes of one sidecar share one bucket per tenant, so a pod admits
    the limit once however many workers it runs; N pods admit up to N times the limit (`fleetLimits`
    counts across the fleet). A bucket holds one minute of quota (the burst) and refills evenly. A pod
    keeps a bounded number of buckets: when a flood of tenant names fills them, the least recently
    used are evicted and such a tenant starts again with a full bucket."""

    tenant_tier: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    """Tenant tier the limit applies to; unset for the default limit."""
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute per tenant."""
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Estimated tokens per minute per tenant."""


class SpendBudget(ApiModel):
    """A spend budget in US dollars over one UTC calendar period, priced from the ModelEndpoints' prices
    and the upstreams' reported usage (streamed answers included)."""

    cel_rules = (
        CEL(
            "!has(self.softUsd) || self.softUsd <= self.hardUsd",
            "softUsd must not be above hardUsd: the warning must come before the stop",
            ".softUsd",
        ),
    )
    hard_usd: Annotated[float, Field(gt=0, le=1e9)]
    """Spend at which requests are refused with 429 `budget_exceeded` until the period ends."""
    soft_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
    """Spend from which answers carry `x-modelroute-budget-warning`, the metric
    `modelroute_budget_soft_exceeded_total` counts and the operator raises a `BudgetSoftLimit` Warning
    Event; unset for no warning."""

    @model_validator(mode="after")
    def _soft_below_hard(self) -> SpendBudget:
        problem = contract.spend_budget_problem(self.hard_usd, self.soft_usd)
        if problem:
            raise ValueError(f"{problem[0]} {problem[1]}")
        return self


class FleetQuota(ApiModel):
    """Limits counted across every sidecar of the fleet store's scope."""

    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Requests per UTC calendar minute."""
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Tokens per UTC calendar minute: estimated at admission (prompt estimate plus `max_tokens`),
    corrected by the upstream's reported usage."""
    daily: SpendBudget | None = None
    """USD per UTC day."""
    monthly: SpendBudget | None = None
    """USD per UTC calendar month."""


class FleetTenantLimit(FleetQuota):
    """A fleet quota for each tenant of one tier (tenant and tier as `tenantLimits` knows them)."""

    tenant_tier: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    """Tenant tier the quota applies to; unset for the default quota."""


class FleetLimits(ApiModel):
    """Limits and spend budgets shared by every sidecar through the fleet store (Redis or Valkey, set in
    the chart's `fleetStore`; the address and credentials are never part of a policy).

    Requests per minute are never over-admitted while the store is up: sidecars lease chunks of the
    limit (1/16 each) from the store, which never hands out more than the limit. Tokens may overshoot by
    what answers use beyond their estimate. Budgets are counted after each answer and synced every
    0.2 s (after every answer once near the stop): the overshoot is what the fleet serves in that time."""

    scope: Literal["namespace", "cluster"] = "namespace"
    """`namespace`: counted across the namespace's sidecars; `cluster`: across every sidecar of the
    cluster that runs a policy of this name (one tenant, one limit in every namespace)."""
    fail_mode: Literal["open", "closed"] = "open"
    """While the store is unreachable: `open` serves under per-process limits (the `FleetStore`
    condition and `modelroute_fleet_fail_open_admissions_total` say so) and writes the counts when the
    store returns; `closed` refuses the requests these limits cover with 503."""
    tenants: Annotated[list[FleetTenantLimit], Field(max_length=32)] = []
    """Per-tenant quotas, chosen by tier."""
    policy: FleetQuota | None = None
    """One quota for all tenants of this policy together."""


class RoutingPolicySpec(ApiModel):
    """Routing of one or more virtual models (what clients put in `model`)."""

    cel_rules = (
        CEL(
            "self.rules.all(r, self.rules.exists_one(s, s.name == r.name))",
            "rule names must be unique",
            ".rules",
        ),
        CEL(
            "self.virtualModels.all(m, self.virtualModels.exists_one(n, n == m))",
            "virtual models must be unique",
            ".virtualModels",
        ),
        CEL(
            "self.rules.all(r, !has(r.fallbackTo) || self.rules.exists(s, s.name == r.fallbackTo))",
            "fallbackTo must name a rule of this policy",
            ".rules",
        ),
        CEL(
            "self.rules.all(r, !has(r.escalateTo) || self.rules.exists(s, s.name == r.escalateTo))",
            "escalateTo must name a rule of this policy",
            ".rules",
        ),
    )
    virtual_models: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]],
        Field(min_length=1, max_length=32),
    ]
    """Model names clients use, e.g. `auto`, `support-bot`; listed by `/v1/models`."""
    rules: Annotated[list[Rule], Field(min_length=1, max_length=128)]
    """Ordered rules; the first that matches routes the request. End with a catch-all."""
    residency: Residency = Residency()
    """Data residency rules."""
    locality: Locality = Locality()
    """Region preference and failover order."""
    resilience: Resilience = Resilience()
    """Retries, timeouts and ejection."""
    budgets: Budgets = Budgets()
    """Cost and latency budgets."""
    tenant_limits: Annotated[list[TenantLimit], Field(max_length=32)] = []
    """Per-tenant rate limits."""
    fleet_limits: FleetLimits | None = None
    """Fleet-wide limits and spend budgets, counted across sidecars in the fleet store."""
    difficulty_models: Annotated[list[DifficultyModelSpec], Field(max_length=4)] = []
    """Learned difficulty models the rules may name in `match.complexity.scorer`."""
    semantic_routes: Annotated[list[SemanticRouteSpec], Field(max_length=contract.SEMANTIC_ROUTES_MAX)] = []
    """Routes by meaning the rules may match with `match.semantic`."""


class SkewedPods(ApiModel):
    """Sidecar pods the live config is not sent to: their sidecars read only older RouterConfig schemas,
    and the config needs something those lack (the reason names the object and the field). They keep
    their last config until they restart with a newer sidecar."""

    pods: Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=64)] = []
    """The pods (also listed in `laggingPods`)."""
    reads: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=16)] = []
    """The schema versions their sidecars read."""
    reason: Annotated[str, Field(max_length=2048)] = ""
    """What the live config needs that those schemas lack."""


class TenantSpend(ApiModel):
    """One budget's spend in its current period."""

    tenant: Annotated[str, Field(max_length=256)] = ""
    """The tenant; empty for the policy's own budget (all tenants together)."""
    period: Literal["day", "month"] = "day"
    """`day` or `month` (UTC calendar periods)."""
    window: Annotated[str, Field(max_length=16)] = ""
    """The period counted: `2026-12-02` or `2026-12` (UTC)."""
    spent_usd: float = 0.0
    """Fleet-wide spend in the period, as the sidecars last read it from the store."""
    soft_usd: float | None = None
    """The budget's soft threshold."""
    hard_usd: float = 0.0
    """The budget's hard stop."""
    state: Literal["Ok", "Soft", "Exhausted"] = "Ok"
    """`Soft` past the soft threshold, `Exhausted` at the hard stop."""


class RoutingPolicyStatus(ApiModel):
    """Observed state of a RoutingPolicy."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """`metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """`Accepted` (the spec is valid), `Ready` (live and run by every ready sidecar of the namespace: safe
    to send traffic with this config) and `Synced` (how far the rollout to the sidecars is)."""
    config_version: Annotated[str, Field(max_length=64)] | None = None
    """Version (content hash) of the namespace's live RouterConfig that contains this policy."""
    routes: Annotated[int, Field(ge=0)] | None = None
    """Number of rules compiled."""
    endpoints: Annotated[list[Name], Field(max_length=256)] = []
    """Endpoints the policy resolves to, sorted."""
    sync: Annotated[str, Field(max_length=64)] | None = None
    """Sidecars running `syncedVersion`, e.g. `3/3`."""
    synced_version: Annotated[str, Field(max_length=64)] | None = None
    """The config version the `sync` figure counts; equal to `configVersion` once the push went out."""
    lagging_pods: Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=64)] = []
    """Sidecar pods not yet running the live version (each in the schema its sidecar reads)."""
    skewed_pods: Annotated[list[SkewedPods], Field(max_length=8)] = []
    """Lagging pods the live config cannot be sent to, grouped by reason (version skew)."""
    spend: Annotated[list[TenantSpend], Field(max_length=100)] = []
    """Spend of the current day and month per budgeted tenant, highest first, as the sidecars last
    reported it (policies with `fleetLimits` budgets; `modelroute spend` prints it)."""


# -------------------------------------------------------------------------------------------- Canary


class PolicyRouteRef(ApiModel):
    """The route a canary shifts: a rule of a RoutingPolicy."""

    policy: Name
    """RoutingPolicy name in this namespace."""
    rule: Name
    """Rule of that policy whose `stable` target is shifted to the candidate."""


class CanaryStep(ApiModel):
    """One step: send `weight` percent to the candidate for at least `pause`, then analyse."""

    weight: Annotated[int, Field(ge=1, le=100)]
    """Percentage of the route's traffic sent to the candidate during this step."""
    pause: Duration = "1m"
    """How long the step lasts before its analysis decides (default 1m)."""


class CanaryAnalysis(ApiModel):
    """Thresholds applied to real traffic at the end of each step."""

    max_error_rate_percent: Percent = 5.0
    """Highest acceptable candidate error rate in percent (default 5)."""
    max_p95_latency: Duration | None = None
    """Highest acceptable candidate p95 latency, e.g. `2s`; unset to skip."""
    max_latency_increase_percent: Annotated[float, Field(ge=0, le=10_000)] | None = None
    """Highest acceptable p95 increase over stable in percent; unset to skip."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """Candidate requests a step needs before it can be judged (default 20); fewer holds the step, unless
    the sidecars ejected the candidate for consecutive failures meanwhile (its users then fail over and
    it gets no requests to reach the figure with): that fails the analysis."""
    min_feedback_score: Annotated[float, Field(ge=0, le=1)] | None = None
    """Lowest acceptable candidate mean quality score (0-1, from `POST /v1/feedback`); unset to skip."""
    max_feedback_score_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    """Highest acceptable drop of the candidate's mean score below stable's (absolute, 0-1, e.g. `0.1`);
    unset to skip."""
    min_feedback: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    """Feedback posts on the candidate a step needs before a feedback check judges it (default 10);
    fewer holds the step. Stable needs as many to be compared with."""
    failure_limit: Annotated[int, Field(ge=1, le=100)] = 1
    """Failed analyses that roll the canary back (default 1)."""


class CanaryMirror(ApiModel):
    """A mirror phase before the first step: the target rule copies a share of its requests to the
    candidate as shadow traffic (the client always gets stable's answer), for `pause`; the analysis then
    judges the copies against the primary's answers to the very same requests: error rate, p95 and the
    p95 increase over the primary. `analysis.minRequests` counts copies; feedback checks do not apply (a
    client scores the answer it got, never a copy's). Failing rolls back (under `failureLimit`) before a
    single user is served by the candidate; passing starts step 1."""

    percent: Annotated[float, Field(gt=0, le=100)] = 100.0
    """Share of the rule's requests copied to the candidate (above 0, up to 100; default 100)."""
    pause: Duration = "1m"
    """How long the mirror phase lasts before its analysis decides (default 1m)."""
    max_concurrent: Annotated[int, Field(ge=1, le=contract.SHADOW_MAX_CONCURRENT)] = (
        contract.SHADOW_DEFAULT_CONCURRENT
    )
    """Copies in flight per sidecar worker (1-256, default 8); more are skipped and counted."""


class Stickiness(ApiModel):
    """What keeps one user on one side of the split."""

    cel_rules = (
        CEL("has(self.header) != has(self.metadata)", "set exactly one of header or metadata"),
        CEL(
            f"!has(self.header) || !(self.header.lowerAscii() in {_HOP_BY_HOP_CEL})",
            f"header {_HOP_BY_HOP_MESSAGE}",
            ".header",
        ),
    )
    header: HeaderName | None = None
    """Request header whose value is hashed, e.g. `x-user-id`."""

    _header_allowed = field_validator("header")(_refuse_hop_by_hop)
    metadata: Annotated[str, Field(max_length=63, pattern=r"^[a-z][a-z0-9_-]*$")] | None = None
    """Metadata key whose value is hashed, e.g. `tenant`."""


class CanarySpec(ApiModel):
    """Shift one route from a stable endpoint to a candidate, step by step, judged on real traffic."""

    cel_rules = (
        CEL("self.stable != self.candidate", "candidate must differ from stable", ".candidate"),
        CEL(
            "self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight))",
            "step weights must strictly increase",
            ".steps",
        ),
        CEL(
            "!(has(self.abort) && self.abort && has(self.promote) && self.promote)",
            "abort and promote cannot both be set",
            ".promote",
        ),
    )
    target: PolicyRouteRef
    """Route being shifted."""
    stable: Name
    """ModelEndpoint currently serving the route (one of the rule's targets)."""
    candidate: Name
    """ModelEndpoint being rolled out."""
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=32)]
    """Candidate weights in increasing order; after the last step passes, the canary is promoted."""
    mirror: CanaryMirror | None = None
    """Mirror the route's traffic to the candidate before step 1 and judge the copies (phase
    `Mirroring`); unset to start at step 1. The target rule must have no `shadow` of its own."""
    analysis: CanaryAnalysis = CanaryAnalysis()
    """Thresholds."""
    stickiness: Stickiness | None = None
    """Keep a user on one side; unset splits request by request."""
    paused: bool = False
    """Hold at the current step (set back to false to resume)."""
    abort: bool = False
    """Roll back now: all traffic to stable."""
    promote: bool = False
    """Promote now: all traffic to the candidate."""


class CanaryPhase(StrEnum):
    PENDING = "Pending"
    MIRRORING = "Mirroring"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


class SideFigures(ApiModel):
    """Traffic figures of one side over an analysis window."""

    requests: Annotated[int, Field(ge=0)] = 0
    """Requests counted."""
    errors: Annotated[int, Field(ge=0)] = 0
    """Failed requests counted."""
    error_rate_percent: Percent = 0.0
    """errors / requests in percent."""
    p95_latency_ms: Annotated[float, Field(ge=0)] | None = None
    """95th percentile latency in milliseconds."""
    feedback: Annotated[int, Field(ge=0)] = 0
    """Feedback posts counted."""
    mean_feedback_score: Annotated[float, Field(ge=0, le=1)] | None = None
    """Mean quality score of those posts (0-1); unset without feedback."""
    # Left out while zero (here and in SideCounters): a status without ejections then reads the same
    # to an operator from before the field, whose models refuse unknown fields.
    ejections: Annotated[int, Field(ge=0, exclude_if=lambda value: not value)] = 0
    """Times the sidecars took one of the side's replicas out of rotation for consecutive failed
    attempts (passive ejection) in the window; absent while zero."""


class AnalysisResult(ApiModel):
    """Outcome of one analysis."""

    time: datetime
    """When it ran."""
    step: Annotated[int, Field(ge=0)]
    """Step index judged."""
    verdict: Literal["Pass", "Fail", "Inconclusive"]
    """`Pass`, `Fail`, or `Inconclusive` (too few requests)."""
    candidate: SideFigures = SideFigures()
    """Candidate figures."""
    stable: SideFigures = SideFigures()
    """Stable figures."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """Why."""


class HistoryEntry(ApiModel):
    """A transition of the canary."""

    time: datetime
    """When."""
    phase: CanaryPhase
    """Phase after the transition."""
    step: Annotated[int, Field(ge=0)]
    """Step index after the transition."""
    weight: Annotated[int, Field(ge=0, le=100)]
    """Candidate weight after the transition."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """What happened."""


class SideCounters(ApiModel):
    """Cumulative counters of one endpoint, summed over the namespace's sidecars."""

    requests: Annotated[int, Field(ge=0)] = 0
    """Requests counted."""
    errors: Annotated[int, Field(ge=0)] = 0
    """Failed requests counted."""
    latency_bounds_seconds: Annotated[list[Annotated[float, Field(ge=0)]], Field(max_length=64)] = []
    """Upper bounds of the latency histogram in seconds, ascending; the `+Inf` bucket is implied."""
    latency_buckets: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=65)] = []
    """Cumulative counts per bound, then the `+Inf` bucket (one more entry than the bounds)."""
    feedback: Annotated[int, Field(ge=0)] = 0
    """Feedback posts counted."""
    feedback_score_sum: Annotated[float, Field(ge=0)] = 0.0
    """Sum of their scores."""
    ejections: Annotated[int, Field(ge=0, exclude_if=lambda value: not value)] = 0
    """Times the sidecars took one of the endpoint's replicas out of rotation for consecutive failures."""


class StepBaseline(ApiModel):
    """Where the current step's analysis window starts, and the endpoints this run compares."""

    stable_endpoint: Name
    """`spec.stable` this run was started for; a different one in spec restarts the run."""
    candidate_endpoint: Name
    """`spec.candidate` this run was started for; a different one in spec restarts the run."""
    stable: SideCounters | None = None
    """Stable's counters when the step began (or were last reset); unset until stats could be read."""
    candidate: SideCounters | None = None
    """Candidate's counters when the step began (or were last reset); unset until stats could be read."""


class ManualActions(ApiModel):
    """Actions taken with `kubectl modelroute canary pause|resume|promote|abort`. They live in status
    (written through the status subresource), not in spec: Git keeps owning the spec, so neither Argo CD
    nor Flux sees drift or reverts an action, and `spec.paused`/`spec.promote`/`spec.abort` still work
    for those who drive the canary from Git. Cleared when the run restarts for new endpoints."""

    paused: bool = False
    """Hold at the current step (`resume` sets it back to false)."""
    promote: bool = False
    """Promote now."""
    abort: bool = False
    """Roll back now."""
    by: Annotated[str, Field(max_length=256)] = ""
    """Who took the last action (the plugin's user, when it knows it)."""
    at: datetime | None = None
    """When the last action was taken."""


class CanaryStatus(ApiModel):
    """Observed state of a Canary; everything needed to resume after an operator restart."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """`metadata.generation` this status describes."""
    conditions: Annotated[list[Condition], Field(max_length=16)] = []
    """`Accepted` (the spec is valid), `Ready` (live and not rolled back) and `RolledOut` (every sidecar
    runs the weight decided)."""
    phase: CanaryPhase | None = None
    """`Pending`, `Mirroring` (spec.mirror, before step 1), `Progressing`, `Paused`, `Promoted` or
    `RolledBack`."""
    current_step: Annotated[int, Field(ge=0)] | None = None
    """Index of the step in progress."""
    current_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percentage of the route's traffic on the candidate that every sidecar acknowledged running (the
    last such weight while a rollout is pending)."""
    desired_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percentage the controller decided; the compiled config carries it, and `currentWeight` follows
    once every sidecar acknowledged it."""
    step_started_at: datetime | None = None
    """When every sidecar acknowledged the current step's weight; the step's pause and analysis window
    count from here (unset while that rollout is pending)."""
    failed_analyses: Annotated[int, Field(ge=0)] | None = None
    """Failed analyses so far."""
    last_analysis: AnalysisResult | None = None
    """Most recent analysis with its measured figures."""
    history: Annotated[list[HistoryEntry], Field(max_length=50)] = []
    """Recent transitions, oldest first (last 50)."""
    step_baseline: StepBaseline | None = None
    """Sidecar counters when the current step began (its analysis counts only traffic since), and the
    stable/candidate endpoints this run is for."""
    manual: ManualActions | None = None
    """Actions taken with the kubectl plugin; the operator obeys them like the spec's switches."""


# ------------------------------------------------------------------------------------------- objects


class Metadata(BaseModel):
    """The part of ObjectMeta the compiler uses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)
    name: str
    namespace: str = "default"
    generation: int = 0
    uid: str = ""


class Resource(BaseModel):
    """A whole object of one of our kinds, as read from the API server or a manifest."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)
    kind_name: ClassVar[str]
    plural: ClassVar[str]
    singular: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    printer_columns: ClassVar[tuple[dict[str, Any], ...]]
    spec_model: ClassVar[type[ApiModel]]
    status_model: ClassVar[type[ApiModel]]
    root_cel_rules: ClassVar[tuple[CEL, ...]] = (
        # Kubernetes allows 253-character DNS subdomains; rules, canaries and the sidecar's response
        # headers refer to our objects by DNS label (`Name`), so a longer or dotted name is unusable.
        CEL(
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_LABEL}')",
            f"metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters (lower-case letters, "
            "digits and '-'): other objects and the router's headers refer to it by that name",
        ),
    )
    """CEL rules on the whole object (only metadata.name/generateName of metadata are visible)."""

    api_version: str = API_VERSION
    kind: str
    metadata: Metadata


def _ready_column() -> dict[str, Any]:
    return {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


class ModelEndpoint(Resource):
    kind_name = "ModelEndpoint"
    plural, singular, short_names = "modelendpoints", "modelendpoint", ("me", "mep")
    spec_model, status_model = ModelEndpointSpec, ModelEndpointStatus
    printer_columns = (
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Tier", "type": "string", "jsonPath": ".spec.tier", "priority": 1},
        _ready_column(),
        {"name": "Replicas", "type": "string", "jsonPath": ".status.readySummary"},
        {"name": "Regions", "type": "string", "jsonPath": ".status.regions"},
        _AGE,
    )
    kind: Literal["ModelEndpoint"] = "ModelEndpoint"
    spec: ModelEndpointSpec
    status: ModelEndpointStatus = ModelEndpointStatus()


class RoutingPolicy(Resource):
    kind_name = "RoutingPolicy"
    plural, singular, short_names = "routingpolicies", "routingpolicy", ("rp", "mrp")
    spec_model, status_model = RoutingPolicySpec, RoutingPolicyStatus
    printer_columns = (
        {"name": "Models", "type": "string", "jsonPath": ".spec.virtualModels"},
        _ready_column(),
        {"name": "Routes", "type": "integer", "jsonPath": ".status.routes"},
        {"name": "Config", "type": "string", "jsonPath": ".status.configVersion"},
        {"name": "Sync", "type": "string", "jsonPath": ".status.sync"},
        _AGE,
    )
    kind: Literal["RoutingPolicy"] = "RoutingPolicy"
    spec: RoutingPolicySpec
    status: RoutingPolicyStatus = RoutingPolicyStatus()


class Canary(Resource):
    kind_name = "Canary"
    plural, singular, short_names = "modelcanaries", "modelcanary", ("mrc",)
    spec_model, status_model = CanarySpec, CanaryStatus
    printer_columns = (
        {"name": "Policy", "type": "string", "jsonPath": ".spec.target.policy"},
        {"name": "Rule", "type": "string", "jsonPath": ".spec.target.rule", "priority": 1},
        {"name": "Stable", "type": "string", "jsonPath": ".spec.stable"},
        {"name": "Candidate", "type": "string", "jsonPath": ".spec.candidate"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.currentWeight"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredWeight", "priority": 1},
        _ready_column(),
        _AGE,
    )
    kind: Literal["Canary"] = "Canary"
    spec: CanarySpec
    status: CanaryStatus = CanaryStatus()


KINDS: tuple[type[Resource], ...] = (ModelEndpoint, RoutingPolicy, Canary)
KIND_BY_NAME: dict[str, type[Resource]] = {k.kind_name: k for k in KINDS}
