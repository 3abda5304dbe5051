"""Value types of the routing engine: what a request looks like to it, and what it decides.

The engine is pure: `Router.decide(features, health)` reads these and returns a `Decision`. The aiohttp
views build `RequestFeatures` once per request and walk `Decision.plan`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from .affinity import Affinity
    from .bandit import BanditPick
    from .shadow import ShadowPick

Api = Literal["chat", "completions", "embeddings", "responses"]
"""The OpenAI APIs the sidecar routes: chat completions, completions, embeddings and the Responses API."""


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """Everything the engine may look at in a request, extracted once by `features.extract_features`."""

    request_id: str
    api: Api
    model: str
    """Requested virtual model (the body's `model`)."""
    headers: Mapping[str, str]
    """Request headers, names lower-cased."""
    metadata: Mapping[str, str]
    """tenant, tier, task, domain, language, ...: from `x-modelroute-<key>` headers or body `metadata`."""
    prompt_text: str
    """Concatenated text of the prompt (messages / prompt / input), for detectors and complexity."""
    prompt_tokens: int
    """Estimated prompt tokens."""
    max_output_tokens: int | None = None
    stream: bool = False
    needs_tools: bool = False
    needs_json: bool = False
    declared_data_class: str | None = None
    """Data class from the policy's residency header, when the client declared one."""
    scan_text: str = ""
    """Every string the request carries (all message fields, `user`, metadata, any other body string and
    key), for the detectors; empty: the detectors read `prompt_text`."""
    tenant_source: str = ""
    """`key` when the tenant comes from the client's API key, `asserted` when the client claims it."""


class HealthView(Protocol):
    """The sidecar's own view of replica health (passive ejection) and observed latency."""

    def is_ejected(self, endpoint: str, replica: str) -> bool: ...

    def any_ejected(self) -> bool:
        """False when no replica at all is ejected: the ejection filter then skips its per-replica look."""
        ...

    def p95_latency_ms(self, endpoint: str) -> float | None: ...


class DropReason(StrEnum):
    """Why a candidate replica was not chosen; every dropped candidate has exactly one."""

    RESIDENCY_REGION = "residency-region"
    RESIDENCY_COMPLIANCE = "residency-compliance"
    UNHEALTHY = "unhealthy"
    EJECTED = "ejected"
    ZERO_WEIGHT = "zero-weight"
    CAPABILITY = "capability"
    CONTEXT_WINDOW = "context-window"
    COST_BUDGET = "cost-budget"
    LATENCY_BUDGET = "latency-budget"
    CANARY_OTHER_SIDE = "canary-other-side"


class Role(StrEnum):
    """Why a replica is in the plan."""

    PRIMARY = "primary"
    RETRY = "retry"
    FALLBACK = "fallback"
    ESCALATION = "escalation"
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class Choice:
    """One replica the proxy may try, with everything needed to call it."""

    endpoint: str
    replica: str
    region: str
    url: str
    upstream_model: str
    role: Role


@dataclass(frozen=True, slots=True)
class Dropped:
    endpoint: str
    replica: str
    region: str
    reason: DropReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DecisionError:
    """Why no upstream can be called: becomes an OpenAI-style error response."""

    status: int
    """HTTP status: 404 unknown model, 503 nothing compliant and healthy, 400 request unsatisfiable."""
    code: str
    """Machine-readable code, e.g. `model_not_found`, `no_compliant_endpoint`, `no_healthy_endpoint`."""
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one request; the views log it, put it in headers and follow `plan`."""

    policy: str = ""
    rule: str = ""
    data_class: str = "public"
    data_class_source: str = ""
    """Where the data class came from: header, tenant, detector:<kind>, detector:pattern:<name>, default,
    or empty for public."""
    data_classes: tuple[str, ...] = ()
    """Every non-public class a signal gave, sorted: every replica in the plan satisfies all of them."""
    signals: tuple[tuple[str, str], ...] = ()
    """(source, class) of every classification signal."""
    complexity: int = 0
    complexity_scorer: str = ""
    """Which scorer `complexity` comes from (`heuristic` or a learned model's name); empty: not scored."""
    semantic_route: str = ""
    """The best semantic route, when a rule needed it."""
    semantic_similarity: float = 0.0
    plan: tuple[Choice, ...] = ()
    """Replicas to try in order: the primary, then retries, then fallbacks. All residency-compliant."""
    escalation: tuple[Choice, ...] = ()
    """Replicas to try when an answer fails a quality check. All residency-compliant."""
    dropped: tuple[Dropped, ...] = ()
    canary: str = ""
    canary_side: Literal["", "stable", "candidate"] = ""
    error: DecisionError | None = None
    notes: tuple[str, ...] = field(default=())
    affinity: Affinity | None = None
    """What session affinity did (kept, new or broken, and why), when the rule has it and the request
    names a session."""
    shadow: ShadowPick | None = None
    """Where the request's shadow copy goes (or why it cannot), when its rule mirrors it."""
    # A class attribute, not a field: every field costs each Decision a store in `__init__` (~100 ns), and
    # a weighted rule's decision must cost what it did before the bandit existed. `BanditDecision` sets it.
    bandit: ClassVar[BanditPick | None] = None
    """What a `bandit` rule's strategy picked first (the arm, how, its sampled reward); None for weighted
    rules."""


@dataclass(frozen=True, slots=True)
class BanditDecision(Decision):
    """The decision of a `bandit` rule: a Decision that also says what the strategy picked."""

    bandit: BanditPick | None = None  # type: ignore[misc]  # the field behind Decision's class attribute
