"""Names both sides (and the operator's pure and I/O layers) agree on: labels, annotations, the
ConfigMap holding a namespace's live config, and the data class of unrestricted requests."""

from __future__ import annotations

from typing import Final

GROUP: Final = "modelroute.dev"
"""API group of the CRDs, and prefix of every label and annotation below."""

PUBLIC_CLASS: Final = "public"
"""The data class of a request no signal restricts; reserved (no policy may define it)."""

SIDECAR_LABEL: Final = f"{GROUP}/router"
SIDECAR_LABEL_VALUE: Final = "sidecar"
"""Pod label the injector sets and the operator selects sidecars by."""
ADMIN_PORT_ANNOTATION: Final = f"{GROUP}/admin-port"
"""Pod annotation naming the sidecar's admin port (default `admin.DEFAULT_ADMIN_PORT`)."""

CONFIGMAP_NAME: Final = "modelroute-router-config"
"""Per-namespace ConfigMap the operator writes the live RouterConfig into (and sidecars mount)."""
CONFIG_KEY: Final = "config.json"
"""Key of the schema-1 RouterConfig document in that ConfigMap, the one key sidecars of schema 1 mount;
each later schema has its own key (`schemas.config_key`)."""
CONFIG_VERSION_ANNOTATION: Final = f"{GROUP}/config-version"
"""Annotation on that ConfigMap with the config's content hash."""
