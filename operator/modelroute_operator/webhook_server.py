"""The admission webhook server: HTTPS endpoints the API server calls before it stores our objects or pods.

`POST /validate` checks ModelEndpoints, RoutingPolicies and Canaries against the rest of their namespace,
`POST /mutate-pods` injects the router sidecar, `GET /healthz` answers probes. The decisions are pure
(`admission`); this module reads the namespace through the operator's `KubeApi`, speaks AdmissionReview
over TLS and turns failures into answers: a malformed review gets a 400, and an internal error refuses the
request with the reason (fail closed) rather than letting an unchecked object or an uninjected pod through.

Also here, for local runs, tests and the chart's certificate story without cert-manager: a self-signed CA
and serving certificate made with the `openssl` CLI, and the webhook configurations that register the
server with the API server. The serving certificate is re-read when its file changes (cert-manager renews
it in place), so a renewal needs no restart.

In the operator the server runs on its own thread with its own event loop (`WebhookThread`), and its reads
go through that loop's own worker threads: a reconcile storm, a blocked main loop or a full default
executor never delays an admission answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from .admission import (
    INJECT_NAMESPACE_LABEL,
    AdmissionRequest,
    Enforcement,
    InjectionSettings,
    ReviewError,
    ValidationSettings,
    Verdict,
    credential_secrets,
    mutate_pod,
    parse_review,
    review_response,
    validate,
    wants_sidecar,
)
from .kube import RawObjects
from .resources import GROUP, KINDS, VERSION

log = logging.getLogger(__name__)

MUTATE_PODS_PATH = "/mutate-pods"
"""Injects into pods that ask for the sidecar (the API server allows no query in webhook URLs)."""
MUTATE_NAMESPACE_PODS_PATH = "/mutate-pods/namespace-enabled"
"""Injects into every pod that does not opt out: for the webhook entry selecting opted-in namespaces. The
plain path injects only pods that ask, so a call routed to the wrong path never injects a whole cluster."""
MAX_REVIEW_BYTES = 8 * 1024 * 1024
"""An UPDATE review carries the object twice, and custom objects may reach etcd's 1.5 MiB limit."""


class NamespaceReader(Protocol):
    """What the webhooks read from the API server (`KubeApi` provides it; tests pass a fake)."""

    async def list_objects(self, namespace: str) -> RawObjects: ...


@dataclass(frozen=True)
class WebhookSettings:
    """Where the server listens, its certificate, and what the webhooks do."""

    cert_file: Path
    key_file: Path
    injection: InjectionSettings
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    host: str = "0.0.0.0"
    port: int = 9443
    cert_reload_seconds: float = 60.0


# ---------------------------------------------------------------------------------------- the app

READER = web.AppKey[NamespaceReader]("reader")
SETTINGS = web.AppKey("settings", WebhookSettings)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to a JSON answer: malformed reviews to 400, anything unforeseen to 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except ReviewError as exc:
        return web.json_response({"message": f"bad AdmissionReview: {exc}"}, status=400)
    except Exception:
        log.exception("webhook %s %s failed", request.method, request.path)
        return web.json_response({"message": "internal error in the modelroute webhook"}, status=500)


