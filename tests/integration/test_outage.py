"""The API server goes away and comes back: the operator rides it out (no crash, no crash loop) and
converges again on what changed meanwhile."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from control_plane import _http_ok
from tests.kube_harness import (
    ControlPlane,
    Kubectl,
    OperatorProcess,
    new_namespace,
    running_control_plane,
    wait_for,
)
from tests.manifests import endpoint, policy, to_yaml

pytestmark = pytest.mark.integration


def version(kubectl: Kubectl, ns: str) -> str:
    cm = kubectl.get("configmap", "modelroute-router-config", ns)
    return str(cm["metadata"]["annotations"]["modelroute.dev/config-version"]) if cm else ""


def test_operator_survives_an_api_server_outage(tmp_path: Path) -> None:
    with running_control_plane(tmp_path / "cp") as plane:  # a private control plane: this test stops it
        kubectl = Kubectl(plane)
        kubectl.run("apply", "--server-side", "-f", "crds/")
        kubectl.run("wait", "--for=condition=Established", "crd", "--all")
        wait_for(lambda: kubectl.run("get", "modelroute", "-A", check=False).returncode == 0, "discovery")
        ns = new_namespace(kubectl, "outage")
        op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
        op.start()
        try:
            kubectl.apply(to_yaml(endpoint(), policy()), ns)
            first = wait_for(lambda: version(kubectl, ns), "the first config")

            plane.stop_apiserver()
            offset = len(op.log())
            # The operator notices (its watches fail) and keeps running.
            wait_for(lambda: len(op.log()) > offset, "the operator to notice the outage", 60)
            assert op.proc is not None and op.proc.poll() is None

            plane.start_apiserver()
            kubectl.apply(to_yaml(policy(models=["support-bot", "after-outage"])), ns)
            second = wait_for(
                lambda: (v := version(kubectl, ns)) not in ("", first) and v,
                "a config after the outage",
                90,
            )
            assert second != first
            assert op.proc.poll() is None, "the operator must not have exited"
        finally:
            op.stop()


CATCH_UP_SECONDS = 2.0
"""The issue's bound: back in sync within 2 s of the API server answering again."""


def readyz(plane: ControlPlane) -> bool:
    return _http_ok(f"{plane.server}/readyz", plane.admin_token)


def test_the_operator_catches_up_within_2s_of_the_api_server_answering(tmp_path: Path) -> None:
    with running_control_plane(tmp_path / "cp") as plane:
        kubectl = Kubectl(plane)
        kubectl.run("apply", "--server-side", "-f", "crds/")
        kubectl.run("wait", "--for=condition=Established", "crd", "--all")
        wait_for(lambda: kubectl.run("get", "modelroute", "-A", check=False).returncode == 0, "discovery")
        ns = new_namespace(kubectl, "catchup")
        op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
        op.start()
        try:
            kubectl.apply(to_yaml(endpoint(), policy()), ns)
            first = wait_for(lambda: version(kubectl, ns), "the first config")
            catch_ups: list[float] = []
            current = first
            for round_ in range(2):
                offset = len(op.log())
                plane.stop_apiserver()
                # Let the outage last until Kopf has retried many times: with its default backoff (1, 1,
                # 2, 3, 5, 8 s ...) the watches would then wait many seconds before their next attempt.
                wait_for(
                    lambda offset=offset: op.log_lines_since(offset).count("Request attempt") >= 12,  # type: ignore[misc]
                    "Kopf to retry through the outage",
                    120,
                )
                start_api = threading.Thread(target=plane.start_apiserver)
                start_api.start()
                # The moment the API server answers /readyz, change something and time the catch-up.
                wait_for(lambda: readyz(plane), "the API server to answer", 90, interval=0.02)
                answered = time.monotonic()
                kubectl.apply(to_yaml(policy(models=["support-bot", f"after-outage-{round_}"])), ns)
                current = wait_for(
                    lambda before=current: (v := version(kubectl, ns)) not in ("", before) and v,  # type: ignore[misc]
                    "the new config",
                    30,
                    interval=0.05,
                )
                catch_ups.append(time.monotonic() - answered)
                start_api.join()
            print(f"catch-up after an outage (s): {', '.join(f'{c:.2f}' for c in catch_ups)}")
            assert max(catch_ups) <= CATCH_UP_SECONDS, catch_ups
            assert op.proc is not None and op.proc.poll() is None
        finally:
            op.stop()
