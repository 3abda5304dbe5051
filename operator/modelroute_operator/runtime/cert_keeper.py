"""The webhook serving certificate the operator keeps itself (the chart's default without cert-manager).

Why here and not in the chart: a chart that generates its CA at render time renders a new one every
time `helm template` runs (Argo CD, Flux's helm-controller and every CI diff render that way, and Helm's
`lookup` sees no cluster there), so GitOps showed the webhook configurations and their Secret drifting on
every refresh. The chart now renders neither a certificate nor a `caBundle`, and each operator replica:

1. reads the Secret `<release>-webhook-tls` in its own namespace; creates it with a fresh self-signed CA
   and serving certificate when it is missing, and renews it when the certificate is within a third of
   its lifetime of expiry or does not name every host the API server may dial. Updates carry the
   resourceVersion they read, so two replicas racing to create or renew agree on one pair (the loser
   reads the winner's);
2. writes the pair into its certificate directory (an emptyDir), where the webhook server reloads it;
3. patches the `caBundle` of every webhook in the Validating- and MutatingWebhookConfiguration it serves
   when it differs (a JSON patch of that one field, so a GitOps tool that applies the configurations sees
   no field of its own changed).

A renewal makes a new CA; the Secret's `ca.crt` then holds the new CA and the previous one, so the API
server trusts both the replicas still serving the old pair and those serving the new one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelroute_operator.clients.kube import API_TIMEOUT, new_api_client

log = logging.getLogger(__name__)

FIELD_MANAGER = "modelroute-operator"
RENEW_FRACTION = 1 / 3
"""Renew when less than this share of the certificate's lifetime is left."""
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


@dataclass(frozen=True)
class CertSettings:
    """Where the pair lives and what it must serve."""

    namespace: str
    secret: str
    configuration: str
    """Name of the Validating- and MutatingWebhookConfiguration (the chart gives both the same name)."""
    hosts: tuple[str, ...]
    days: int = 3650
    refresh_seconds: float = 300.0
    """How often a replica re-reads the Secret (a renewal by another replica, an edited caBundle)."""


@dataclass(frozen=True)
class ServingPair:
    """The contents of the Secret: the serving certificate and key, and the CA bundle that trusts them."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def from_secret(cls, secret: Any) -> ServingPair | None:
        """The pair in a Secret (a client object), None when any part is missing."""
        data = (secret.data if secret is not None else None) or {}
        parts = [base64.b64decode(data.get(k) or "") for k in ("tls.crt", "tls.key", "ca.crt")]
        return cls(*parts) if all(parts) else None

    def secret_data(self) -> dict[str, str]:
        return {
            "tls.crt": base64.b64encode(self.cert).decode(),
            "tls.key": base64.b64encode(self.key).decode(),
            "ca.crt": base64.b64encode(self.ca).decode(),
        }

    @property
    def ca_bundle(self) -> str:
        """The `caBundle` of a webhook configuration: base64 of the PEM bundle."""
        return base64.b64encode(self.ca).decode()


def renewal_reason(pair: ServingPair | None, hosts: Sequence[str], now: datetime) -> str:
    """Why the pair must be (re)made, or '' when it serves as it is."""
    if pair is None:
        return "no serving certificate yet"
    try:
        not_before, not_after, names = describe_certificate(pair.cert)
    except RuntimeError as exc:
        return f"the stored certificate cannot be read ({exc})"
    if now >= renewal_due(not_before, not_after):
        return f"the certificate expires at {not_after.isoformat()}"
    missing = sorted(set(hosts) - names)
    if missing:
        return f"the certificate does not name {', '.join(missing)}"
    return ""


def describe_certificate(pem: bytes) -> tuple[datetime, datetime, set[str]]:
    """Validity bounds and subjectAltNames (DNS and IP) of a PEM certificate; RuntimeError when it is
    not one."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise RuntimeError(f"not a PEM certificate: {exc}") from None
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names: set[str] = set()
    else:
        names = {*alt.get_values_for_type(x509.DNSName), *map(str, alt.get_values_for_type(x509.IPAddress))}
    return cert.not_valid_before_utc, cert.not_valid_after_utc, names


