"""Per-endpoint TLS for upstream calls: a private CA bundle and a client certificate from mounted Secrets.

An endpoint's `tls` (contract.TlsConfig) names Secret keys mounted under the secrets directory, as
credentials are. Each endpoint gets one `ssl.SSLContext`, cached and rebuilt when a file changes (the
kubelet swaps mounted Secrets in place when they rotate), checked at most every `RECHECK_SECONDS`. A CA
bundle replaces the system trust store for that endpoint: it trusts what its operator says, no more.
Key material never appears in a message; a file that cannot be loaded fails the attempt (fail closed).
"""

from __future__ import annotations

import itertools
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from modelroute_contract import CredentialRef, TlsConfig
from modelroute_contract.files import Clock, FileCache, FileStamp, file_stamp

RECHECK_SECONDS = 2.0
"""How stale a cached context may be: the kubelet itself takes up to a minute to update a mount."""

_tokens = itertools.count(1)


class TlsError(Exception):
    """An endpoint's TLS files cannot be read or loaded; the message names the Secret key, not its data."""


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a connection to one endpoint's replicas uses: the context, the name to verify, and a token
    that differs per built context (connections made with one are pooled apart from the others)."""

    context: ssl.SSLContext
    server_name: str
    token: int


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal


class TlsContexts:
    """One SSL context per endpoint, built from its Secret files and rebuilt when they change."""

    def __init__(self, secrets_dir: Path, clock: Clock = time.monotonic) -> None:
        self._dir = secrets_dir
        self._files: FileCache[str, ClientTls] = FileCache(RECHECK_SECONDS, clock)
        self._settings: dict[str, TlsConfig] = {}

    def get(self, endpoint: str, config: TlsConfig | None) -> ClientTls | None:
        """The endpoint's TLS, or None when it has no TLS settings (system trust store then)."""
        if config is None:
            return None
        known = self._settings.get(endpoint)
        if known is not config and known != config:
            self._files.forget(endpoint)  # new settings build a new context whatever the files say
            self._settings[endpoint] = config
        cached = self._files.fresh(endpoint)
        if cached is not None:
            return cached
        refs = _refs(config)
        return self._files.get(
            endpoint,
            lambda: tuple(self._stamp(endpoint, what, ref) for what, ref in refs),
            lambda: ClientTls(self._build(endpoint, config), config.server_name, next(_tokens)),
        )

    def _path(self, ref: CredentialRef) -> Path:
        return self._dir / ref.secret / ref.key

    def _stamp(self, endpoint: str, what: str, ref: CredentialRef) -> FileStamp:
        try:
            return file_stamp(self._path(ref))  # follows the ..data symlink swap of Secret volumes
        except OSError as exc:
            raise TlsError(
                f"endpoint {endpoint}: cannot read {what} {ref.secret}/{ref.key}: {exc.strerror}"
            ) from None

    def _build(self, endpoint: str, config: TlsConfig) -> ssl.SSLContext:
        ca = config.ca_bundle
        try:
            context = ssl.create_default_context(cafile=str(self._path(ca)) if ca else None)
        except (OSError, ssl.SSLError) as exc:
            assert ca is not None
            raise TlsError(
                f"endpoint {endpoint}: CA bundle {ca.secret}/{ca.key} is not a PEM certificate bundle "
                f"({_reason(exc)})"
            ) from None
        cert, key = config.client_certificate, config.client_key
        if cert is not None:
            try:
                context.load_cert_chain(
                    str(self._path(cert)), str(self._path(key)) if key else None, password=_no_password
                )
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(
                    f"endpoint {endpoint}: client certificate {cert.secret} (keys {cert.key}"
                    f"{', ' + key.key if key else ''}) cannot be loaded ({_reason(exc)})"
                ) from None
        return context


def _refs(config: TlsConfig) -> list[tuple[str, CredentialRef]]:
    refs = [
        ("CA bundle", config.ca_bundle),
        ("client certificate", config.client_certificate),
        ("client key", config.client_key),
    ]
    return [(what, ref) for what, ref in refs if ref is not None]


def _reason(exc: OSError | ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc.strerror or exc.__class__.__name__)
