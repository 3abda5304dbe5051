"""Process settings of the sidecar: command-line flags with environment-variable defaults.

Kubernetes sets most of these through env (downward API for the pod name and region, mounted files for
the config, secrets and tokens); flags win over env so a developer can run the binary by hand. The
variable names are the contract's (`modelroute_contract.env`): the operator's injector sets the same.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelroute_contract import env
from modelroute_contract.admin import DEFAULT_ADMIN_PORT, DEFAULT_DATA_PORT

from .httpclient import DEFAULT_KEEPALIVE_SECONDS
from .httpclient import DEFAULT_MAX_BODY_BYTES as DEFAULT_UPSTREAM_MAX_BODY_BYTES

if TYPE_CHECKING:
    import argparse

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the sidecar process needs to know before it serves."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_DATA_PORT
    admin_host: str = "0.0.0.0"
    admin_port: int = DEFAULT_ADMIN_PORT
    """The operator pushes configs and reads stats here; 0 disables the admin app."""
    admin_token: str = ""
    """Token from MODELROUTE_ADMIN_TOKEN, used when no token file is given."""
    admin_token_file: str = ""
    """Mounted Secret file with the token; re-read when it changes (it may appear after start)."""
    """Bearer token the admin port requires; empty refuses every admin call except version reads."""
    config_file: Path | None = None
    """A RouterConfig document, or the directory of the mounted ConfigMap: then the newest schema's key
    this sidecar reads (`configstore.config_document`)."""
    config_poll_seconds: float = 3.0
    """How often the config file is checked for changes (the kubelet rewrites mounted ConfigMaps)."""
    namespace: str = ""
    """When set, configs compiled for another namespace are refused."""
    region: str = ""
    """The region this pod runs in: locality prefers it."""
    pod_name: str = ""
    secrets_dir: Path = Path("/var/run/modelroute/secrets")
    """Upstream credentials live in `<secrets_dir>/<secret>/<key>`."""
    client_keys_file: Path | None = None
    """Optional YAML/JSON map of client API key to {tenant, tier}; when set, clients must present one."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_line_bytes: int = 8 * 1024
    """Longest request target on the data port (414 past it)."""
    max_head_bytes: int = 64 * 1024
    """Largest request head, request line included (431 past it)."""
    head_timeout_seconds: float = 10.0
    """From a request's first byte to the end of its head (408 and a close past it; 0 disables)."""
    body_timeout_seconds: float = 30.0
    """From the end of a head to the end of its body (408 and a close past it; 0 disables)."""
    max_connections: int = 4096
    """Client connections per worker on the data port; the next one gets 503 and is closed."""
    audit_log: str = "-"
    """Audit log destination: a file path, `-` for stdout, empty to disable."""
    audit_prompts: bool = False
    """Also write prompt text into the audit log (off by default: prompts may hold personal data)."""
    workers: int = 1
    """Data-plane processes sharing the port with SO_REUSEPORT; >1 runs a supervising parent."""
    upstream_connections_per_host: int = 256
    upstream_keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    """How long an idle upstream connection is kept for reuse; below the upstreams' own idle timeout
    (uvicorn's 5 s is the shortest common one)."""
    upstream_max_body_bytes: int = DEFAULT_UPSTREAM_MAX_BODY_BYTES
    """Largest non-streamed upstream answer accepted; a larger one fails the attempt."""
    retry_floor_per_second: float = 10.0
    """Retries always allowed per second whatever the budget says, so low traffic can still retry."""
    log_level: str = "INFO"
    log_format: str = "text"
    """`text`, or `json` for one JSON object per line (log pipelines parse it without a pattern)."""
    worker_index: int = -1
    """Set by the supervising parent in the workers it forks; -1 in a single-process sidecar."""
    control_dir: Path | None = None
    """Where workers listen on unix sockets for their parent (set by the parent in its workers)."""
    fleet_store_url: str = ""
    """The fleet store (Redis/Valkey) for policies with fleet limits: `redis://` or `rediss://` (TLS);
    never with a password in it (`fleet_store_password_file`)."""
    fleet_store_username: str = ""
    fleet_store_password_file: Path | None = None
    """The store password's mounted Secret file; re-read at every connection."""
    fleet_store_ca_file: Path | None = None
    """PEM CA bundle for a `rediss://` store."""
    fleet_sync_seconds: float = 0.2
    """How often spend is written to the store and fleet totals read back."""


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    return environ.get(name, default)


