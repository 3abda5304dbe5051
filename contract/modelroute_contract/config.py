"""The RouterConfig: the one document the operator compiles and the sidecar obeys.

Everything the data plane needs to decide and proxy a request is in here, already resolved: no references
to chase, no Kubernetes types. The document is versioned by schema (`schemaVersion`; which schemas exist,
what each added and how a config is rendered for an older one: `schemas`) and identified by a content
hash (`version`) so the operator can tell which sidecar runs what. Like the whole contract
package it imports only pydantic and the standard library: both sides depend on it, it depends on
neither. RE2 syntax of `pattern` detectors is checked by the engine (`modelroute_sidecar.engine.detectors
.config_pattern_problem`), where the sidecar loads a config and where the operator compiles one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from .admin import SIDECAR_PORTS
from .schemas import (
    SCHEMA_VERSION,
    Rendering,
    SchemaGap,
    canonical_json,
    document_hash,
    render_document,
    render_for,
    schema_problems,
    strip_to,
)
from .urls import replica_url_problem

# ------------------------------------------------------------------------- shared validation rules
# One definition each, used by the CRD models (resources.py), the compiler, the admission webhook and the
# sidecar's own checks of a pushed or loaded config (the validators below).

HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # Not hop-by-hop in RFC 9110, but framing the proxy owns: a rule must not route on them.
        "host",
        "content-length",
    }
)
"""Request headers no rule, stickiness or declaration may be keyed on: the proxy consumes or rewrites
them per hop, so a match on them means something different on every hop (and invites smuggling)."""

COMPLEXITY_MIN: Final = 0
COMPLEXITY_MAX: Final = 100
"""The complexity score's scale; a range outside it can never match (or always does)."""

METADATA_KEY_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,62}$"
"""A request metadata key: it is read from the `x-modelroute-<key>` header, so it must be a header token."""

REQUEST_TOKEN_COUNT_FIELDS: Final = ("max_tokens", "max_completion_tokens")
"""Token counts a client request may carry; each must be a positive integer when present."""


def token_count_problem(value: object) -> str | None:
    """Why a token count is not acceptable (not an integer, zero or negative), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a positive integer (got {value!r:.40})"
    if value < 1:
        return f"must be a positive integer (got {value})"
    return None


PATTERN_MAX_LENGTH: Final = 1024
"""Longest regular expression a `pattern` detector may carry (characters)."""
PATTERN_DETECTORS_MAX: Final = 32
"""Most `pattern` detectors one policy may carry: each is one more pass over every request's text."""
PATTERN_NAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A pattern detector's name (a DNS label, at most 63 characters): it is reported in the decision, the
audit log and the `x-modelroute-data-class-source` response header."""
_PATTERN_NAME = re.compile(PATTERN_NAME)


def pattern_problem(pattern: str) -> str | None:
    """Why a detector pattern's shape is not acceptable (empty, too long), or None. Its RE2 syntax is
    checked by the engine (`modelroute_sidecar.engine.detectors.pattern_syntax_problem`)."""
    if not pattern:
        return "must not be empty"
    if len(pattern) > PATTERN_MAX_LENGTH:
        return f"is {len(pattern)} characters long, at most {PATTERN_MAX_LENGTH} are allowed"
    return None


def hop_by_hop_problem(name: str) -> str | None:
    """Why a header name may not be matched on, or None."""
    if name.lower() in HOP_BY_HOP_HEADERS:
        return f"{name.lower()!r} is a hop-by-hop or framing header the proxy consumes; it cannot be matched"
    return None


class ContractModel(BaseModel):
    """Base of every contract model: camelCase on the wire, unknown fields refused, immutable.

    Validators and serializers are built on a model's first use (`defer_build`), not when its class is
    defined: the sidecar validates and dumps whole RouterConfigs, whose validator carries every nested
    model's schema inline, so the nested models' own validators would be built at import for nothing
    (~0.3 MiB resident in every sidecar process). A model used as a field default is built when its
    class body runs, as before."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        defer_build=True,
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


class TlsConfig(ContractModel):
    """How the sidecar speaks TLS to an endpoint's https replicas: files of Secrets mounted into it."""

    ca_bundle: CredentialRef | None = None
    """PEM CA certificates the replicas' certificates must chain to; replaces the system trust store."""
    client_certificate: CredentialRef | None = None
    """PEM client certificate chain presented to the replicas (`tls.crt` of a kubernetes.io/tls Secret)."""
    client_key: CredentialRef | None = None
    """PEM private key of the client certificate (`tls.key` of the same Secret)."""
    server_name: str = ""
    """Name verified in the replicas' certificates (and sent as SNI); empty uses each URL's host."""


