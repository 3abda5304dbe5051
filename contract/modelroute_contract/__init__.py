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
"""

from . import admin, constants, env, schemas, stats
from .admin import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_DATA_PORT,
    INJECTED_DATA_PORT,
    SIDECAR_PORTS,
)
from .config import (
    COMPLEXITY_MAX,
    COMPLEXITY_MIN,
    FLEET_FAIL_MODES,
    FLEET_SCOPES,
    HOP_BY_HOP_HEADERS,
    METADATA_KEY_PATTERN,
    PATTERN_DETECTORS_MAX,
    PATTERN_MAX_LENGTH,
    PATTERN_NAME,
    REQUEST_TOKEN_COUNT_FIELDS,
    Budgets,
    CanarySplit,
    Capabilities,
    ConfigOrder,
    ContractModel,
    CredentialRef,
    DataClassRule,
    Detector,
    EndpointConfig,
    FleetLimits,
    FleetQuota,
    FleetTenantLimit,
    HeaderMatch,
    Health,
    Locality,
    PolicyConfig,
    Pricing,
    RangeMatch,
    ReplicaConfig,
    Residency,
    Resilience,
    RouterConfig,
    RuleConfig,
    RuleMatch,
    SpendBudget,
    Target,
    TenantLimit,
    TlsConfig,
    config_order,
    detector_problem,
    hop_by_hop_problem,
    pattern_problem,
    short_version,
    spend_budget_problem,
    token_count_problem,
)
from .constants import (
    PUBLIC_CLASS,
)
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
from .stats import (
    LATENCY_BUCKETS_MS,
    EndpointFigures,
    Figures,
    ReplicaFigures,
    StatsSnapshot,
    histogram_quantile,
)
from .urls import (
    connect_address_problem,
    replica_url_problem,
)

__all__ = [
    "ACCEPTED_SCHEMA_VERSIONS",
    "COMPLEXITY_MAX",
    "COMPLEXITY_MIN",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_DATA_PORT",
    "FLEET_FAIL_MODES",
    "FLEET_SCOPES",
    "HOP_BY_HOP_HEADERS",
    "INJECTED_DATA_PORT",
    "LATENCY_BUCKETS_MS",
    "METADATA_KEY_PATTERN",
    "PATTERN_DETECTORS_MAX",
    "PATTERN_MAX_LENGTH",
    "PATTERN_NAME",
    "PUBLIC_CLASS",
    "REQUEST_TOKEN_COUNT_FIELDS",
    "SCHEMA_VERSION",
    "SIDECAR_PORTS",
    "Budgets",
    "CanarySplit",
    "Capabilities",
    "ConfigOrder",
    "ContractModel",
    "CredentialRef",
    "DataClassRule",
    "Detector",
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
    "SpendBudget",
    "StatsSnapshot",
    "Target",
    "TenantLimit",
    "TlsConfig",
    "admin",
    "config_key",
    "config_order",
    "connect_address_problem",
    "constants",
    "detector_problem",
    "env",
    "histogram_quantile",
    "hop_by_hop_problem",
    "pattern_problem",
    "replica_url_problem",
    "residency_violation",
    "schemas",
    "short_version",
    "spend_budget_problem",
    "stats",
    "token_count_problem",
]