def _optional_path(value: str | None) -> Path | None:
    return Path(value) if value else None


PARSER_MODULES = ("argparse", "gettext")
"""What parsing the flags imports. A process parses them once, at its start: `parse_settings` takes out
again those it loaded, so that nothing refers to them once the parser is gone and the collection before
serving (`main.settle_memory`) frees them: ~0.2 MiB of code and classes in every sidecar process (one
worker's RSS after traffic, footprint.py's figure). A later import loads them anew."""


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The sidecar's flags; each default comes from a `MODELROUTE_*` variable when set."""
    import argparse  # here, not at the top: see PARSER_MODULES

    class HelpFormatter(argparse.HelpFormatter):
        """argparse's formatter, told the terminal's width: without one it imports shutil for it (and
        shutil zlib, bz2 and lzma, ~0.5 MiB), at every `add_argument`, in a process that never prints
        help."""

        def __init__(self, prog: str) -> None:
            try:
                width = os.get_terminal_size().columns
            except OSError:
                width = 80
            super().__init__(prog, width=width - 2)

    e = environ
    p = argparse.ArgumentParser(
        prog="modelroute-sidecar", description="modelroute router sidecar", formatter_class=HelpFormatter
    )
    p.add_argument("--host", default=_env(e, env.HOST, "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env(e, env.PORT, str(DEFAULT_DATA_PORT))))
    p.add_argument("--admin-host", default=_env(e, env.ADMIN_HOST, "0.0.0.0"))
    p.add_argument("--admin-port", type=int, default=int(_env(e, env.ADMIN_PORT, str(DEFAULT_ADMIN_PORT))))
    p.add_argument("--admin-token-file", default=_env(e, env.ADMIN_TOKEN_FILE, ""))
    p.add_argument("--config-file", default=_env(e, env.CONFIG_FILE, ""))
    p.add_argument("--config-poll-seconds", type=float, default=float(_env(e, env.CONFIG_POLL_SECONDS, "3")))
    p.add_argument("--namespace", default=_env(e, env.NAMESPACE, _env(e, env.POD_NAMESPACE_FALLBACK, "")))
    p.add_argument("--region", default=_env(e, env.REGION, ""))
    p.add_argument("--pod-name", default=_env(e, env.POD_NAME, _env(e, env.POD_NAME_FALLBACK, "")))
    p.add_argument("--secrets-dir", default=_env(e, env.SECRETS_DIR, "/var/run/modelroute/secrets"))
    p.add_argument("--client-keys-file", default=_env(e, env.CLIENT_KEYS_FILE, ""))
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(_env(e, env.MAX_BODY_BYTES, str(DEFAULT_MAX_BODY_BYTES))),
    )
    p.add_argument("--max-line-bytes", type=int, default=int(_env(e, env.MAX_LINE_BYTES, str(8 * 1024))))
    p.add_argument("--max-head-bytes", type=int, default=int(_env(e, env.MAX_HEAD_BYTES, str(64 * 1024))))
    p.add_argument(
        "--head-timeout-seconds", type=float, default=float(_env(e, env.HEAD_TIMEOUT_SECONDS, "10"))
    )
    p.add_argument(
        "--body-timeout-seconds", type=float, default=float(_env(e, env.BODY_TIMEOUT_SECONDS, "30"))
    )
    p.add_argument("--max-connections", type=int, default=int(_env(e, env.MAX_CONNECTIONS, "4096")))
    p.add_argument("--audit-log", default=_env(e, env.AUDIT_LOG, "-"))
    p.add_argument(
        "--audit-prompts",
        action="store_true",
        default=_env(e, env.AUDIT_PROMPTS, "") in ("1", "true", "yes"),
    )
    p.add_argument("--workers", type=int, default=int(_env(e, env.WORKERS, "1")))
    p.add_argument(
        "--upstream-connections-per-host",
        type=int,
        default=int(_env(e, env.UPSTREAM_CONNECTIONS_PER_HOST, "256")),
    )
    p.add_argument(
        "--upstream-keepalive-seconds",
        type=float,
        default=float(_env(e, env.UPSTREAM_KEEPALIVE_SECONDS, str(DEFAULT_KEEPALIVE_SECONDS))),
    )
    p.add_argument(
        "--upstream-max-body-bytes",
        type=int,
        default=int(_env(e, env.UPSTREAM_MAX_BODY_BYTES, str(DEFAULT_UPSTREAM_MAX_BODY_BYTES))),
    )
    p.add_argument("--fleet-store-url", default=_env(e, env.FLEET_STORE_URL, ""))
    p.add_argument("--fleet-store-username", default=_env(e, env.FLEET_STORE_USERNAME, ""))
    p.add_argument("--fleet-store-password-file", default=_env(e, env.FLEET_STORE_PASSWORD_FILE, ""))
    p.add_argument("--fleet-store-ca-file", default=_env(e, env.FLEET_STORE_CA_FILE, ""))
    p.add_argument("--fleet-sync-seconds", type=float, default=float(_env(e, env.FLEET_SYNC_SECONDS, "0.2")))
    p.add_argument("--log-level", default=_env(e, env.LOG_LEVEL, "INFO"))
    p.add_argument("--log-format", choices=["text", "json"], default=_env(e, env.LOG_FORMAT, "text"))
    return p


def read_admin_token(environ: Mapping[str, str]) -> str:
    """The admin bearer token given in the environment (`MODELROUTE_ADMIN_TOKEN`), if any."""
    return environ.get(env.ADMIN_TOKEN, "").strip()


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags and environment."""
    environment = os.environ if environ is None else environ
    loaded = [name for name in PARSER_MODULES if name not in sys.modules]
    args = build_parser(environment).parse_args(argv)
    for name in loaded:
        sys.modules.pop(name, None)
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if not 0 < args.max_line_bytes <= args.max_head_bytes:
        raise SystemExit("--max-line-bytes must be positive and at most --max-head-bytes")
    if args.max_connections < 1:
        raise SystemExit("--max-connections must be at least 1")
    if "@" in args.fleet_store_url.partition("://")[2].split("/", 1)[0]:
        # a password in a URL ends up in process listings and logs: it must come from a file
        raise SystemExit("--fleet-store-url must not carry user-info; use --fleet-store-password-file")
    if not args.fleet_sync_seconds > 0:
        raise SystemExit("--fleet-sync-seconds must be above 0")
    return Settings(
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        admin_token=read_admin_token(environment),
        admin_token_file=args.admin_token_file,
        config_file=_optional_path(args.config_file),
        config_poll_seconds=args.config_poll_seconds,
        namespace=args.namespace,
        region=args.region,
        pod_name=args.pod_name or os.uname().nodename,
        secrets_dir=Path(args.secrets_dir),
        client_keys_file=_optional_path(args.client_keys_file),
        max_body_bytes=args.max_body_bytes,
        max_line_bytes=args.max_line_bytes,
        max_head_bytes=args.max_head_bytes,
        head_timeout_seconds=args.head_timeout_seconds,
        body_timeout_seconds=args.body_timeout_seconds,
        max_connections=args.max_connections,
        audit_log=args.audit_log,
        audit_prompts=args.audit_prompts,
        workers=args.workers,
        upstream_connections_per_host=args.upstream_connections_per_host,
        upstream_keepalive_seconds=args.upstream_keepalive_seconds,
        upstream_max_body_bytes=args.upstream_max_body_bytes,
        log_level=args.log_level,
        log_format=args.log_format,
        fleet_store_url=args.fleet_store_url,
        fleet_store_username=args.fleet_store_username,
        fleet_store_password_file=_optional_path(args.fleet_store_password_file),
        fleet_store_ca_file=_optional_path(args.fleet_store_ca_file),
        fleet_sync_seconds=args.fleet_sync_seconds,
    )
