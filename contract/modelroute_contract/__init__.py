"""The contract between the operator and the sidecar, owned by neither: the RouterConfig (`config`),
the residency predicate (`residency`), the replica URL rules (`urls`), the `/stats` document (`stats`),
the admin protocol (`admin`), the sidecar's environment variables (`env`) and shared names (`constants`).

The RouterConfig is versioned by schema: `schemas` says which schema the operator writes
(`SCHEMA_VERSION`), which ones a sidecar reads (`ACCEPTED_SCHEMA_VERSIONS`), and how a config is
rendered for an older sidecar or why it cannot be. Sidecars refuse unknown fields, so adding a field (or
a new value of one) to any model here takes, in one change: a bump of `SCHEMA_VERSION` (and of
`ACCEPTED_SCHEMA_VERSIONS` and `RouterConfig.schema_version`), a `schemas.Step` saying for each new field
whether an older sidecar may do without it (never for residency, TLS or anything that protects data or
money), new fixtures under `tests/contract/fixtures/v<N>/` with the old ones left as they are, and the
golden configs regenerated. `tests/contract` fails when a field appears without its step.

It imports only pydantic and the standard library (an import-linter contract in pyproject.toml keeps it
so), so either side can upgrade without dragging the other's dependencies along.

`stats` (and the names re-exported from it) is imported on first use: its models cost a sidecar ~1.5 MiB
of resident memory, and only `/stats` needs them. Its histogram math lives apart, in `histogram`.
"""

from typing import TYPE_CHECKING, Any

from . import admin, constants, env, schemas
from .admin import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_DATA_PORT,
    INJECTED_DATA_PORT,
    SIDECAR_PORTS,
)
from .config import (
    AFFINITY_MAX_SESSIONS,
    AFFINITY_TTL_MAX_SECONDS,
    BANDIT_EXPLORE_MAX,
    BUILTIN_DIFFICULTY_HEADS,
    BUILTIN_DIFFICULTY_MODEL,
    BUILTIN_DIFFICULTY_SHA256,
    BUILTIN_DIFFICULTY_VERSION,
    COMPLEXITY_MAX,
    COMPLEXITY_MIN,
    DIFFICULTY_HEAD_MAX_BYTES,
    FLEET_FAIL_MODES,
    FLEET_SCOPES,
    HEURISTIC_SCORER,
    HOP_BY_HOP_HEADERS,
    METADATA_KEY_PATTERN,
    PATTERN_DETECTORS_MAX,
    PATTERN_MAX_LENGTH,
    PATTERN_NAME,
    PROVIDER_APIS,
    PROVIDER_AUTH,
    PROVIDER_JSON_MODE,
    PROVIDERS,
    REQUEST_TOKEN_COUNT_FIELDS,
    SEMANTIC_EXAMPLES_MAX,
    SEMANTIC_ROUTES_MAX,
    SHADOW_DEFAULT_CONCURRENT,
    SHADOW_MAX_CONCURRENT,
    BanditSettings,
    Budgets,
    CanarySplit,
    Capabilities,
    ConfigOrder,
    ContractModel,
    CredentialRef,
    DataClassRule,
    Detector,
    DifficultyModel,
    EndpointConfig,
    FleetLimits,
    FleetQuota,
    FleetTenantLimit,
    HeaderMatch,
    Health,
    Locality,
    PolicyConfig,
    Pricing,
    Provider,
    ProviderSettings,
    RangeMatch,
    ReplicaConfig,
    Residency,
    Resilience,
    RouterConfig,
    RuleConfig,
    RuleMatch,
    SemanticMatch,
    SemanticRoute,
    SessionAffinity,
    ShadowTraffic,
    SpendBudget,
    Strategy,
    Target,
    TenantLimit,
    TlsConfig,
    config_order,
    detector_problem,
    difficulty_head_problem,
    hop_by_hop_problem,
    pattern_problem,
    provider_settings_problem,
    short_version,
    spend_budget_problem,
    token_count_problem,
)
from .constants import (
    PUBLIC_CLASS,
)
from .histogram import LATENCY_BUCKETS_MS, histogram_quantile
from .residency import (
    residency_violation,
)
from .schemas import (
    ACCEPTED_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    Rendering,
    SchemaGap,
    config_key,
)
from .urls import (
    connect_address_problem,
    replica_url_problem,
)

