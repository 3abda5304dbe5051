"""The sidecar's environment variables: what the operator's injector sets and the sidecar's settings read.

Each flag of `modelroute-sidecar` takes its default from one of these (flags win, so a developer can run
the binary by hand); the injected container sets them from the InjectionSettings and the downward API.
"""

from __future__ import annotations

from typing import Final

HOST: Final = "MODELROUTE_HOST"
PORT: Final = "MODELROUTE_PORT"
ADMIN_HOST: Final = "MODELROUTE_ADMIN_HOST"
ADMIN_PORT: Final = "MODELROUTE_ADMIN_PORT"
ADMIN_TOKEN: Final = "MODELROUTE_ADMIN_TOKEN"
"""The admin token itself (for a hand-run sidecar; injected pods mount it as a file instead)."""
ADMIN_TOKEN_FILE: Final = "MODELROUTE_ADMIN_TOKEN_FILE"
CONFIG_FILE: Final = "MODELROUTE_CONFIG_FILE"
CONFIG_POLL_SECONDS: Final = "MODELROUTE_CONFIG_POLL_SECONDS"
NAMESPACE: Final = "MODELROUTE_NAMESPACE"
REGION: Final = "MODELROUTE_REGION"
POD_NAME: Final = "MODELROUTE_POD_NAME"
SECRETS_DIR: Final = "MODELROUTE_SECRETS_DIR"
CLIENT_KEYS_FILE: Final = "MODELROUTE_CLIENT_KEYS_FILE"
MAX_BODY_BYTES: Final = "MODELROUTE_MAX_BODY_BYTES"
MAX_LINE_BYTES: Final = "MODELROUTE_MAX_LINE_BYTES"
MAX_HEAD_BYTES: Final = "MODELROUTE_MAX_HEAD_BYTES"
HEAD_TIMEOUT_SECONDS: Final = "MODELROUTE_HEAD_TIMEOUT_SECONDS"
BODY_TIMEOUT_SECONDS: Final = "MODELROUTE_BODY_TIMEOUT_SECONDS"
MAX_CONNECTIONS: Final = "MODELROUTE_MAX_CONNECTIONS"
AUDIT_LOG: Final = "MODELROUTE_AUDIT_LOG"
AUDIT_PROMPTS: Final = "MODELROUTE_AUDIT_PROMPTS"
WORKERS: Final = "MODELROUTE_WORKERS"
UPSTREAM_CONNECTIONS_PER_HOST: Final = "MODELROUTE_UPSTREAM_CONNECTIONS_PER_HOST"
UPSTREAM_KEEPALIVE_SECONDS: Final = "MODELROUTE_UPSTREAM_KEEPALIVE_SECONDS"
UPSTREAM_MAX_BODY_BYTES: Final = "MODELROUTE_UPSTREAM_MAX_BODY_BYTES"
LOG_LEVEL: Final = "MODELROUTE_LOG_LEVEL"
LOG_FORMAT: Final = "MODELROUTE_LOG_FORMAT"
"""`text` (default) or `json`: one JSON object per line (timestamp, severity, logger, message)."""
POD_NAMESPACE_FALLBACK: Final = "POD_NAMESPACE"
"""Read when MODELROUTE_NAMESPACE is unset (a common downward-API name)."""
POD_NAME_FALLBACK: Final = "POD_NAME"
"""Read when MODELROUTE_POD_NAME is unset."""