def create_app(reader: NamespaceReader, settings: WebhookSettings) -> web.Application:
    """The webhook application (TLS is the site's business, so tests can serve it over plain HTTP)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REVIEW_BYTES)
    app[READER] = reader
    app[SETTINGS] = settings
    app.router.add_post("/validate", handle_validate)
    app.router.add_post(MUTATE_PODS_PATH, handle_mutate_pods)
    app.router.add_post(MUTATE_NAMESPACE_PODS_PATH, handle_mutate_pods)
    app.router.add_get("/healthz", handle_healthz)
    return app


async def read_review(request: web.Request) -> AdmissionRequest:
    """The AdmissionReview in the request body; ReviewError when there is none."""
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReviewError(f"body is not JSON ({exc})") from None
    return parse_review(body)


async def handle_validate(request: web.Request) -> web.Response:
    """POST /validate: a change to one of our objects, checked against its namespace."""
    review = await read_review(request)
    try:
        objects = await request.app[READER].list_objects(review.namespace)
        verdict = validate(review, objects.all(), request.app[SETTINGS].validation)
    except Exception as exc:
        # Fail closed, and say why: letting an unchecked change through would defeat the webhook.
        log.exception("validating %s %s/%s failed", review.kind, review.namespace, review.name)
        verdict = _unavailable(f"the modelroute webhook could not check this {review.kind}: {exc}")
    _log_verdict("validate", review, verdict)
    return web.json_response(review_response(review.uid, verdict))


async def handle_mutate_pods(request: web.Request) -> web.Response:
    """POST /mutate-pods[/namespace-enabled]: inject the router sidecar into a new pod that wants it."""
    review = await read_review(request)
    namespace_injection = request.path == MUTATE_NAMESPACE_PODS_PATH
    try:
        secrets_ = await _credentials_to_mount(request.app[READER], review, namespace_injection)
        verdict = mutate_pod(review, request.app[SETTINGS].injection, namespace_injection, secrets_)
    except Exception as exc:
        # A sidecar without its credentials mounts would fail every upstream call until the pod is
        # recreated, and one left out would let the app bypass residency rules: refuse, and the pod's
        # controller retries in a moment.
        log.exception("injecting into pod %s/%s failed", review.namespace, review.name)
        verdict = _unavailable(f"the modelroute webhook could not prepare this pod's sidecar: {exc}")
    _log_verdict("inject", review, verdict)
    return web.json_response(review_response(review.uid, verdict))


async def _credentials_to_mount(
    reader: NamespaceReader, review: AdmissionRequest, namespace_injection: bool
) -> tuple[str, ...]:
    """The credentials Secrets of the namespace's ModelEndpoints, read only for pods that get the sidecar:
    this webhook may see every pod of the cluster."""
    pod = review.object
    if review.kind != "Pod" or pod is None or not wants_sidecar(pod, namespace_injection):
        return ()
    return credential_secrets((await reader.list_objects(review.namespace)).endpoints)


async def handle_healthz(request: web.Request) -> web.Response:
    """GET /healthz."""
    return web.json_response({"status": "ok"})


def _unavailable(message: str) -> Verdict:
    return Verdict(allowed=False, code=503, reason="ServiceUnavailable", message=message)


def _log_verdict(webhook: str, review: AdmissionRequest, verdict: Verdict) -> None:
    subject = f"{review.operation} {review.kind} {review.namespace}/{review.name or '(generated name)'}"
    if not verdict.allowed:
        log.info("%s: refused %s: %s", webhook, subject, verdict.message)
    elif verdict.patch:
        log.info("%s: injected the sidecar into %s", webhook, subject)
    else:
        log.debug("%s: allowed %s", webhook, subject)
    for warning in verdict.warnings:
        log.info("%s: warning on %s: %s", webhook, subject, warning)


# ------------------------------------------------------------------------------------- the server


class WebhookServer:
    """The webhook app on a TLS port; `start()` on operator startup, `stop()` on cleanup."""

    def __init__(self, reader: NamespaceReader, settings: WebhookSettings) -> None:
        self._reader = reader
        self._settings = settings
        self._runner: web.AppRunner | None = None
        self._reloader: asyncio.Task[None] | None = None
        self.port = settings.port
        """The bound port (differs from the settings when they ask for port 0)."""

    async def start(self) -> None:
        """Load the certificate and listen; raises when the certificate or the port is unusable."""
        settings = self._settings
        context = tls_context(settings.cert_file, settings.key_file)
        runner = web.AppRunner(create_app(self._reader, settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._reloader = asyncio.get_running_loop().create_task(
            keep_certificate_fresh(
                context, settings.cert_file, settings.key_file, settings.cert_reload_seconds
            ),
            name="webhook-cert-reloader",
        )
        log.info("admission webhooks listening on https://%s:%d", settings.host, self.port)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
            self._reloader = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class WebhookThread:
    """A `WebhookServer` on a thread of its own with its own event loop, so nothing the operator's loop
    does (or fails to do) can starve admission. `start()` returns once it listens (or raises why not)."""

    def __init__(self, reader: NamespaceReader, settings: WebhookSettings) -> None:
        self._reader = reader
        self._settings = settings
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = settings.port

    async def start(self) -> None:
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="admission", daemon=True)
        self._thread.start()
        self.port = await asyncio.wrap_future(ready)

    def _serve(self, ready: concurrent.futures.Future[int]) -> None:
        async def main() -> None:
            server = WebhookServer(self._reader, self._settings)
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                await server.start()
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(server.port)
            try:
                await self._stop.wait()
            finally:
                await server.stop()

        asyncio.run(main())

    async def stop(self) -> None:
        """Stop listening and end the thread (idempotent)."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None


def tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) holding the serving certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _stamp(*paths: Path) -> tuple[tuple[int, int], ...]:
    # stat follows the `..data` symlink a kubelet swaps when a mounted Secret changes.
    return tuple((s.st_mtime_ns, s.st_size) for s in (p.stat() for p in paths))


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


# ------------------------------------------------------------------------------------ certificates


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


# ---------------------------------------------------------------------------------- registration


