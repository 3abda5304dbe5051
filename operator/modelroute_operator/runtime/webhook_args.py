"""The webhook server's settings and command line: flags with `MODELROUTE_*` environment defaults, for any
entry point (`modelroute-operator`, `python -m modelroute_operator.runtime.webhook_server serve`)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelroute_operator.logic.injection import (
    FleetStoreSettings,
    InjectionSettings,
)
from modelroute_operator.logic.validation import Enforcement, ValidationSettings


@dataclass(frozen=True)
class WebhookSettings:
    """Where the server listens, its certificate, and what the webhooks do."""

    cert_file: Path
    key_file: Path
    injection: InjectionSettings
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    host: str = "0.0.0.0"
    port: int = 9443
    cert_reload_seconds: float = 60.0


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
"""Proxy variables the injected sidecar gets when the operator is told them."""


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The webhook server's flags (each defaulting to a `MODELROUTE_*` variable), for any entry point."""
    e = os.environ if environ is None else environ
    defaults = InjectionSettings(image="")
    group = parser.add_argument_group("admission webhooks")

    def flag(name: str, env: str, default: object, kind: Callable[[str], Any] = str, **extra: Any) -> None:
        value = kind(e.get(env, str(default)))
        group.add_argument(name, type=kind, default=value, help=f"(env {env})", **extra)

    flag("--webhook-port", "MODELROUTE_WEBHOOK_PORT", 0, int)
    flag("--webhook-host", "MODELROUTE_WEBHOOK_HOST", "0.0.0.0")
    flag("--webhook-cert-dir", "MODELROUTE_WEBHOOK_CERT_DIR", "/etc/modelroute/webhook")
    flag("--webhook-cert-file", "MODELROUTE_WEBHOOK_CERT_FILE", "")  # default: <cert dir>/tls.crt
    flag("--webhook-key-file", "MODELROUTE_WEBHOOK_KEY_FILE", "")  # default: <cert dir>/tls.key
    choices = [m.value for m in Enforcement]
    flag("--webhook-missing-references", "MODELROUTE_WEBHOOK_MISSING_REFERENCES", "Refuse", choices=choices)
    flag("--webhook-referenced-deletes", "MODELROUTE_WEBHOOK_REFERENCED_DELETES", "Refuse", choices=choices)
    flag("--sidecar-image", "MODELROUTE_SIDECAR_IMAGE", "modelroute/sidecar:latest")
    flag("--sidecar-pull-policy", "MODELROUTE_SIDECAR_IMAGE_PULL_POLICY", defaults.image_pull_policy)
    flag("--sidecar-port", "MODELROUTE_SIDECAR_PORT", defaults.proxy_port, int)
    flag("--sidecar-admin-port", "MODELROUTE_SIDECAR_ADMIN_PORT", defaults.admin_port, int)
    flag("--sidecar-admin-port-name", "MODELROUTE_SIDECAR_ADMIN_PORT_NAME", defaults.admin_port_name)
    flag("--sidecar-region", "MODELROUTE_SIDECAR_REGION", "")
    flag("--sidecar-region-label", "MODELROUTE_SIDECAR_REGION_LABEL", defaults.region_label)
    flag("--sidecar-workers", "MODELROUTE_SIDECAR_WORKERS", defaults.workers, int)
    flag("--sidecar-log-level", "MODELROUTE_SIDECAR_LOG_LEVEL", defaults.log_level)
    formats = ["text", "json"]
    flag("--sidecar-log-format", "MODELROUTE_SIDECAR_LOG_FORMAT", defaults.log_format, choices=formats)
    flag(
        "--sidecar-resources", "MODELROUTE_SIDECAR_RESOURCES", json.dumps(defaults.resources), parse_resources
    )
    flag("--sidecar-run-as-user", "MODELROUTE_SIDECAR_RUN_AS_USER", defaults.run_as_user, int)
    flag("--sidecar-native", "MODELROUTE_SIDECAR_NATIVE", "true", choices=["true", "false"])
    # the fleet store of `fleetLimits`: the URL, and Secrets (in each app namespace) by name and key
    flag("--sidecar-fleet-store-url", "MODELROUTE_SIDECAR_FLEET_STORE_URL", "")
    flag("--sidecar-fleet-store-username", "MODELROUTE_SIDECAR_FLEET_STORE_USERNAME", "")
    flag("--sidecar-fleet-store-password-secret", "MODELROUTE_SIDECAR_FLEET_STORE_PASSWORD_SECRET", "")
    flag("--sidecar-fleet-store-password-key", "MODELROUTE_SIDECAR_FLEET_STORE_PASSWORD_KEY", "password")
    flag("--sidecar-fleet-store-ca-secret", "MODELROUTE_SIDECAR_FLEET_STORE_CA_SECRET", "")
    flag("--sidecar-fleet-store-ca-key", "MODELROUTE_SIDECAR_FLEET_STORE_CA_KEY", "ca.crt")
    for variable in PROXY_VARIABLES:  # the sidecar's outbound proxy for upstream calls
        flag(f"--sidecar-{variable.lower().replace('_', '-')}", f"MODELROUTE_SIDECAR_{variable}", "")


