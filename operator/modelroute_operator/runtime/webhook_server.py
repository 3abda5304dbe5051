"""The admission webhook server: HTTPS endpoints the API server calls before it stores our objects or pods.

`POST /validate` checks ModelEndpoints, RoutingPolicies and Canaries against the rest of their namespace,
`POST /mutate-pods` injects the router sidecar, `GET /healthz` answers probes. The decisions are pure
(`admission`); this module reads the namespace through the operator's `KubeApi`, speaks AdmissionReview
over TLS and turns failures into answers: a malformed review gets a 400, and an internal error refuses the
request with the reason (fail closed) rather than letting an unchecked object or an uninjected pod through.

The serving certificate and its reload are `certificates`, the flags `webhook_args`, and the webhook
configurations that register the server `logic.registration`.

In the operator the server runs on its own thread with its own event loop (`WebhookThread`), and its reads
go through that loop's own worker threads: a reconcile storm, a blocked main loop or a full default
executor never delays an admission answer.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from modelroute_operator.clients.kube import RawObjects
from modelroute_operator.logic.injection import (
    credential_secrets,
    mutate_pod,
    wants_sidecar,
)
from modelroute_operator.logic.learned import referenced_config_maps
from modelroute_operator.logic.registration import MUTATE_NAMESPACE_PODS_PATH, MUTATE_PODS_PATH
from modelroute_operator.logic.review import (
    AdmissionRequest,
    ReviewError,
    Verdict,
    parse_review,
    review_response,
)
from modelroute_operator.logic.validation import validate
from modelroute_operator.runtime.certificates import (
    generate_certificates,
    keep_certificate_fresh,
    service_hosts,
    tls_context,
)
from modelroute_operator.runtime.webhook_args import WebhookSettings, add_arguments, settings_from_args

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 8 * 1024 * 1024
"""An UPDATE review carries the object twice, and custom objects may reach etcd's 1.5 MiB limit."""


class NamespaceReader(Protocol):
    """What the webhooks read from the API server (`KubeApi` provides it; tests pass a fake)."""

    async def list_objects(self, namespace: str) -> RawObjects: ...

    async def read_config_maps(self, namespace: str, names: Iterable[str]) -> dict[str, dict[str, str]]: ...


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
        reader = request.app[READER]
        objects = await reader.list_objects(review.namespace)
        # Heads the incoming policy names that no stored policy did (a new or changed reference).
        config_maps = dict(objects.config_maps)
        if review.kind == "RoutingPolicy" and review.object is not None:
            wanted = referenced_config_maps([review.object]) - set(config_maps)
            if wanted:
                config_maps.update(await reader.read_config_maps(review.namespace, wanted))
        verdict = validate(review, objects.all(), request.app[SETTINGS].validation, config_maps)
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


async def serve(settings: WebhookSettings) -> None:
    """Run the webhook server alone until cancelled
    (`python -m modelroute_operator.runtime.webhook_server serve`)."""
    from modelroute_operator.clients.kube import KubeApi, load_client_config

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
        prog="python -m modelroute_operator.runtime.webhook_server", description=__doc__.splitlines()[0]
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
