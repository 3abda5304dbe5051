"""Secrets the sidecar reads from mounted files: upstream API keys and the client API key table.

Neither ever appears in the RouterConfig, a log line, a metric or the audit log. Both are cached and
re-read when the file changes (the kubelet swaps mounted Secrets in place), checked at most every few
seconds so the hot path does not stat files on every request.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from modelroute_contract import CredentialRef
from modelroute_contract.files import Clock, FileCache, FileStamp, file_stamp

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
"""How stale a cached secret may be: the kubelet itself takes up to a minute to update a mount."""


class CredentialError(Exception):
    """An upstream credential the config names cannot be read; the message never holds the secret."""


def _stamp(path: Path) -> tuple[FileStamp, ...]:
    return (file_stamp(path),)  # follows the ..data symlink swap of Secret volumes


class UpstreamCredentials:
    """Upstream API keys as ready-to-send `Authorization` header values, keyed by CredentialRef."""

    def __init__(self, secrets_dir: Path, clock: Clock = time.monotonic) -> None:
        self._dir = secrets_dir
        self._files: FileCache[tuple[str, str, str], str] = FileCache(RECHECK_SECONDS, clock)

    @property
    def secrets_dir(self) -> Path:
        """Where the mounted Secrets live (`<secrets_dir>/<secret>/<key>`)."""
        return self._dir

    def authorization(self, ref: CredentialRef | None) -> str | None:
        """`Bearer <key>` for `ref`, or None when the endpoint needs no credentials."""
        if ref is None:
            return None
        # the cached value first, without the reload closures: this runs on every OpenAI request
        cached = self._files.fresh((ref.secret, ref.key, "Bearer "))
        return cached if cached is not None else self._read(ref, "Bearer ", one_line=True)

    def secret(self, ref: CredentialRef) -> str:
        """The text of `ref` as it is (a native provider's key, token, AWS key JSON or service-account
        key), re-read when the file changes."""
        return self._read(ref, "", one_line=False)

    def _read(self, ref: CredentialRef, prefix: str, *, one_line: bool) -> str:
        path = self._dir / ref.secret / ref.key

        def load() -> str:
            secret = path.read_text().strip()
            if not secret or (one_line and ("\n" in secret or "\r" in secret)):
                raise CredentialError(f"credential {ref.secret}/{ref.key} is empty or has several lines")
            return prefix + secret

        try:
            return self._files.get((ref.secret, ref.key, prefix), lambda: _stamp(path), load)
        except OSError as exc:
            raise CredentialError(f"cannot read credential {ref.secret}/{ref.key}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Client:
    """Who a client API key belongs to."""

    tenant: str
    tier: str = ""


class ClientKeys:
    """The optional client API key table: key -> tenant and tier, from a mounted Secret (YAML or JSON)."""

    def __init__(self, path: Path | None, clock: Clock = time.monotonic) -> None:
        self._path = path
        self._keys: dict[str, Client] = {}
        self._files: FileCache[None, dict[str, Client]] = FileCache(RECHECK_SECONDS, clock)
        self._logged: Exception | None = None
        if path is not None:
            self._reload()

    @property
    def enabled(self) -> bool:
        """Whether clients must authenticate."""
        return self._path is not None

    def lookup(self, key: str) -> Client | None:
        """The client owning `key`, or None for an unknown key."""
        keys = self._files.fresh(None)
        if keys is None:
            keys = self._reload()
        return keys.get(key)

    def _reload(self) -> dict[str, Client]:
        path = self._path
        assert path is not None

        def load() -> dict[str, Client]:
            keys = parse_client_keys(path.read_text())
            log.info("loaded %d client keys", len(keys))
            return keys

        try:
            self._keys = self._files.get(None, lambda: _stamp(path), load)
        except (OSError, ValueError) as exc:
            # keep the previous table: locking every client out on a bad edit is worse than a stale table
            if exc is not self._logged:  # FileCache raises the same error until it looks again: log once
                self._logged = exc
                log.error("cannot load client keys from %s: %s", path, exc)
        return self._keys


def parse_client_keys(text: str) -> dict[str, Client]:
    """Parse `{key: {tenant, tier}}` (YAML or JSON); a bare string value is the tenant."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
    else:
        import yaml  # only a YAML keys file needs it: a process without one saves its ~1 MiB

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # where, never what: YAML's own message quotes the file's lines, and they are API keys
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"client keys file is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ValueError("client keys file must be a mapping of key to {tenant, tier}")
    keys: dict[str, Client] = {}
    for key, value in data.items():
        if isinstance(value, str):
            keys[str(key)] = Client(tenant=value)
        elif isinstance(value, dict) and isinstance(value.get("tenant"), str):
            keys[str(key)] = Client(tenant=value["tenant"], tier=str(value.get("tier", "")))
        else:
            raise ValueError("each client key needs a tenant")
    return keys
