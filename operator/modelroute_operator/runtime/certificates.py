"""The webhook's serving certificate: a TLS context that follows renewals, and self-signed certificates for
local runs, tests and the chart's certificate story without cert-manager (made with the `openssl` CLI).

The serving certificate is re-read when its files change (cert-manager renews it in place), so a renewal
needs no restart.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import secrets
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelroute_contract.files import FileStamp, file_stamp

log = logging.getLogger(__name__)


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) holding the serving certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _stamp(*paths: Path) -> tuple[FileStamp, ...]:
    # stat follows the `..data` symlink a kubelet swaps when a mounted Secret changes.
    return tuple(file_stamp(p) for p in paths)


async def keep_certificate_fresh(
    context: ssl.SSLContext, cert_file: Path, key_file: Path, every: float
) -> None:
    """Reload the certificate into `context` whenever its files change; new connections get the new one."""
    stamp = _stamp(cert_file, key_file)
    while True:
        await asyncio.sleep(every)
        try:
            current = _stamp(cert_file, key_file)
            if current != stamp:
                context.load_cert_chain(cert_file, key_file)
                stamp = current
                log.info("webhook serving certificate reloaded from %s", cert_file)
        except (OSError, ssl.SSLError) as exc:
            # Mid-rotation the pair may not match for a moment; the next round picks up the settled files.
            log.warning("webhook certificate not reloaded yet: %s", exc)


@dataclass(frozen=True)
class Certificates:
    """A CA and the serving certificate it signed, as files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_bundle(self) -> str:
        """The CA certificate, base64-encoded PEM: the `caBundle` of a webhook configuration."""
        return base64.b64encode(self.ca_file.read_bytes()).decode()


def service_hosts(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use to reach a Service-backed webhook."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def generate_certificates(directory: Path, hosts: Sequence[str], days: int = 365) -> Certificates:
    """A fresh self-signed CA and a serving certificate for `hosts` (DNS names or IP addresses).

    Uses the `openssl` CLI (present wherever the control plane scripts run) rather than a Python crypto
    dependency. The API server checks the subjectAltName only, so every host goes there.
    """
    if not hosts:
        raise ValueError("a serving certificate needs at least one host")
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    ca_key = directory / "ca.key"
    alt_names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    with tempfile.TemporaryDirectory() as scratch:
        config, csr = Path(scratch) / "openssl.cnf", Path(scratch) / "tls.csr"
        config.write_text(_OPENSSL_CONFIG.format(alt_names=alt_names))
        curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", "-config", config, "-extensions", "ca", "-subj", "/CN=modelroute-webhook-ca",
                 *curve, "-keyout", ca_key, "-out", certs.ca_file, "-days", str(days))  # fmt: skip
        _openssl("req", "-new", "-config", config, *curve, "-keyout", certs.key_file, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", certs.ca_file, "-CAkey", ca_key,
                 "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days),
                 "-extfile", config, "-extensions", "server", "-out", certs.cert_file)  # fmt: skip
    for key in (ca_key, certs.key_file):
        key.chmod(0o600)
    return certs


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = modelroute-webhook
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {alt_names}
authorityKeyIdentifier = keyid
"""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


