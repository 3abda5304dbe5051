"""One active health probe of a replica: a GET that never raises, its failure said in a few words, and
the client TLS context it uses (the endpoint's CA bundle and client certificate).

The hysteresis that turns probe results into a replica's health is pure (`logic.health`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator

import aiohttp
from yarl import URL

from modelroute_operator.logic.health import short_reason


def client_context(ca_bundle: str | None, chain: str | None, key: str | None) -> ssl.SSLContext:
    """A client context trusting `ca_bundle` (PEM; the system store when None) and presenting the
    certificate `chain` with its private `key` (PEM, from a `kubernetes.io/tls` Secret), as the sidecar's
    upstream client does. Raises ssl.SSLError or ValueError for unusable material.

    OpenSSL loads a certificate only from a file: the PEM goes to an anonymous in-memory file
    (memfd, Linux) that is gone once closed, so a private key never lands on the operator's disk."""
    context = ssl.create_default_context(cadata=ca_bundle) if ca_bundle else ssl.create_default_context()
    if chain is not None:
        if key is None:
            raise ValueError("client certificate without a private key")
        with _memory_file(chain) as chain_path, _memory_file(key) as key_path:
            context.load_cert_chain(chain_path, key_path, password=lambda: b"")
    return context


@contextlib.contextmanager
def _memory_file(text: str) -> Iterator[str]:
    """A path that reads `text`: a memfd where the kernel has them, else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("modelroute-probe-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as private:  # mode 0700
        path = os.path.join(private, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
            out.write(text)
        yield path


async def probe(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    timeout_seconds: float,
    token: str | None,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    headers: dict[str, str] | None = None,
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
    if headers is None:  # `headers`: a native provider's own (`logic.health.probe_request`)
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
