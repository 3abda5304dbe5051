"""Entry point of the operator process (`modelroute-operator`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

import kopf

from modelroute_operator.clients import metrics
from modelroute_operator.clients.kube import KubeApi, load_client_config
from modelroute_operator.clients.leader import LeaderElector, LeaseKeeper, LeaseSettings
from modelroute_operator.runtime import handlers  # noqa: F401  (registers the handlers
from modelroute_operator.runtime.cert_keeper import CertKeeper
from modelroute_operator.runtime.cert_keeper import add_arguments as add_cert_arguments
from modelroute_operator.runtime.cert_keeper import settings_from_args as cert_settings
from modelroute_operator.runtime.health import HealthServer, Heartbeat
from modelroute_operator.runtime.webhook_args import add_arguments as add_webhook_arguments
from modelroute_operator.runtime.webhook_args import settings_from_args as webhook_settings
from modelroute_operator.runtime.webhook_args import sidecar_ports_from_args
from modelroute_operator.runtime.webhook_server import WebhookThread

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(prog="modelroute-operator", description="The modelroute operator.")
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[n for n in env.get("MODELROUTE_NAMESPACES", "").split(",") if n],
        help="namespace to watch, globs allowed (repeatable; default: all; env MODELROUTE_NAMESPACES)",
    )
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=env.get("MODELROUTE_LEADER_ELECT", "").lower() in ("1", "true", "yes"),
        help="run several replicas safely: only the holder of a Lease acts (env MODELROUTE_LEADER_ELECT)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: POD_NAMESPACE or default)",
    )
    parser.add_argument("--lease-name", default="modelroute-operator")
    parser.add_argument(
        "--lease-seconds",
        type=int,
        default=15,
        help="lease duration (default 15; the leader gives up after 2/3 of it without a renewal)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(env.get("MODELROUTE_HEALTH_PORT") or 0),
        help="serve /healthz, /readyz and /metrics, leader or standby (0: off; env MODELROUTE_HEALTH_PORT)",
    )
    parser.add_argument(
        "--wedged-seconds",
        type=float,
        default=float(env.get("MODELROUTE_WEDGED_SECONDS") or 15),
        help="/healthz fails when the main event loop has not run for this long (default 15)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=env.get("MODELROUTE_LOG_FORMAT", "text"),
        help="`json`: one JSON object per line (timestamp, severity, message, object); "
        "env MODELROUTE_LOG_FORMAT",
    )
    add_webhook_arguments(parser)
    add_cert_arguments(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    # Health, metrics and admission are served by every replica, standbys included, so they start before
    # leader election: a standby is alive and ready while it waits for the Lease.
    heartbeat = Heartbeat(args.wedged_seconds)
    beating = asyncio.get_running_loop().create_task(heartbeat.beat(), name="heartbeat")
    health = HealthServer(heartbeat, args.health_port) if args.health_port else None
    if health is not None:
        health.start()
    try:
        return await run_with_webhooks(args, heartbeat)
    finally:
        beating.cancel()
        if health is not None:
            await asyncio.to_thread(health.stop)


async def run_with_webhooks(args: argparse.Namespace, heartbeat: Heartbeat) -> int:
    webhooks: WebhookThread | None = None
    webhook_kube: KubeApi | None = None
    keeper: asyncio.Task[None] | None = None
    if (settings := webhook_settings(args)) is not None:
        load_client_config()
        if (certs := cert_settings(args)) is not None:
            # The pair must be on disk before the server loads it; then it is kept fresh in the background.
            cert_keeper = CertKeeper(certs, settings.cert_file.parent)
            await asyncio.to_thread(cert_keeper.ensure)
            keeper = asyncio.get_running_loop().create_task(cert_keeper.keep(), name="webhook-cert-keeper")
        webhook_kube = KubeApi()
        webhooks = WebhookThread(webhook_kube, settings)  # admission never waits on reconciles
        await webhooks.start()
    heartbeat.ready = True  # the webhooks listen (when on): this replica can take its share
    try:
        return await run_operator(args)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if webhooks is not None:
            await webhooks.stop()
        if webhook_kube is not None:
            webhook_kube.close()


async def run_operator(args: argparse.Namespace) -> int:
    """Acquire leadership when asked to, then run the Kopf operator until stopped or leadership is lost."""
    stop = asyncio.Event()
    elector: LeaderElector | None = None
    keeper: LeaseKeeper | None = None
    if args.leader_elect:
        load_client_config()
        elector = LeaderElector(
            LeaseSettings.for_lease(args.lease_namespace, args.lease_name, args.lease_seconds)
        )
        await elector.acquire()
        keeper = LeaseKeeper(elector, on_end=stop.set)  # renewals on their own thread and loop
        keeper.start()
    metrics.LEADER.set(1)
    try:
        await kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
            stop_flag=stop,
            # The reconciler refuses replica URLs at the ports the injector gives sidecars, as admission does.
            # and lists at start-up only the namespaces it watches.
            memo=kopf.Memo(sidecar_ports=sidecar_ports_from_args(args), namespaces=list(args.namespace)),
        )
    finally:
        metrics.LEADER.set(0)
        if keeper is not None:
            await keeper.stop()
        if elector is not None and not elector.lost.is_set():
            # Bounded like every renewal: a hung API server must not hold up the exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.to_thread(elector.release), elector.settings.renew_deadline_seconds
                )
    # Leadership lost: exit non-zero so the pod restarts and queues up as a standby.
    return 1 if elector is not None and elector.lost.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Kopf configures the root logger, so our modules' lines share its format.
    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, log_format=log_format)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # Kopf logs every handled watch event at INFO; our own pass lines say what happened.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