def parse_resources(text: str) -> dict[str, dict[str, str]]:
    """`{"requests": {"cpu": "50m"}, "limits": {...}}` as JSON (Helm's `toJson` of the values)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if (
        not isinstance(value, Mapping)
        or not set(value) <= {"requests", "limits"}
        or not all(isinstance(q, Mapping) for q in value.values() if q is not None)
    ):
        raise argparse.ArgumentTypeError("expected a JSON object with `requests` and/or `limits` maps")
    # Helm renders `cpu: 1` as a number; Kubernetes quantities are strings.
    return {kind: {k: str(v) for k, v in (quantities or {}).items()} for kind, quantities in value.items()}


def fleet_store_from_args(args: argparse.Namespace) -> FleetStoreSettings | None:
    """The injected sidecars' fleet store, or None when no URL is given."""
    url = args.sidecar_fleet_store_url
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://")):
        raise SystemExit("--sidecar-fleet-store-url must be a redis:// or rediss:// URL")
    if "@" in url.partition("://")[2].split("/", 1)[0]:
        raise SystemExit("--sidecar-fleet-store-url must not carry user-info: name a password Secret")
    return FleetStoreSettings(
        url=url,
        username=args.sidecar_fleet_store_username,
        password_secret=args.sidecar_fleet_store_password_secret,
        password_key=args.sidecar_fleet_store_password_key,
        ca_secret=args.sidecar_fleet_store_ca_secret,
        ca_key=args.sidecar_fleet_store_ca_key,
    )


def sidecar_ports_from_args(args: argparse.Namespace) -> tuple[int, ...]:
    """The ports injected sidecars listen on (`--sidecar-port`, `--sidecar-admin-port`; the admin port
    also serves metrics), which replica URLs may not point at on loopback."""
    return tuple(sorted({args.sidecar_port, args.sidecar_admin_port} - {0}))


def settings_from_args(args: argparse.Namespace) -> WebhookSettings | None:
    """The webhook settings from parsed flags; None when `--webhook-port` is 0 (webhooks off)."""
    if not args.webhook_port:
        return None
    cert_dir = Path(args.webhook_cert_dir)
    return WebhookSettings(
        cert_file=Path(args.webhook_cert_file) if args.webhook_cert_file else cert_dir / "tls.crt",
        key_file=Path(args.webhook_key_file) if args.webhook_key_file else cert_dir / "tls.key",
        host=args.webhook_host,
        port=args.webhook_port,
        validation=ValidationSettings(
            missing_references=Enforcement(args.webhook_missing_references),
            referenced_deletes=Enforcement(args.webhook_referenced_deletes),
            sidecar_ports=sidecar_ports_from_args(args),
        ),
        injection=InjectionSettings(
            image=args.sidecar_image,
            image_pull_policy=args.sidecar_pull_policy,
            proxy_port=args.sidecar_port,
            admin_port=args.sidecar_admin_port,
            admin_port_name=args.sidecar_admin_port_name,
            region=args.sidecar_region,
            region_label=args.sidecar_region_label,
            workers=args.sidecar_workers,
            log_level=args.sidecar_log_level,
            log_format=args.sidecar_log_format,
            resources={k: v for k, v in args.sidecar_resources.items() if v},
            run_as_user=args.sidecar_run_as_user,
            native_sidecar=args.sidecar_native == "true",
            fleet_store=fleet_store_from_args(args),
            upstream_proxy={
                variable: value
                for variable in PROXY_VARIABLES
                if (value := getattr(args, f"sidecar_{variable.lower()}"))
            },
        ),
    )