class Capabilities(ContractModel):
    """What a model can do; used to drop endpoints that cannot serve a request."""

    context_window: Annotated[int, Field(ge=1)] = 8192
    """Maximum prompt plus completion tokens."""
    max_output_tokens: Annotated[int, Field(ge=1)] = 4096
    """Largest completion the model returns."""
    streaming: bool = True
    """Whether the endpoint can stream (SSE)."""
    tools: bool = True
    """Whether the endpoint accepts tool/function definitions (OpenAI-style servers do)."""
    json_mode: bool = True
    """Whether the endpoint honours JSON output (`response_format` / `text.format` json_object or
    json_schema; OpenAI-style servers do)."""
    stream_usage: bool = True
    """Whether the endpoint takes `stream_options.include_usage`, which the sidecar adds to streamed
    requests so that their tokens and cost are counted (false: counted only when the client asks)."""


PROVIDERS: Final = ("openai", "azure-openai", "anthropic", "bedrock", "gemini")
"""API styles an endpoint's upstream may speak; `openai` covers every OpenAI-compatible server."""
Provider = Literal["openai", "azure-openai", "anthropic", "bedrock", "gemini"]

PROVIDER_APIS: Final[dict[str, frozenset[str]]] = {
    "openai": frozenset({"chat", "completions", "embeddings", "responses"}),
    "azure-openai": frozenset({"chat", "completions", "embeddings"}),
    "anthropic": frozenset({"chat"}),
    "bedrock": frozenset({"chat"}),
    "gemini": frozenset({"chat"}),
}
"""The OpenAI APIs each provider's translation serves (a request for another is refused before the call;
the Anthropic Messages API inbound is served as `chat`)."""
PROVIDER_JSON_MODE: Final = frozenset({"openai", "azure-openai", "gemini"})
"""Providers with a JSON output mode (`response_format`): Anthropic's Messages API and Bedrock's Converse
API have none, so a JSON-mode request is never sent there to be ignored."""
PROVIDER_AUTH: Final[dict[str, tuple[str, ...]]] = {
    "openai": ("bearer",),
    "azure-openai": ("api-key", "entra-token"),
    "anthropic": ("api-key",),
    "bedrock": ("aws-keys",),
    "gemini": ("api-key", "service-account"),
}
"""How each provider authenticates (the first is its default): `bearer` an `Authorization: Bearer` key;
`api-key` the provider's key header (`api-key`, `x-api-key`, `x-goog-api-key`); `entra-token` a
Microsoft Entra access token as bearer; `aws-keys` SigV4 with an access key from the Secret;
`service-account` a Google service-account key (JSON) signing its own access tokens (Vertex AI)."""
API_VERSION_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}(-preview)?$"
"""An `api-version` (Azure OpenAI) or `anthropic-version`: a date, e.g. `2024-10-21`."""
AWS_REGION_PATTERN: Final = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$"
"""An AWS region (`eu-central-1`): a bedrock replica's region is the region its requests are signed for."""
GCP_PROJECT_PATTERN: Final = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
"""A Google Cloud project id."""
GCP_LOCATION_PATTERN: Final = r"^[a-z]+-[a-z]+\d{1,2}$|^global$"
"""A Vertex AI location (`europe-west4`, `global`): a service-account gemini replica's region."""


class ProviderSettings(ContractModel):
    """Settings of a native provider's API (`provider_settings_problem` says what each one needs)."""

    auth: str = ""
    """How to authenticate (`PROVIDER_AUTH`); empty: the provider's default."""
    api_version: str = ""
    """azure-openai: the `api-version` query parameter (required); anthropic: the `anthropic-version`
    header (empty: 2023-06-01)."""
    project: str = ""
    """gemini with `service-account` auth: the Google Cloud project of Vertex AI."""


