"""Which upstream URLs a replica may name, and which addresses the sidecar may connect to.

One rule for admission (the CRD models and the compiler), the sidecar's check of a loaded config and the
upstream client's check at connect time: no cloud-metadata or link-local targets, no loops back into the
sidecar's own ports, no credentials in URLs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from .admin import SIDECAR_PORTS

_LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
_METADATA_V6 = ipaddress.IPv6Address("fd00:ec2::254")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA_HOSTNAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
"""Cloud metadata services by name (a name is not resolved here, but these are well known)."""
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address an `inet_aton`-style host means (`2852039166`, `0xa9fea9fe`, `0251.254.169.254`,
    `169.254.43518`), as browsers, curl and glibc read it; None when the host is not all-numeric.

    ValueError when it is numeric but no address (a part too large, `08`): refused as ambiguous.
    """
    if not _NUMERIC_HOST.match(host):
        return None
    parts = host.rstrip(".").split(".")
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            numbers.append(int(part, 8))  # ValueError on 8 or 9: not an address either way
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"numeric host {host!r} is not an IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = int(address)
    if address in _NAT64 or (packed >> 32 == 0 and packed > 1):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def _host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a URL host names literally (any spelling), None for a DNS name."""
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = _legacy_ipv4(host)
    if isinstance(address, ipaddress.IPv6Address):
        unscoped = ipaddress.IPv6Address(host.split("%")[0])  # a zone id does not change the address
        return _embedded_ipv4(unscoped) or unscoped
    return address


def _is_metadata_or_link_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return address in _LINK_LOCAL_V4
    return address in _LINK_LOCAL_V6 or address == _METADATA_V6


def _is_local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_loopback or address.is_unspecified


def replica_url_problem(
    url: str, allow_private_targets: bool = False, sidecar_ports: Iterable[int] = SIDECAR_PORTS
) -> str | None:
    """Why a replica URL may not be used, or None when it may.

    Refused always: a scheme other than http/https, a missing host, an invalid port, user-info
    (`user:pass@`: credentials belong in a Secret, and the URL is stored in a ConfigMap). Refused unless
    the endpoint sets `allowPrivateTargets`: a host that is literally a link-local or cloud-metadata
    address (169.254.0.0/16, fe80::/10, fd00:ec2::254, in any spelling: IPv4-mapped/compatible IPv6,
    NAT64, 6to4, decimal, hex, octal or short dotted IPv4) or a well-known metadata host name, and a
    loopback or unspecified host at one of the sidecar's own ports. Host names are not resolved (no DNS
    at admission or config load); see `connect_address_problem` for the check at connect time.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return f"scheme {parts.scheme!r} is not http or https"
    if "@" in parts.netloc:
        return "must not carry user-info (user:password@): put credentials in a Secret (spec.credentials)"
    host = (parts.hostname or "").rstrip(".") if parts.hostname != "." else ""
    if not host:
        return "has no host"
    try:
        address = _host_address(host)
    except ValueError as exc:
        return f"host is ambiguous: {exc}"  # parsers disagree on it: never a safe target
    if allow_private_targets:
        return None
    port = port or (443 if scheme == "https" else 80)
    if host in _METADATA_HOSTNAMES or (address is not None and _is_metadata_or_link_local(address)):
        return (
            f"host {host!r} is a link-local or cloud-metadata address; set allowPrivateTargets: true on "
            "the endpoint if this is really a model server"
        )
    local = host == "localhost" or host.endswith(".localhost") or (address is not None and _is_local(address))
    if local and port in set(sidecar_ports):
        return (
            f"points at the sidecar's own port {port} on {host!r} (a loop, or its admin API); set "
            "allowPrivateTargets: true on the endpoint if a model server really listens there"
        )
    return None


def connect_address_problem(
    address: str, port: int, allow_private_targets: bool = False, sidecar_ports: Iterable[int] = SIDECAR_PORTS
) -> str | None:
    """The same rule for the address a host name resolved to, for the upstream client to call right
    before it connects (the URL check cannot see what DNS answers). None when the connection may go."""
    if allow_private_targets:
        return None
    try:
        parsed = _host_address(address)
    except ValueError:
        return None
    if parsed is None:
        return None
    if _is_metadata_or_link_local(parsed):
        return f"resolved to the link-local or cloud-metadata address {address}"
    if _is_local(parsed) and port in set(sidecar_ports):
        return f"resolved to {address}:{port}, the sidecar's own port"
    return None
