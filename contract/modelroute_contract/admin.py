"""The sidecar's admin protocol: ports, paths and the bearer-token scheme the operator and sidecar share.

The operator pushes RouterConfigs to `PUT /config`, reads `GET /config/version` and `GET /stats` on each
sidecar's admin port with `Authorization: Bearer <token>`; the token lives in a per-namespace Secret the
operator creates and the injected sidecar mounts. `/healthz` and `/metrics` need no token.
"""

from __future__ import annotations

from typing import Final

DEFAULT_DATA_PORT: Final = 8080
"""The sidecar's data port when nothing configures it (settings.py; a test keeps the two in step)."""
INJECTED_DATA_PORT: Final = 15080
"""The data port the operator injects sidecars with by default (InjectionSettings.proxy_port)."""
DEFAULT_ADMIN_PORT: Final = 9901
"""Admin port, which also serves `/metrics` (settings.py, InjectionSettings.admin_port)."""
SIDECAR_PORTS: Final = (DEFAULT_DATA_PORT, DEFAULT_ADMIN_PORT, INJECTED_DATA_PORT)
"""Ports a sidecar listens on unless configured otherwise: a replica URL at one of them on a loopback
or unspecified host would point the router at itself (a loop, or the admin API with the router's
reach)."""

CONFIG_PATH: Final = "/config"
"""PUT (or POST) a RouterConfig document; 200 with the applied version, 4xx with the reason."""
VERSION_PATH: Final = "/config/version"
"""GET the applied version, where it came from, and `acceptedSchemaVersions`: the RouterConfig schemas
the sidecar reads (absent in sidecars of schema 1, which read only that; see `schemas`)."""
STATS_PATH: Final = "/stats"
"""GET the cumulative attempt figures (`stats.StatsSnapshot`)."""
METRICS_PATH: Final = "/metrics"
"""Prometheus exposition; open (no token) so Prometheus can scrape it."""
HEALTHZ_PATH: Final = "/healthz"
"""Liveness; open."""
OPEN_PATHS: Final = frozenset({HEALTHZ_PATH, METRICS_PATH})
"""Admin paths served without the token."""

AUTHORIZATION_HEADER: Final = "Authorization"
TOKEN_SCHEME: Final = "Bearer"
TOKEN_SECRET: Final = "modelroute-sidecar-admin"
"""Per-namespace Secret holding the admin token (created by the operator, mounted into sidecars)."""
TOKEN_KEY: Final = "token"
"""Key of the token in that Secret, and the file name it is mounted as."""


def authorization(token: str) -> dict[str, str]:
    """The request header carrying the admin token."""
    return {AUTHORIZATION_HEADER: f"{TOKEN_SCHEME} {token}"}


def presented_token(header_value: str) -> str:
    """The token a request's `Authorization` header value presents ("" when none)."""
    return header_value.removeprefix(f"{TOKEN_SCHEME} ").strip()