def webhook_configurations(
    name: str,
    base_url: str,
    ca_bundle: str,
    scope: Mapping[str, str] | None = None,
    validation_failure_policy: str = "Ignore",
    injection_failure_policy: str = "Fail",
    pod_opt_in: bool = True,
    timeout_seconds: int = 10,
    excluded_namespaces: Sequence[str] = ("kube-system", "kube-node-lease"),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Validating- and MutatingWebhookConfiguration registering a server reachable at `base_url`.

    `scope` adds namespace labels every webhook requires (tests use it to stay out of each other's way).
    Validation fails open by default: the operator checks every object again and keeps the last good
    config, so an unavailable webhook must not block every change. Injection into opted-in namespaces
    fails closed: a pod there without its router would bypass residency rules. The entry for pods that
    opt in on their own sees every namespace that has not chosen, so it always fails open; it skips
    `excluded_namespaces` (add the operator's own: its pods must not wait on a webhook that is not up yet).
    """
    labels = dict(scope or {})

    def client(path: str) -> dict[str, Any]:
        return {"url": f"{base_url.rstrip('/')}{path}", "caBundle": ca_bundle}

    def entry(webhook: str, path: str, rules: list[dict[str, Any]], failure: str) -> dict[str, Any]:
        return {
            "name": f"{webhook}.{GROUP}",
            "clientConfig": client(path),
            "rules": rules,
            "failurePolicy": failure,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": timeout_seconds,
        }

    ours = [
        {
            "apiGroups": [GROUP],
            "apiVersions": [VERSION],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": [kind.plural for kind in KINDS],
            "scope": "Namespaced",
        }
    ]
    pods = [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                **entry("validate", "/validate", ours, validation_failure_policy),
                "namespaceSelector": {"matchLabels": labels},
            }
        ],
    }
    namespace_entry = {
        **entry(
            "inject-namespace",
            MUTATE_NAMESPACE_PODS_PATH,
            pods,
            injection_failure_policy,
        ),
        "namespaceSelector": {"matchLabels": {**labels, INJECT_NAMESPACE_LABEL: "enabled"}},
        "reinvocationPolicy": "Never",
    }
    pod_entry = {
        **entry("inject-pod", MUTATE_PODS_PATH, pods, "Ignore"),
        "namespaceSelector": {
            "matchLabels": labels,
            "matchExpressions": [
                {"key": INJECT_NAMESPACE_LABEL, "operator": "NotIn", "values": ["enabled", "disabled"]},
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": list(excluded_namespaces),
                },
            ],
        },
        "reinvocationPolicy": "Never",
    }
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [namespace_entry, *([pod_entry] if pod_opt_in else [])],
    }
    return validating, mutating


# ------------------------------------------------------------------------------ command line


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
"""Proxy variables the injected sidecar gets when the operator is told them."""


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The webhook server's flags (each defaulting to a `MODELROUTE_*` variable), for any entry point."""
    e = os.environ if environ is None else environ
    defaults = InjectionSettings(image="")
    group = parser.add_argument_group("admission webhooks")

    def flag(name: str, env: str, default: object, kind: Callable[[str], Any] = str, **extra: Any) -> None:
        value = kind(e.get(env, str(default)))
        group.add_argument(name, type=kind, default=value, help=f"(env {env})", **extra)

    flag("--webhook-port", "MODELROUTE_WEBHOOK_PORT", 0, int)
    flag("--webhook-host", "MODELROUTE_WEBHOOK_HOST", "0.0.0.0")
    flag("--webhook-cert-dir", "MODELROUTE_WEBHOOK_CERT_DIR", "/etc/modelroute/webhook")
    flag("--webhook-cert-file", "MODELROUTE_WEBHOOK_CERT_FILE", "")  # default: <cert dir>/tls.crt
    flag("--webhook-key-file", "MODELROUTE_WEBHOOK_KEY_FILE", "")  # default: <cert dir>/tls.key
    choices = [m.value for m in Enforcement]
    flag("--webhook-missing-references", "MODELROUTE_WEBHOOK_MISSING_REFERENCES", "Refuse", choices=choices)
    flag("--webhook-referenced-deletes", "MODELROUTE_WEBHOOK_REFERENCED_DELETES", "Refuse", choices=choices)
    flag("--sidecar-image", "MODELROUTE_SIDECAR_IMAGE", "modelroute/sidecar:latest")
    flag("--sidecar-pull-policy", "MODELROUTE_SIDECAR_IMAGE_PULL_POLICY", defaults.image_pull_policy)
    flag("--sidecar-port", "MODELROUTE_SIDECAR_PORT", defaults.proxy_port, int)
    flag("--sidecar-admin-port", "MODELROUTE_SIDECAR_ADMIN_PORT", defaults.admin_port, int)
    flag("--sidecar-admin-port-name", "MODELROUTE_SIDECAR_ADMIN_PORT_NAME", defaults.admin_port_name)
    flag("--sidecar-region", "MODELROUTE_SIDECAR_REGION", "")
    flag("--sidecar-region-label", "MODELROUTE_SIDECAR_REGION_LABEL", defaults.region_label)
    flag("--sidecar-workers", "MODELROUTE_SIDECAR_WORKERS", defaults.workers, int)
    flag("--sidecar-log-level", "MODELROUTE_SIDECAR_LOG_LEVEL", defaults.log_level)
    flag(
        "--sidecar-resources", "MODELROUTE_SIDECAR_RESOURCES", json.dumps(defaults.resources), parse_resources
    )
    flag("--sidecar-run-as-user", "MODELROUTE_SIDECAR_RUN_AS_USER", defaults.run_as_user, int)
    flag("--sidecar-native", "MODELROUTE_SIDECAR_NATIVE", "true", choices=["true", "false"])
    for variable in PROXY_VARIABLES:  # the sidecar's outbound proxy for upstream calls
        flag(f"--sidecar-{variable.lower().replace('_', '-')}", f"MODELROUTE_SIDECAR_{variable}", "")


def parse_resources(text: str) -> dict[str, dict[str, str]]:
    """`{"requests": {"cpu": "50m"}, "limits": {...}}` as JSON (Helm's `toJson` of the values)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if (
        not isinstance(value, Mapping)
        or not set(value) <= {"requests", "limits"}
        or not all(isinstance(q, Mapping) for q in value.values() if q is not None)
    ):
        raise argparse.ArgumentTypeError("expected a JSON object with `requests` and/or `limits` maps")
    # Helm renders `cpu: 1` as a number; Kubernetes quantities are strings.
    return {kind: {k: str(v) for k, v in (quantities or {}).items()} for kind, quantities in value.items()}


def settings_from_args(args: argparse.Namespace) -> WebhookSettings | None:
    """The webhook settings from parsed flags; None when `--webhook-port` is 0 (webhooks off)."""
    if not args.webhook_port:
        return None
    cert_dir = Path(args.webhook_cert_dir)
    return WebhookSettings(
        cert_file=Path(args.webhook_cert_file) if args.webhook_cert_file else cert_dir / "tls.crt",
        key_file=Path(args.webhook_key_file) if args.webhook_key_file else cert_dir / "tls.key",
        host=args.webhook_host,
        port=args.webhook_port,
        validation=ValidationSettings(
            missing_references=Enforcement(args.webhook_missing_references),
            referenced_deletes=Enforcement(args.webhook_referenced_deletes),
        ),
        injection=InjectionSettings(
            image=args.sidecar_image,
            image_pull_policy=args.sidecar_pull_policy,
            proxy_port=args.sidecar_port,
            admin_port=args.sidecar_admin_port,
            admin_port_name=args.sidecar_admin_port_name,
            region=args.sidecar_region,
            region_label=args.sidecar_region_label,
            workers=args.sidecar_workers,
            log_level=args.sidecar_log_level,
            resources={k: v for k, v in args.sidecar_resources.items() if v},
            run_as_user=args.sidecar_run_as_user,
            native_sidecar=args.sidecar_native == "true",
            upstream_proxy={
                variable: value
                for variable in PROXY_VARIABLES
                if (value := getattr(args, f"sidecar_{variable.lower()}"))
            },
        ),
    )


async def serve(settings: WebhookSettings) -> None:
    """Run the webhook server alone until cancelled (`python -m modelroute_operator.webhook_server serve`)."""
    from .kube import KubeApi, load_client_config

    load_client_config()
    kube = KubeApi()
    server = WebhookServer(kube, settings)
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        kube.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelroute_operator.webhook_server", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the webhook server on its own")
    add_arguments(serve_parser)
    certs = commands.add_parser(
        "certs", help="write a self-signed CA and serving certificate; print the caBundle"
    )
    certs.add_argument("--dir", type=Path, required=True)
    certs.add_argument("--host", action="append", default=[], help="DNS name or IP (repeatable)")
    certs.add_argument("--service", help="also the DNS names of this Service (needs --namespace)")
    certs.add_argument("--namespace", default="default")
    certs.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "certs":
        hosts = [*args.host, *(service_hosts(args.service, args.namespace) if args.service else [])]
        if not hosts:
            parser.error("certs needs --host or --service")
        print(generate_certificates(args.dir, hosts, args.days).ca_bundle)
        return 0
    settings = settings_from_args(args)
    if settings is None:
        parser.error("serve needs --webhook-port")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
