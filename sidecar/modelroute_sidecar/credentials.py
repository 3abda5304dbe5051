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
from modelroute_contract.files import FileStamp, file_stamp

log = logging.getLogger(__name__)

RECHECK_SECONDS = 2.0
"""How stale a cached secret may be: the kubelet itself takes up to a minute to update a mount."""


class CredentialError(Exception):
    """An upstream credential the config names cannot be read; the message never holds the secret."""


@dataclass(slots=True)
class _CachedFile:
    value: str
    stamp: FileStamp
    checked_at: float


def _stamp(path: Path) -> FileStamp:
    return file_stamp(path)  # follows the ..data symlink swap of Secret volumes


class UpstreamCredentials:
    """Upstream API keys as ready-to-send `Authorization` header values, keyed by CredentialRef."""

    def __init__(self, secrets_dir: Path) -> None:
        self._dir = secrets_dir
        self._cache: dict[tuple[str, str, str], _CachedFile] = {}

    @property
    def secrets_dir(self) -> Path:
        """Where the mounted Secrets live (`<secrets_dir>/<secret>/<key>`)."""
        return self._dir

    def authorization(self, ref: CredentialRef | None) -> str | None:
        """`Bearer <key>` for `ref`, or None when the endpoint needs no credentials."""
        if ref is None:
            return None
        # inlined (not `_read`): this runs on every OpenAI request
        cache_key = (ref.secret, ref.key, "Bearer ")
        cached = self._cache.get(cache_key)
        if cached is not None and time.monotonic() - cached.checked_at < RECHECK_SECONDS:
            return cached.value
        return self._read(ref, "Bearer ", one_line=True)

    def secret(self, ref: CredentialRef) -> str:
        """The text of `ref` as it is (a native provider's key, token, AWS key JSON or service-account
        key), re-read when the file changes."""
        return self._read(ref, "", one_line=False)

    def _read(self, ref: CredentialRef, prefix: str, *, one_line: bool) -> str:
        cache_key = (ref.secret, ref.key, prefix)
        cached = self._cache.get(cache_key)
        now = time.monotonic()
        if cached is not None and now - cached.checked_at < RECHECK_SECONDS:
            return cached.value
        path = self._dir / ref.secret / ref.key
        try:
            stamp = _stamp(path)
            if cached is None or cached.stamp != stamp:
                secret = path.read_text().strip()
                if not secret or (one_line and ("\n" in secret or "\r" in secret)):
                    raise CredentialError(f"credential {ref.secret}/{ref.key} is empty or has several lines")
                cached = _CachedFile(prefix + secret, stamp, now)
                self._cache[cache_key] = cached
            cached.checked_at = now
        except OSError as exc:
            raise CredentialError(f"cannot read credential {ref.secret}/{ref.key}: {exc.strerror}") from None
        return cached.value


@dataclass(frozen=True, slots=True)
class Client:
    """Who a client API key belongs to."""

    tenant: str
    tier: str = ""


class ClientKeys:
    """The optional client API key table: key -> tenant and tier, from a mounted Secret (YAML or JSON)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._keys: dict[str, Client] = {}
        self._stamp: FileStamp | None = None
        self._checked_at = 0.0
        if path is not None:
            self._reload()

    @property
    def enabled(self) -> bool:
        """Whether clients must authenticate."""
        return self._path is not None

    def lookup(self, key: str) -> Client | None:
        """The client owning `key`, or None for an unknown key."""
        now = time.monotonic()
        if now - self._checked_at >= RECHECK_SECONDS:
            self._checked_at = now
            self._reload()
        return self._keys.get(key)

    def _reload(self) -> None:
        assert self._path is not None
        try:
            stamp = _stamp(self._path)
            if stamp == self._stamp:
                return
            self._keys = parse_client_keys(self._path.read_text())
            self._stamp = stamp
            log.info("loaded %d client keys", len(self._keys))
        except (OSError, ValueError) as exc:
            # keep the previous table: locking every client out on a bad edit is worse than a stale table
            log.error("cannot load client keys from %s: %s", self._path, exc)


def parse_client_keys(text: str) -> dict[str, Client]:
    """Parse `{key: {tenant, tier}}` (YAML or JSON); a bare string value is the tenant."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
    else:
        import yaml  # only a YAML keys file needs it: a process without one saves its ~1 MiB

        data = yaml.safe_load(text)
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
