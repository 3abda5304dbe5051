"""The sidecar's RouterConfig: load, validate, swap atomically, keep the last known good.

A config arrives from the mounted ConfigMap file (at start, and whenever the kubelet rewrites it) or
from a push on the admin port, as a document of any schema this sidecar reads (`schemas`). Either way it
is validated completely (JSON, schema version, schema, content hash, namespace) and the engine's indexes
are built before the one reference requests read is replaced: a request sees the old config or the new
one, never a mix, and a bad config changes nothing. Unknown fields are refused, never skipped: the
operator renders each sidecar a schema it reads, so a field this sidecar does not know is a config it
must not run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelroute_contract import SCHEMA_VERSION, EndpointConfig, PolicyConfig, RouterConfig, config_order
from modelroute_contract.files import FileStamp, file_stamp
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS, config_key

from .engine import Router
from .engine.detectors import config_pattern_problem
from .engine.learned import PolicyModels, needs_models

log = logging.getLogger(__name__)


class ConfigRejectedError(Exception):
    """A config that will not be applied; `status` is what the pusher gets (400, 409 or 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One applied config with everything derived from it; replaced whole, never mutated."""

    config: RouterConfig
    router: Router
    text: str
    """The canonical JSON, handed on to worker processes and kept as last known good."""
    source: str
    """Where it came from: `file`, `push` or `parent`."""
    applied_at: float
    policies: dict[str, PolicyConfig] = field(default_factory=dict)
    """Virtual model -> the policy serving it."""
    endpoints: dict[str, EndpointConfig] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """The config's content hash."""
        return self.config.version


def policy_models(config: RouterConfig) -> dict[str, PolicyModels]:
    """The learned models of the config's policies (`embeddings.load_models`); `embeddings` is imported
    only for a config whose rules use them."""
    if not any(needs_models(policy) for policy in config.policies):
        return {}
    from .embeddings import load_models

    return load_models(config)


def _explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(root)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def build_snapshot(
    text: str | bytes, *, source: str, region: str, namespace: str = "", sidecar_ports: tuple[int, ...] = ()
) -> Snapshot:
    """Validate a RouterConfig document and build its router; raise ConfigRejectedError on any problem."""
    try:
        data: Any = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigRejectedError(400, f"config is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigRejectedError(400, "config must be a JSON object (a RouterConfig)")
    schema = data.get("schemaVersion", SCHEMA_VERSION)
    if schema not in ACCEPTED_SCHEMA_VERSIONS or isinstance(schema, bool):
        raise ConfigRejectedError(
            409,
            f"schemaVersion {schema!r} is not supported by this sidecar (it reads schemas "
            f"{', '.join(str(s) for s in ACCEPTED_SCHEMA_VERSIONS)})",
        )
    if namespace and data.get("namespace") != namespace:
        raise ConfigRejectedError(
            409,
            f"config was compiled for namespace {data.get('namespace')!r}, this sidecar serves {namespace!r}",
        )
    try:
        # The sidecar's own ports: replica URLs may not point back at them (contract.replica_url_problem).
        context = {"sidecar_ports": sidecar_ports} if sidecar_ports else None
        config = RouterConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigRejectedError(
            422, f"config does not match the RouterConfig schema: {_explain(exc)}"
        ) from None
    problem = config_pattern_problem(config)  # RE2 syntax: the contract cannot check it without re2
    if problem:
        raise ConfigRejectedError(422, f"config does not match the RouterConfig schema: {problem}")
    try:
        config.verify()
    except ValueError as exc:
        raise ConfigRejectedError(422, f"config integrity check failed: {exc}") from None
    try:
        router = Router(config, region, policy_models(config))
    except Exception as exc:  # the engine refusing a config must never take the sidecar down
        raise ConfigRejectedError(422, f"config cannot be routed: {exc}") from None
    return Snapshot(
        config=config,
        router=router,
        text=text.decode() if isinstance(text, bytes) else text,
        source=source,
        applied_at=time.time(),
        policies={model: policy for policy in config.policies for model in policy.virtual_models},
        endpoints={endpoint.name: endpoint for endpoint in config.endpoints},
    )


def config_document(path: Path) -> Path:
    """The file to read for `path`: itself, or for a directory (the mounted ConfigMap, one key per schema
    the operator could render the config for) the newest schema's key this sidecar reads. The operator
    writes only keys whose document is faithful, so an older key is never read while a newer one is
    there; `config.json` (schema 1) when none is there (a ConfigMap an older operator wrote)."""
    if not path.is_dir():
        return path
    for schema in sorted(ACCEPTED_SCHEMA_VERSIONS, reverse=True):
        candidate = path / config_key(schema)
        if candidate.exists():
            return candidate
    return path / config_key(ACCEPTED_SCHEMA_VERSIONS[0])


Listener = Callable[[Snapshot], None]


class ConfigStore:
    """Holds the applied snapshot; `current` is read by every request, replaced by `apply`."""

    def __init__(self, *, region: str, namespace: str = "", sidecar_ports: tuple[int, ...] = ()) -> None:
        self.region = region
        self.namespace = namespace
        self.sidecar_ports = sidecar_ports
        self.current: Snapshot | None = None
        self.last_error: str = ""
        self._listeners: list[Listener] = []
        self._file_stamp: FileStamp | None = None

    def on_applied(self, listener: Listener) -> None:
        """Call `listener` with every newly applied snapshot."""
        self._listeners.append(listener)

    def validate(self, text: str | bytes, source: str) -> Snapshot:
        """Build a snapshot without applying it."""
        return build_snapshot(
            text,
            source=source,
            region=self.region,
            namespace=self.namespace,
            sidecar_ports=self.sidecar_ports,
        )

    def apply(self, text: str | bytes, source: str) -> Snapshot:
        """Validate and swap in a config; the same version again is a no-op. Raises ConfigRejectedError."""
        try:
            snapshot = self.validate(text, source)
        except ConfigRejectedError as exc:
            self.last_error = exc.message
            raise
        return self.install(snapshot)

    def admit(self, snapshot: Snapshot) -> Snapshot | None:
        """The live snapshot when `snapshot` is the same config (a no-op), None when it may be applied;
        raise ConfigRejectedError (409) when it would turn the live config back."""
        current = self.current
        order = config_order(current.config if current else None, snapshot.config)
        if order == "newer":
            return None
        assert current is not None
        if order == "same":
            return current
        live, new = current.config, snapshot.config
        if order == "older":
            reason = (
                f"config {new.version} has sequence {new.sequence}, older than the live config "
                f"{live.version} (sequence {live.sequence}); a config is never turned back"
            )
        else:
            reason = (
                f"config {new.version} has sequence {new.sequence}, the same as the live config "
                f"{live.version} with other content; one sequence names one config"
            )
        self.last_error = reason
        raise ConfigRejectedError(409, reason)

    def install(self, snapshot: Snapshot) -> Snapshot:
        """Swap in an already validated snapshot; raise ConfigRejectedError when it is older (`admit`)."""
        current = self.admit(snapshot)
        if current is not None:
            return current
        self.current = snapshot  # the swap: one reference assignment, atomic for every request
        self.last_error = ""
        log.info(
            "applied config %s (sequence %d) from %s",
            snapshot.version, snapshot.config.sequence, snapshot.source,
        )  # fmt: skip
        for listener in self._listeners:
            listener(snapshot)
        return snapshot

    def load_file(self, path: Path) -> Snapshot | None:
        """Apply the file if it changed since the last look; None when unchanged or refused. A directory
        (the mounted ConfigMap) stands for the newest schema's document in it (`config_document`)."""
        path = config_document(path)
        try:
            stamp = file_stamp(path)
        except OSError as exc:
            if self._file_stamp is not None or self.current is None:
                log.error("cannot read config file %s: %s", path, exc.strerror)
            self._file_stamp = None
            return None
        if stamp == self._file_stamp:
            return None
        self._file_stamp = stamp
        try:
            text = path.read_bytes()
            # only a change of the file is looked at, and `install` refuses a file holding an older
            # sequence than the latest push (the kubelet updates the file up to a minute late)
            return self.apply(text, "file")
        except ConfigRejectedError as exc:
            log.error("config file %s refused, keeping %s: %s", path, self.version or "nothing", exc.message)
            return None
        except OSError as exc:
            log.error("cannot read config file %s: %s", path, exc.strerror)
            return None

    async def watch_file(self, path: Path, interval: float) -> None:
        """Poll the config file for changes forever (mtime, size and inode: the kubelet swaps a symlink)."""
        while True:
            await asyncio.sleep(interval)
            self.load_file(path)

    @property
    def version(self) -> str:
        """The applied version, empty before any config."""
        return self.current.version if self.current is not None else ""