def new_pair(hosts: Sequence[str], days: int, previous: ServingPair | None, now: datetime) -> ServingPair:
    """A fresh ECDSA P-256 CA and serving certificate for `hosts` (made in-process with `cryptography`,
    so the operator image needs no openssl binary); the bundle keeps the previous CA while it is valid."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    start, end = now - timedelta(minutes=5), now + timedelta(days=days)  # a little slack for clock skew
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelroute-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    serving = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle = ca.public_bytes(serialization.Encoding.PEM)
    if previous is not None:
        for old in _PEM_CERT.findall(previous.ca)[:1]:  # the newest previous CA only: no endless chain
            try:
                _, not_after, _ = describe_certificate(old)
            except RuntimeError:
                continue
            if not_after > now:
                bundle = bundle.rstrip(b"\n") + b"\n" + old
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServingPair(serving.public_bytes(serialization.Encoding.PEM), key_pem, bundle)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not cert_sign,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ca_bundle_patch(configuration: Any, ca_bundle: str) -> list[dict[str, Any]]:
    """JSON patch operations setting every webhook's `clientConfig.caBundle` of a configuration (a client
    object) to `ca_bundle`; empty when all of them hold it already."""
    operations = []
    for index, webhook in enumerate(configuration.webhooks or ()):
        if webhook.client_config.ca_bundle != ca_bundle:
            path = f"/webhooks/{index}/clientConfig/caBundle"
            operations.append({"op": "add", "path": path, "value": ca_bundle})  # add replaces too
    return operations


class CertKeeper:
    """Keeps one replica's serving pair: the Secret, the files the server reads, the caBundles."""

    def __init__(self, settings: CertSettings, cert_dir: Path, api: client.ApiClient | None = None) -> None:
        self.settings = settings
        self.cert_dir = cert_dir
        self._api = api if api is not None else new_api_client()
        self._core = client.CoreV1Api(self._api)
        self._admission = client.AdmissionregistrationV1Api(self._api)
        self.ca_bundle = ""

    @property
    def cert_file(self) -> Path:
        return self.cert_dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.cert_dir / "tls.key"

    def ensure(self, now: datetime | None = None) -> ServingPair:
        """Make sure the Secret holds a valid pair, this replica serves it and the webhooks trust it."""
        pair = self._ensure_secret(now or datetime.now(UTC))
        self._write_files(pair)
        self._patch_configurations(pair.ca_bundle)
        self.ca_bundle = pair.ca_bundle
        return pair

    async def keep(self) -> None:
        """`ensure` every `refresh_seconds` until cancelled; failures are logged and retried."""
        while True:
            await asyncio.sleep(self.settings.refresh_seconds)
            try:
                await asyncio.to_thread(self.ensure)
            except (ApiException, OSError, RuntimeError) as exc:
                log.warning("webhook certificate not refreshed: %s", exc)

    def _ensure_secret(self, now: datetime) -> ServingPair:
        s = self.settings
        for _ in range(5):  # a lost race re-reads the winner's pair
            existing = self._read_secret()
            pair = ServingPair.from_secret(existing)
            reason = renewal_reason(pair, s.hosts, now)
            if not reason and pair is not None:
                return pair
            log.info("webhook serving certificate: making a new one (%s)", reason)
            made = new_pair(s.hosts, s.days, pair, now)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=s.secret,
                    namespace=s.namespace,
                    labels={"app.kubernetes.io/managed-by": "modelroute-operator"},
                    resource_version=existing.metadata.resource_version if existing is not None else None,
                ),
                type="kubernetes.io/tls",
                data=made.secret_data(),
            )
            try:
                if existing is None:
                    self._core.create_namespaced_secret(
                        s.namespace,
                        body,
                        field_manager=FIELD_MANAGER,
                        _request_timeout=API_TIMEOUT.request_timeout,
                    )
                else:
                    self._core.replace_namespaced_secret(
                        s.secret,
                        s.namespace,
                        body,
                        field_manager=FIELD_MANAGER,
                        _request_timeout=API_TIMEOUT.request_timeout,
                    )
            except ApiException as exc:
                if exc.status in (409, 422):  # another replica wrote first: take its pair
                    continue
                raise
            return made
        raise RuntimeError(f"could not settle the Secret {s.namespace}/{s.secret} after 5 attempts")

    def _read_secret(self) -> Any:
        try:
            return self._core.read_namespaced_secret(
                self.settings.secret, self.settings.namespace, _request_timeout=API_TIMEOUT.request_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _write_files(self, pair: ServingPair) -> None:
        """Write key then certificate, each by rename, so the server's reload never reads a torn file."""
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        current = self.cert_file.read_bytes() if self.cert_file.exists() else b""
        if current == pair.cert:
            return
        for path, data in (
            (self.key_file, pair.key),
            (self.cert_file, pair.cert),
            (self.cert_dir / "ca.crt", pair.ca),
        ):
            scratch = path.with_suffix(".new")
            scratch.write_bytes(data)
            scratch.chmod(0o600)
            scratch.replace(path)

    def _patch_configurations(self, ca_bundle: str) -> None:
        name = self.settings.configuration
        kinds = (
            (
                self._admission.read_validating_webhook_configuration,
                self._admission.patch_validating_webhook_configuration,
            ),
            (
                self._admission.read_mutating_webhook_configuration,
                self._admission.patch_mutating_webhook_configuration,
            ),
        )
        for read, patch in kinds:
            try:
                configuration = read(name, _request_timeout=API_TIMEOUT.request_timeout)
            except ApiException as exc:
                if exc.status == 404:  # that webhook is switched off in the chart
                    continue
                raise
            operations = ca_bundle_patch(configuration, ca_bundle)
            if operations:
                patch(
                    name,
                    operations,
                    field_manager=FIELD_MANAGER,
                    _request_timeout=API_TIMEOUT.request_timeout,
                )
                log.info(
                    "caBundle of %s %s set (%d webhooks)",
                    configuration.kind or "webhook configuration",
                    name,
                    len(operations),
                )


def renewal_due(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate valid from `not_before` to `not_after` is renewed."""
    return not_after - timedelta(seconds=(not_after - not_before).total_seconds() * RENEW_FRACTION)


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Flags of the operator-kept serving certificate (each defaulting to a `MODELROUTE_*` variable)."""
    e = os.environ if environ is None else environ
    group = parser.add_argument_group("webhook serving certificate kept by the operator")
    group.add_argument(
        "--webhook-manage-cert",
        action="store_true",
        default=e.get("MODELROUTE_WEBHOOK_MANAGE_CERT", "").lower() in ("1", "true", "yes"),
        help="keep the serving certificate in a Secret, write it to --webhook-cert-dir and patch the "
        "webhook configurations' caBundle (env MODELROUTE_WEBHOOK_MANAGE_CERT)",
    )
    group.add_argument(
        "--webhook-secret", default=e.get("MODELROUTE_WEBHOOK_SECRET", "modelroute-webhook-tls")
    )
    group.add_argument(
        "--webhook-secret-namespace",
        default=e.get("MODELROUTE_WEBHOOK_SECRET_NAMESPACE") or e.get("POD_NAMESPACE", "default"),
    )
    group.add_argument(
        "--webhook-configuration",
        default=e.get("MODELROUTE_WEBHOOK_CONFIGURATION", "modelroute"),
        help="name of the Validating- and MutatingWebhookConfiguration whose caBundle is kept",
    )
    group.add_argument(
        "--webhook-host-name",
        action="append",
        default=[h for h in e.get("MODELROUTE_WEBHOOK_HOSTS", "").split(",") if h],
        help="a DNS name or IP the certificate must name (repeatable; env MODELROUTE_WEBHOOK_HOSTS, "
        "comma-separated)",
    )
    group.add_argument(
        "--webhook-cert-days", type=int, default=int(e.get("MODELROUTE_WEBHOOK_CERT_DAYS") or 3650)
    )


def settings_from_args(args: argparse.Namespace) -> CertSettings | None:
    """The certificate keeper's settings; None unless `--webhook-manage-cert` (and webhooks on)."""
    if not (args.webhook_manage_cert and args.webhook_port):
        return None
    if not args.webhook_host_name:
        raise SystemExit("--webhook-manage-cert needs --webhook-host-name (or MODELROUTE_WEBHOOK_HOSTS)")
    return CertSettings(
        namespace=args.webhook_secret_namespace,
        secret=args.webhook_secret,
        configuration=args.webhook_configuration,
        hosts=tuple(args.webhook_host_name),
        days=args.webhook_cert_days,
    )
