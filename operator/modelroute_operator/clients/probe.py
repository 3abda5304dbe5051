"""One active health probe of a replica: a GET that never raises, its failure said in a few words.

The hysteresis that turns probe results into a replica's health is pure (`logic.health`).
"""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp
from yarl import URL

from modelroute_operator.logic.health import short_reason


async def probe(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    timeout_seconds: float,
    token: str | None,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[bool, str | None]:
    """GET `path` on the host of the replica base URL `url`; `(True, None)` on a 2xx answer, else
    `(False, short reason)`. Never raises (except cancellation); a hanging endpoint times out.
    `tls` and `server_name` carry the endpoint's private CA and the name to verify (https only)."""
    try:
        target = URL(url).join(URL(path))
    except (ValueError, TypeError) as exc:
        return False, short_reason(f"invalid URL: {exc}")
    if not target.is_absolute():
        return False, short_reason(f"invalid URL: {url!r} has no host")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # A redirect is not an answer from the model server (often a login page): report it as it is.
        https = target.scheme == "https"
        async with session.get(
            target,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ssl=tls if https and tls is not None else True,
            server_hostname=server_name if https and server_name else None,
        ) as response:
            if 200 <= response.status < 300:
                return True, None
            return False, f"HTTP {response.status}"
    except TimeoutError:
        return False, f"timeout after {timeout_seconds:g}s"
    except aiohttp.ClientConnectorError as exc:
        return False, _connect_error(exc)
    except aiohttp.ServerDisconnectedError:
        return False, "server disconnected"
    except (aiohttp.ClientError, ssl.SSLError, OSError, ValueError) as exc:
        return False, short_reason(f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # the timer must keep probing whatever a probe hits
        return False, short_reason(f"probe error {type(exc).__name__}: {exc}")


def _connect_error(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc.os_error, socket.gaierror):
        return short_reason(f"DNS lookup failed for {exc.host}")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return short_reason(f"TLS error: {exc}")
    if exc.os_error.errno == errno.ECONNREFUSED or isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return short_reason(f"connection failed: {exc.os_error.strerror or exc.os_error}")