__all__ = [
    "ACCEPTED_SCHEMA_VERSIONS",
    "AFFINITY_MAX_SESSIONS",
    "AFFINITY_TTL_MAX_SECONDS",
    "BANDIT_EXPLORE_MAX",
    "BUILTIN_DIFFICULTY_HEADS",
    "BUILTIN_DIFFICULTY_MODEL",
    "BUILTIN_DIFFICULTY_SHA256",
    "BUILTIN_DIFFICULTY_VERSION",
    "COMPLEXITY_MAX",
    "COMPLEXITY_MIN",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_DATA_PORT",
    "DIFFICULTY_HEAD_MAX_BYTES",
    "FLEET_FAIL_MODES",
    "FLEET_SCOPES",
    "HEURISTIC_SCORER",
    "HOP_BY_HOP_HEADERS",
    "INJECTED_DATA_PORT",
    "LATENCY_BUCKETS_MS",
    "METADATA_KEY_PATTERN",
    "PATTERN_DETECTORS_MAX",
    "PATTERN_MAX_LENGTH",
    "PATTERN_NAME",
    "PROVIDERS",
    "PROVIDER_APIS",
    "PROVIDER_AUTH",
    "PROVIDER_JSON_MODE",
    "PUBLIC_CLASS",
    "REQUEST_TOKEN_COUNT_FIELDS",
    "SCHEMA_VERSION",
    "SEMANTIC_EXAMPLES_MAX",
    "SEMANTIC_ROUTES_MAX",
    "SHADOW_DEFAULT_CONCURRENT",
    "SHADOW_MAX_CONCURRENT",
    "SIDECAR_PORTS",
    "BanditSettings",
    "Budgets",
    "CanarySplit",
    "Capabilities",
    "ConfigOrder",
    "ContractModel",
    "CredentialRef",
    "DataClassRule",
    "Detector",
    "DifficultyModel",
    "EndpointConfig",
    "EndpointFigures",
    "Figures",
    "FleetLimits",
    "FleetQuota",
    "FleetTenantLimit",
    "HeaderMatch",
    "Health",
    "Locality",
    "PolicyConfig",
    "Pricing",
    "Provider",
    "ProviderSettings",
    "RangeMatch",
    "Rendering",
    "ReplicaConfig",
    "ReplicaFigures",
    "Residency",
    "Resilience",
    "RouterConfig",
    "RuleConfig",
    "RuleMatch",
    "SchemaGap",
    "SemanticMatch",
    "SemanticRoute",
    "SessionAffinity",
    "ShadowTraffic",
    "SpendBudget",
    "StatsSnapshot",
    "Strategy",
    "Target",
    "TenantLimit",
    "TlsConfig",
    "admin",
    "config_key",
    "config_order",
    "connect_address_problem",
    "constants",
    "detector_problem",
    "difficulty_head_problem",
    "env",
    "histogram_quantile",
    "hop_by_hop_problem",
    "pattern_problem",
    "provider_settings_problem",
    "replica_url_problem",
    "residency_violation",
    "schemas",
    "short_version",
    "spend_budget_problem",
    "stats",
    "token_count_problem",
]

if TYPE_CHECKING:
    from . import stats
    from .stats import EndpointFigures, Figures, ReplicaFigures, StatsSnapshot

_STATS_NAMES = frozenset({"EndpointFigures", "Figures", "ReplicaFigures", "StatsSnapshot"})


def __getattr__(name: str) -> Any:
    """`stats` and its models, imported on first use: a sidecar builds them only when `/stats` is asked
    for (~1.5 MiB of resident memory otherwise, for validators a pod without a canary never runs)."""
    if name == "stats" or name in _STATS_NAMES:
        import importlib

        module = importlib.import_module(".stats", __name__)
        return module if name == "stats" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
