"""Outbound proxies from the environment: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (lower case too).

HTTPS upstreams go through a CONNECT tunnel to the `HTTPS_PROXY`, plain HTTP upstreams through the
`HTTP_PROXY` in absolute form; `NO_PROXY` exempts hosts (`api.internal`), domain suffixes
(`.internal`, `internal`), IP addresses and CIDR ranges (`10.0.0.0/8`), each optionally with a port,
and `*` exempts everything. Where both spellings are set the lower-case one wins, as in curl and
Python's urllib. Proxy credentials come only from the proxy URL's user-info; they become a
`Proxy-Authorization` value and are never part of a repr or a log line.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class ProxyServer:
    """A forward proxy: where it listens and the credentials it wants (never shown)."""

    host: str
    port: int
    authorization: str = field(default="", repr=False)
    """`Basic ...` from the proxy URL's user-info; empty without credentials."""

    @property
    def address(self) -> str:
        """`host:port`, safe to log."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Exemption:
    """One NO_PROXY entry."""

    host: str = ""
    """A host name or domain suffix, lower case, without a leading dot."""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Which proxy, if any, an upstream origin is reached through."""

    http: ProxyServer | None = None
    https: ProxyServer | None = None
    exempt_all: bool = False
    exemptions: tuple[_Exemption, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyConfig:
        """Read the proxy variables; ValueError (naming the variable) for a URL that cannot be used."""

        def read(name: str) -> tuple[str, str]:
            lower = name.lower()
            if environ.get(lower):
                return lower, environ[lower]
            return name, environ.get(name, "")

        servers: dict[str, ProxyServer | None] = {}
        for scheme, name in (("http", "HTTP_PROXY"), ("https", "HTTPS_PROXY")):
            variable, value = read(name)
            servers[scheme] = parse_proxy_url(variable, value) if value.strip() else None
        _, no_proxy = read("NO_PROXY")
        entries = [e.strip() for e in no_proxy.replace(" ", ",").split(",") if e.strip()]
        return cls(
            http=servers["http"],
            https=servers["https"],
            exempt_all="*" in entries,
            exemptions=tuple(_parse_exemption(e) for e in entries if e != "*"),
        )

    @property
    def enabled(self) -> bool:
        """Whether any upstream goes through a proxy."""
        return (self.http is not None or self.https is not None) and not self.exempt_all

    def for_origin(self, scheme: str, host: str, port: int) -> ProxyServer | None:
        """The proxy to reach `scheme://host:port` through, or None to connect directly."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or self.exempt_all:
            return None
        host = host.lower().rstrip(".").strip("[]")
        if any(exemption.matches(host, port) for exemption in self.exemptions):
            return None
        return proxy

    def describe(self) -> str:
        """The configuration in words, without credentials (for the startup log)."""
        parts = [
            f"{scheme} via {server.address}" + (" (with credentials)" if server.authorization else "")
            for scheme, server in (("http", self.http), ("https", self.https))
            if server is not None
        ]
        if self.exempt_all:
            parts.append("NO_PROXY=* (every upstream direct)")
        elif self.exemptions:
            parts.append(f"{len(self.exemptions)} NO_PROXY exemption(s)")
        return ", ".join(parts) or "no proxy"


def parse_proxy_url(variable: str, value: str) -> ProxyServer:
    """`http://[user:password@]host[:port]` (a bare `host:port` means http) as a ProxyServer."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else "http://" + text)
    if parts.scheme != "http":
        raise ValueError(
            f"{variable}: proxy scheme {parts.scheme!r} is not supported (use an http:// proxy URL)"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{variable}: the proxy URL has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"{variable}: the proxy URL has no host")
    authorization = ""
    if parts.username is not None:
        user_info = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(user_info.encode()).decode()
    return ProxyServer(parts.hostname, port, authorization)


def _parse_exemption(entry: str) -> _Exemption:
    text = entry.lower()
    port: int | None = None
    if text.startswith("["):  # [v6]:port or [v6]
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        text = host
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if port_text.isdigit():
            text, port = host, int(port_text)
    try:
        return _Exemption(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    return _Exemption(host=text.removeprefix("*").lstrip(".").rstrip("."), port=port)