def provider_settings_problem(
    provider: str,
    settings: ProviderSettings | None,
    has_credentials: bool,
    regions: Iterable[str] = (),
) -> tuple[str, str] | None:
    """Why an endpoint's provider settings do not fit its provider: (field, reason), or None. Fields are
    named as in a ModelEndpoint's spec (`providerSettings.apiVersion`); the one rule of the CRD models,
    the compiler, the admission webhook and the sidecar."""
    if provider not in PROVIDERS:
        return "provider", f"{provider!r} is not one of {', '.join(PROVIDERS)}"
    s = settings or ProviderSettings()
    if provider == "openai":
        return (
            ("providerSettings", "is for native providers; provider openai takes none") if settings else None
        )
    auths = PROVIDER_AUTH[provider]
    auth = s.auth or auths[0]
    if auth not in auths:
        return "providerSettings.auth", f"{s.auth!r} is not one of {', '.join(auths)} for provider {provider}"
    if not has_credentials:
        return "credentials", f"provider {provider} needs credentials (a Secret key holding its {auth})"
    if provider == "azure-openai" and not s.api_version:
        return "providerSettings.apiVersion", "is required for provider azure-openai (e.g. 2024-10-21)"
    if s.api_version:
        if provider not in ("azure-openai", "anthropic"):
            return "providerSettings.apiVersion", f"is not used by provider {provider}"
        if not re.match(API_VERSION_PATTERN, s.api_version):
            return (
                "providerSettings.apiVersion",
                f"{s.api_version!r:.40} is not a version date such as 2024-10-21",
            )
    vertex = provider == "gemini" and auth == "service-account"
    if vertex and not s.project:
        return "providerSettings.project", "is required with auth service-account (the Vertex AI project)"
    if s.project:
        if not vertex:
            return "providerSettings.project", "is only used by provider gemini with auth service-account"
        if not re.match(GCP_PROJECT_PATTERN, s.project):
            return "providerSettings.project", f"{s.project!r:.40} is not a Google Cloud project id"
    for i, region in enumerate(regions):
        if provider == "bedrock" and not re.match(AWS_REGION_PATTERN, region):
            return f"replicas[{i}].region", f"{region!r} is not an AWS region (bedrock signs requests for it)"
        if vertex and not re.match(GCP_LOCATION_PATTERN, region):
            return f"replicas[{i}].region", f"{region!r} is not a Vertex AI location such as europe-west4"
    return None


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
    provider: Provider = "openai"
    """API style of the upstream (`PROVIDERS`): its requests, answers and streams are translated from
    and to the OpenAI API (`modelroute_sidecar.providers`)."""
    # Left out of the document when unset, so an openai endpoint keeps its bytes and hash.
    provider_settings: ProviderSettings | None = Field(default=None, exclude_if=lambda value: value is None)
    """Settings of a native provider (auth mode, API version, project); none for `openai`."""
    tier: str = ""
    """Free-form tier label (e.g. `fast`, `expert`), reported in headers and metrics."""
    capabilities: Capabilities = Capabilities()
    """What the model can do."""
    pricing: Pricing = Pricing()
    """Token prices for budgets and cost metrics."""
    credentials: CredentialRef | None = None
    """Secret key holding the upstream API key; none for unauthenticated upstreams."""
    tls: TlsConfig | None = None
    """TLS settings for https replicas (private CA, client certificate); none uses the system trust."""
    connect_timeout_seconds: float = 2.0
    """TCP/TLS connect timeout to a replica."""
    request_timeout_seconds: float = 60.0
    """Upper bound for one upstream attempt (a policy's per-try timeout may be shorter)."""
    max_requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Endpoint-wide request rate limit enforced per sidecar; none for unlimited."""
    replicas: tuple[ReplicaConfig, ...]
    """Replicas sorted by name."""
    allow_private_targets: bool = False
    """Replicas may be at link-local/metadata addresses or at the sidecar's own ports (see
    `replica_url_problem`); off unless the ModelEndpoint says so explicitly."""

    @model_validator(mode="after")
    def _replica_urls_allowed(self, info: ValidationInfo) -> EndpointConfig:
        # The sidecar passes its configured ports as validation context; otherwise the defaults apply.
        context = info.context if isinstance(info.context, dict) else {}
        ports = context.get("sidecar_ports") or SIDECAR_PORTS
        for i, replica in enumerate(self.replicas):
            problem = replica_url_problem(replica.url, self.allow_private_targets, ports)
            if problem:
                raise ValueError(f"endpoint {self.name!r} replicas[{i}].url {problem}")
        wrong = provider_settings_problem(
            self.provider,
            self.provider_settings,
            self.credentials is not None,
            [r.region for r in self.replicas],
        )
        if wrong:
            raise ValueError(f"endpoint {self.name!r} {wrong[0]} {wrong[1]}")
        return self


class HeaderMatch(ContractModel):
    """Matches when the request header `name` has one of `values` (case-insensitive name)."""

    name: str
    """Header name, lower-cased."""
    values: tuple[str, ...]
    """Accepted values; the match is exact."""

    @model_validator(mode="after")
    def _not_hop_by_hop(self) -> HeaderMatch:
        problem = hop_by_hop_problem(self.name)
        if problem:
            raise ValueError(f"headers name {problem}")
        return self


class RangeMatch(ContractModel):
    """An inclusive numeric range; a bound left out is open."""

    min: Annotated[int, Field(ge=0)] | None = None
    """Smallest accepted value."""
    max: Annotated[int, Field(ge=0)] | None = None
    """Largest accepted value."""

    @model_validator(mode="after")
    def _ordered(self) -> RangeMatch:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} exceeds max {self.max}")
        return self


HEURISTIC_SCORER: Final = "heuristic"
"""The complexity scorer a rule gets when it names none (it may also be named)."""
BUILTIN_DIFFICULTY_MODEL: Final = "builtin"
"""The difficulty model shipped with the sidecar (`modelroute_sidecar/data/difficulty-builtin.json`)."""
BUILTIN_DIFFICULTY_VERSION: Final = "2026.12.3"
BUILTIN_DIFFICULTY_SHA256: Final = "2dc87147456e7d91abf3ef231fa448d4608d76f47d1430ee1742062d9f94b78e"
"""Version and sha256 of the builtin head a policy gets when it names no version: operator and sidecar
agree on it through the contract, and a sidecar whose packaged head differs refuses configs that name it
(a test checks the file)."""
BUILTIN_DIFFICULTY_HEADS: Final = {
    "2026.12.1": "24e7c1044347c0b4b7da7d426a68c5f9bb7903498e054917c19ce16bdea35efb",
    "2026.12.2": "b094ac2a7c5f9ebe89fa01d00c1a144d669e31e5dcc5f6aa5d9005943bc7917f",
    BUILTIN_DIFFICULTY_VERSION: BUILTIN_DIFFICULTY_SHA256,
}
"""Every builtin head the sidecar carries, by version: a policy that pinned an older one keeps scoring
with it after an upgrade (its routing does not change under it); a new policy gets the latest."""
DIFFICULTY_HEAD_MAX_BYTES: Final = 512 * 1024
"""Largest head document carried in a config: a ConfigMap holds at most 1 MiB, and the config holds
other things too."""
SEMANTIC_EXAMPLES_MAX: Final = 256
"""Example utterances per semantic route (each embedded when a config loads)."""
SEMANTIC_ROUTES_MAX: Final = 64


class SemanticMatch(ContractModel):
    """Matches when `route` is the request's most similar semantic route, at least `minSimilarity`."""

    route: str
    """Name of one of the policy's `semanticRoutes`."""
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    """Least cosine similarity between the prompt and the route's centroid (mean of its examples)."""


class SemanticRoute(ContractModel):
    """A route by meaning: prompts most like its examples take it."""

    name: str
    """Route name, referenced by rules' `semantic.route` and reported in the decision."""
    examples: Annotated[tuple[str, ...], Field(min_length=1, max_length=SEMANTIC_EXAMPLES_MAX)]
    """Example utterances; embedded when the config loads."""


class DifficultyModel(ContractModel):
    """A learned difficulty model a policy's rules may score `complexity` with."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    """Name rules use in `complexityScorer`."""
    version: Annotated[str, Field(min_length=1, max_length=63)]
    """The head's version; a sidecar refuses a config whose builtin model is of another version."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """sha256 of the head document's canonical JSON (sorted keys, no spaces)."""
    head: dict[str, Any] | None = Field(default=None, exclude_if=lambda value: value is None)
    """The head document (`modelroute router train` writes it); None for the builtin model, which the
    sidecar carries (`version` and `sha256` then pin the builtin one)."""

    @model_validator(mode="after")
    def _head_fits(self) -> DifficultyModel:
        problem = difficulty_head_problem(self.name, self.version, self.sha256, self.head)
        if problem:
            raise ValueError(problem)
        return self


def difficulty_head_problem(name: str, version: str, sha256: str, head: dict[str, Any] | None) -> str | None:
    """Why a head document cannot be the model `name`/`version` pinned by `sha256`, or None (shapes of
    the weights are the engine's check, `engine.difficulty.head_problem`)."""
    if head is None:
        if BUILTIN_DIFFICULTY_HEADS.get(version) != sha256:
            return (
                f"builtin model version {version} ({sha256[:12]}) is not one this contract ships "
                f"({', '.join(f'{v}, {h[:12]}' for v, h in BUILTIN_DIFFICULTY_HEADS.items())})"
            )
        return None
    text = canonical_json(head)
    if len(text.encode()) > DIFFICULTY_HEAD_MAX_BYTES:
        return f"head is {len(text.encode())} bytes, at most {DIFFICULTY_HEAD_MAX_BYTES}"
    digest = hashlib.sha256(text.encode()).hexdigest()
    if digest != sha256:
        return f"head has sha256 {digest}, the policy pins {sha256}"
    if head.get("version") != version:
        return f"head is version {head.get('version')!r}, the policy names {version!r}"
    return None


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
    """Complexity score range (0-100): the heuristic's, or the learned model's named by `complexityScorer`."""
    data_classes: tuple[str, ...] = ()
    """Data classes this rule applies to; `public` names requests with no restricted data."""
    # schema 3 (learned routing); left out of the document when unused, so older configs keep their bytes.
    complexity_scorer: str = Field(default="", exclude_if=lambda value: not value)
    """Name of one of the policy's `difficultyModels` scoring `complexity`; empty: the heuristic."""
    semantic: SemanticMatch | None = Field(default=None, exclude_if=lambda value: value is None)
    """The request's best semantic route (of the policy's `semanticRoutes`) and the least similarity."""

    @model_validator(mode="after")
    def _complexity_in_scale(self) -> RuleMatch:
        if self.complexity is not None:
            for bound in ("min", "max"):
                value = getattr(self.complexity, bound)
                if value is not None and not COMPLEXITY_MIN <= value <= COMPLEXITY_MAX:
                    raise ValueError(
                        f"complexity.{bound} {value} is outside {COMPLEXITY_MIN}-{COMPLEXITY_MAX}"
                    )
        for key in self.metadata:
            if not re.match(METADATA_KEY_PATTERN, key):
                raise ValueError(f"metadata key {key!r} is not a header token such as `tenant` (max 63)")
        return self


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

    @model_validator(mode="after")
    def _stickiness_not_hop_by_hop(self) -> CanarySplit:
        problem = hop_by_hop_problem(self.stickiness_header) if self.stickiness_header else None
        if problem:
            raise ValueError(f"stickinessHeader {problem}")
        return self


AFFINITY_TTL_MAX_SECONDS: Final = 86400
"""The longest a session may stay pinned without a turn (a day): beyond it provider caches are cold anyway."""
AFFINITY_MAX_SESSIONS: Final = 1_000_000
"""The most sessions one rule may remember per worker (its table is bounded; the oldest go first)."""


class SessionAffinity(ContractModel):
    """Keeps one conversation on one replica (schema 3), so the provider's prompt cache stays warm.

    The session key is a header's value or a metadata key's; a request without it routes as usual. The
    pin yields to residency, health, ejection and the canary split: a pinned replica the request may no
    longer use is dropped from the pin, and the decision says so."""

    header: str = ""
    """Request header whose value names the session (lower-case); exactly one of header and metadata."""
    metadata: str = ""
    """Metadata key (`x-modelroute-<key>` or body `metadata`) whose value names the session."""
    ttl_seconds: int = 600
    """How long a session stays pinned after its last answered turn."""
    max_sessions: int = 10000
    """Sessions remembered per worker for this rule; the least recently used are forgotten first."""

    @model_validator(mode="after")
    def _one_key(self) -> SessionAffinity:
        if bool(self.header) == bool(self.metadata):
            raise ValueError("affinity needs exactly one of header and metadata")
        if self.header:
            problem = hop_by_hop_problem(self.header)
            if problem:
                raise ValueError(f"affinity.header {problem}")
            if self.header != self.header.lower():
                raise ValueError(f"affinity.header {self.header!r} must be lower-case")
        if self.metadata and not re.match(METADATA_KEY_PATTERN, self.metadata):
            raise ValueError(f"affinity.metadata {self.metadata!r} is not a header token such as `session`")
        if not 1 <= self.ttl_seconds <= AFFINITY_TTL_MAX_SECONDS:
            raise ValueError(
                f"affinity.ttlSeconds {self.ttl_seconds} is outside 1-{AFFINITY_TTL_MAX_SECONDS}"
            )
        if not 1 <= self.max_sessions <= AFFINITY_MAX_SESSIONS:
            raise ValueError(f"affinity.maxSessions {self.max_sessions} is outside 1-{AFFINITY_MAX_SESSIONS}")
        return self


SHADOW_MAX_CONCURRENT: Final = 256
"""The most shadow copies one rule may have in flight per worker: each holds a request body and a
connection, so the bound is memory and sockets, not throughput."""
SHADOW_DEFAULT_CONCURRENT: Final = 8
"""In-flight shadow copies per rule and worker when the policy does not say."""


class ShadowTraffic(ContractModel):
    """Mirrors a share of a rule's requests to another endpoint (schema 3), to compare it with the
    primary on live traffic. The copy's answer is never returned to the client and the client never
    waits for it; it is sent only to a replica the request's residency allows (the same tables as a
    primary pick), and skipped (counted) when the rule's copies in flight reach `maxConcurrent`."""

    endpoint: str
    """EndpointConfig name receiving the copies."""
    percent: float
    """Share (0-100) of the rule's requests copied, by a stable hash of the request id."""
    max_concurrent: int = SHADOW_DEFAULT_CONCURRENT
    """Copies in flight per worker for this rule; over it a copy is skipped (`busy`)."""

    @model_validator(mode="after")
    def _bounded(self) -> ShadowTraffic:
        if not 0.0 <= self.percent <= 100.0:
            raise ValueError(f"shadow.percent {self.percent} is outside 0-100")
        if not 1 <= self.max_concurrent <= SHADOW_MAX_CONCURRENT:
            raise ValueError(
                f"shadow.maxConcurrent {self.max_concurrent} is outside 1-{SHADOW_MAX_CONCURRENT}"
            )
        return self


BANDIT_EXPLORE_MAX: Final = 0.5
"""The largest exploration floor a bandit rule may set: above it the rule would mostly route at random."""

Strategy = Literal["weighted", "bandit"]
"""How a rule picks its first target: by weight, or by Thompson sampling over quality feedback."""


class BanditSettings(ContractModel):
    """A bandit rule's settings (schema 3): Thompson sampling over the rule's targets, each a Beta
    posterior fed by quality feedback and failed attempts. It picks only among the targets every hard
    filter kept (residency, health, ejection, budgets, limits); the canary split runs before it."""

    cost_weight: float = 0.0
    """How much cost counts against reward (0-1): a target scores its sampled reward minus
    `costWeight` times its price relative to the rule's dearest target."""
    explore: float = 0.05
    """The least share of picks each eligible target keeps (0-0.5; with n targets at most 1/n)."""

    @model_validator(mode="after")
    def _in_range(self) -> BanditSettings:
        if not 0.0 <= self.cost_weight <= 1.0:
            raise ValueError(f"bandit.costWeight {self.cost_weight} is outside 0-1")
        if not 0.0 <= self.explore <= BANDIT_EXPLORE_MAX:
            raise ValueError(f"bandit.explore {self.explore} is outside 0-{BANDIT_EXPLORE_MAX}")
        return self


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
    # schema 3 (session affinity); left out of the document when unused, so older configs keep their bytes.
    affinity: SessionAffinity | None = Field(default=None, exclude_if=lambda value: value is None)
    """Keeps a conversation on one replica, if set."""
    # schema 3 (shadow traffic); left out of the document when unused, so older configs keep their bytes.
    shadow: ShadowTraffic | None = Field(default=None, exclude_if=lambda value: value is None)
    """Mirrors a share of the rule's requests to another endpoint, if set."""
    # schema 3 (bandit strategy); left out when unused, as affinity is, so older configs keep their bytes.
    strategy: Strategy = Field(default="weighted", exclude_if=lambda value: value == "weighted")
    """How the first target is picked among those the filters kept: `weighted` or `bandit`."""
    bandit: BanditSettings | None = Field(default=None, exclude_if=lambda value: value is None)
    """The bandit's settings; set exactly when `strategy` is `bandit`."""

    @model_validator(mode="after")
    def _bandit_goes_with_strategy(self) -> RuleConfig:
        if (self.strategy == "bandit") != (self.bandit is not None):
            raise ValueError(f"rule {self.name}: bandit settings are set exactly when strategy is bandit")
        return self


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

    kind: Literal["email", "phone", "card", "iban", "pattern"]
    """What to look for; `pattern`: the regular expression `pattern` (RE2 syntax)."""
    data_class: str
    """Data class assigned when found."""
    # Left out of the document when empty, so a config without pattern detectors keeps its bytes and hash.
    name: str = Field(default="", exclude_if=lambda value: not value)
    """Name of a `pattern` detector (reported as source `detector:pattern:<name>`); empty otherwise."""
    pattern: str = Field(default="", exclude_if=lambda value: not value)
    """RE2 regular expression of a `pattern` detector; empty otherwise."""

    @model_validator(mode="after")
    def _pattern_goes_with_kind(self) -> Detector:
        problem = detector_problem(self.kind, self.name, self.pattern)
        if problem:
            raise ValueError(f"{problem[0]} {problem[1]}")
        return self


def detector_problem(kind: str, name: str | None, pattern: str | None) -> tuple[str, str] | None:
    """Why a detector's `name` and `pattern` do not fit its kind: (field, reason), or None. Both are
    required for kind `pattern` (a DNS-label name, a pattern of bounded length) and forbidden otherwise.
    Whether the pattern is valid RE2 is the engine's check (`engine.detectors.detector_problem`)."""
    if kind != "pattern":
        for field, value in (("name", name), ("pattern", pattern)):
            if value:
                return field, f"is only allowed with kind 'pattern' (kind is '{kind}')"
        return None
    if not name:
        return "name", "is required with kind 'pattern'"
    if len(name) > 63 or not _PATTERN_NAME.match(name):
        return "name", f"{name!r:.80} is not a DNS label (lower-case letters, digits, '-'; at most 63)"
    if pattern is None:
        return "pattern", "is required with kind 'pattern'"
    problem = pattern_problem(pattern)
    return ("pattern", problem) if problem else None


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
    """Data class every request carries at least (a floor, like every other signal); empty: `public`."""
    precedence: tuple[str, ...] = ()
    """Defined data classes, strictest first: of all the classes a request's signals give, the first here
    is reported. `public` is always laxest; a class named but not defined is stricter than all. Empty:
    the order of `data_classes`."""

    @model_validator(mode="after")
    def _header_not_hop_by_hop(self) -> Residency:
        problem = hop_by_hop_problem(self.header)
        if problem:
            raise ValueError(f"header {problem}")
        return self

    @model_validator(mode="after")
    def _pattern_detectors_bounded(self) -> Residency:
        names = [d.name for d in self.detectors if d.kind == "pattern"]
        if len(names) > PATTERN_DETECTORS_MAX:
            raise ValueError(f"detectors: {len(names)} of kind 'pattern', at most {PATTERN_DETECTORS_MAX}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"detectors: pattern detector names must be unique ({', '.join(duplicates)})")
        return self


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
    (finish_reason length), `invalidJson` (JSON requested, not returned), `schemaMismatch` (schema 3: the
    answer does not follow the request's JSON schema or its tools' parameter schemas)."""


class Budgets(ContractModel):
    """Limits that drop endpoints which would be too expensive or too slow."""

    max_cost_per_request_usd: float | None = None
    """Estimated cost ceiling for one request (prompt estimate plus max output)."""
    max_latency_ms: int | None = None
    """Endpoints whose observed p95 latency exceeds this are avoided while others remain."""


class TenantLimit(ContractModel):
    """A token-bucket limit applied per tenant, per pod: the workers of one sidecar share its buckets."""

    tenant_tier: str = ""
    """Tenant tier this limit applies to; empty is the default for every tenant."""
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Request rate per tenant."""
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Estimated token rate per tenant."""


FLEET_FAIL_MODES: Final = ("open", "closed")
"""What a policy does while the fleet store is unreachable: `open` keeps serving under each sidecar
process's own limits (and reports it), `closed` refuses the requests its fleet limits cover (503)."""
FLEET_SCOPES: Final = ("namespace", "cluster")
"""Where fleet counters are shared: every sidecar of the namespace, or every sidecar of the cluster that
runs a policy of the same name (one tenant, one limit across namespaces)."""


def spend_budget_problem(hard_usd: float | None, soft_usd: float | None) -> tuple[str, str] | None:
    """Why a spend budget's figures do not fit: (field, reason), or None. Both are non-negative, the hard
    stop is above zero and the soft threshold is not above it."""
    if hard_usd is None:
        return "hardUsd", "is required"
    if not hard_usd > 0:
        return "hardUsd", f"must be above 0 (got {hard_usd})"
    if soft_usd is not None:
        if soft_usd < 0:
            return "softUsd", f"must not be negative (got {soft_usd})"
        if soft_usd > hard_usd:
            return "softUsd", f"{soft_usd} is above hardUsd {hard_usd}: the warning must come first"
    return None


class SpendBudget(ContractModel):
    """A spend budget in US dollars over one calendar period (UTC), priced from the endpoints' prices
    and the upstreams' reported usage."""

    hard_usd: float
    """Spend at which requests are refused (429 `budget_exceeded`) until the period ends."""
    soft_usd: float | None = None
    """Spend from which answers carry `x-modelroute-budget-warning`, a metric counts and the operator
    raises a Warning Event; none for no warning."""

    @model_validator(mode="after")
    def _ordered(self) -> SpendBudget:
        problem = spend_budget_problem(self.hard_usd, self.soft_usd)
        if problem:
            raise ValueError(f"{problem[0]} {problem[1]}")
        return self


class FleetQuota(ContractModel):
    """Limits counted across every sidecar of the fleet store's scope."""

    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Requests per calendar minute."""
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None
    """Tokens per calendar minute: estimated at admission, corrected by the upstream's usage."""
    daily: SpendBudget | None = None
    """USD per UTC day."""
    monthly: SpendBudget | None = None
    """USD per UTC calendar month."""


class FleetTenantLimit(FleetQuota):
    """A fleet quota for each tenant of one tier."""

    tenant_tier: str = ""
    """Tenant tier this quota applies to; empty is the default for every tenant."""


class FleetLimits(ContractModel):
    """Limits and spend budgets shared by the whole fleet through the fleet store (Redis or Valkey);
    where the store is and how to reach it is the sidecar's setting, never the config's."""

    scope: Literal["namespace", "cluster"] = "namespace"
    """`namespace`: counters shared by the namespace's sidecars; `cluster`: by every sidecar running a
    policy of this name."""
    fail_mode: Literal["open", "closed"] = "open"
    """While the store is unreachable: `open` serves under per-process limits and says so (metric,
    stats, the policy's FleetStore condition); `closed` refuses covered requests with 503."""
    tenants: tuple[FleetTenantLimit, ...] = ()
    """Per-tenant quotas, chosen by tier like `tenantLimits`."""
    policy: FleetQuota | None = None
    """One quota for all tenants of the policy together."""


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
    # Left out of the document when unset, so a config without fleet limits keeps its bytes and hash.
    fleet_limits: FleetLimits | None = Field(default=None, exclude_if=lambda value: value is None)
    """Fleet-wide limits and spend budgets (schema 3); none for per-pod limits only."""
    # schema 3 (learned routing)
    difficulty_models: tuple[DifficultyModel, ...] = Field(default=(), exclude_if=lambda value: not value)
    """Learned difficulty models the rules may name, sorted by name."""
    semantic_routes: tuple[SemanticRoute, ...] = Field(
        default=(), exclude_if=lambda value: not value, max_length=SEMANTIC_ROUTES_MAX
    )
    """Routes by meaning the rules may match on."""

    @model_validator(mode="after")
    def _learned_references(self) -> PolicyConfig:
        models = {model.name for model in self.difficulty_models}
        routes = {route.name for route in self.semantic_routes}
        for i, rule in enumerate(self.rules):
            scorer = rule.match.complexity_scorer
            if scorer and scorer != HEURISTIC_SCORER and scorer not in models:
                raise ValueError(
                    f"rules[{i}].match.complexityScorer {scorer!r} is not a difficultyModels name"
                )
            semantic = rule.match.semantic
            if semantic is not None and semantic.route not in routes:
                raise ValueError(
                    f"rules[{i}].match.semantic.route {semantic.route!r} is not a semanticRoutes name"
                )
        return self


class RouterConfig(ContractModel):
    """A namespace's complete routing configuration, as the sidecars run it."""

    schema_version: Literal[1, 2, 3] = SCHEMA_VERSION
    """Schema of the document (`schemas`): the operator compiles the newest; a config read from a
    document of an older schema keeps its schema, so it hashes and serialises as that document did."""
    namespace: str
    """Namespace the configuration was compiled for."""
    version: str = ""
    """Content hash (`sha256:` + 16 hex) of everything else; set by `seal`, checked by `verify`."""
    sequence: int = Field(default=0, ge=0)
    """Place in the namespace's order of configs, assigned by the operator: one more on every change of
    content, covered by the hash. A sidecar never applies a lower sequence than the one it runs (see
    `config_order`). 0 means unsequenced (a config written before sequences existed): it is older than
    every sequenced config, and unsequenced configs among themselves are not ordered."""
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

    @model_validator(mode="after")
    def _fits_its_schema(self) -> RouterConfig:
        # A config of an older schema holds nothing that schema lacks (its document could not carry it).
        if self.schema_version != SCHEMA_VERSION:
            problems = schema_problems(self.model_dump(mode="json", by_alias=True), self.schema_version)
            if problems:
                raise ValueError("; ".join(problems[:5]))
        return self

    def document(self) -> dict[str, Any]:
        """The JSON document of this config in its schema (`schema_version`)."""
        body = self.model_dump(mode="json", by_alias=True)
        return body if self.schema_version == SCHEMA_VERSION else strip_to(body, self.schema_version)

    def content_hash(self) -> str:
        """Hash of the canonical JSON of everything but `version`: equal content, equal hash."""
        # an unsequenced config hashes as it did before the field existed, so stored old configs verify
        return document_hash(self.document())

    def render(self, schema: int) -> Rendering | SchemaGap:
        """This config as a document of `schema` (its own or an older one), or why it cannot be."""
        return render_document(self.document(), schema)

    def render_for(self, reads: Iterable[int]) -> Rendering | SchemaGap:
        """This config for a sidecar that reads the schemas `reads` (`schemas.render_for`)."""
        return render_for(self.document(), reads)

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
        return canonical_json(self.document())

    @classmethod
    def from_json(cls, text: str | bytes, sidecar_ports: Iterable[int] = ()) -> RouterConfig:
        """Parse and verify a document produced by `to_json`; `sidecar_ports` are the reading sidecar's
        own ports when it knows them (replica URLs may not point there)."""
        context = {"sidecar_ports": tuple(sidecar_ports)} if sidecar_ports else None
        config = cls.model_validate_json(text, context=context)
        config.verify()
        return config


ConfigOrder = Literal["newer", "same", "older", "conflict"]


def config_order(live: RouterConfig | None, incoming: RouterConfig) -> ConfigOrder:
    """Where `incoming` stands against the `live` config: the one ordering rule of configs.

    `same` (equal hash) is a no-op; `newer` may be applied; `older` (a lower sequence) and `conflict`
    (an equal sequence with another hash: two configs claiming one place) must be refused. Unsequenced
    configs (sequence 0) are older than every sequenced one and are not ordered among themselves, so a
    sidecar keeps taking them from an operator that predates sequences.
    """
    if live is None:
        return "newer"
    if incoming.version == live.version:
        return "same"
    if incoming.sequence > live.sequence:
        return "newer"
    if incoming.sequence < live.sequence:
        return "older"
    return "newer" if incoming.sequence == 0 else "conflict"


def short_version(version: str) -> str:
    """The hash part a person reads in columns and headers (`sha256:ab12...` -> `ab12...`)."""
    return version.removeprefix("sha256:")
