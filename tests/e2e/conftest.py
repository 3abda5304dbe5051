"""Fixtures of the e2e suite: the real control plane (shared with integration), fake upstream processes,
simulated sidecar pods running real sidecar processes on 127.0.0.x addresses."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelroute_contract import SCHEMA_VERSION, config_key
from tests.kube_harness import (
    ControlPlane,
    Kubectl,
    OperatorProcess,
    SidecarProcess,
    UpstreamProcess,
    create_pod,
    free_port,
    new_namespace,
    set_pod_status,
    wait_for,
)

_addresses = itertools.count(20)


def next_ip() -> str:
    """A loopback address no other simulated pod of this run uses."""
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 2}"


@dataclass
class Cluster:
    """One test's namespace with its operator, upstreams and sidecars."""

    plane: ControlPlane
    kubectl: Kubectl
    namespace: str
    workdir: Path
    operator: OperatorProcess
    upstreams: dict[str, UpstreamProcess]
    sidecars: dict[str, SidecarProcess]

    def upstream(self, name: str) -> UpstreamProcess:
        up = UpstreamProcess(name, free_port(), self.workdir / f"upstream-{name}.log")
        up.start()
        self.upstreams[name] = up
        return up

    def token(self) -> str:
        secret = wait_for(
            lambda: self.kubectl.get("secret", "modelroute-sidecar-admin", self.namespace),
            "the sidecar token Secret",
        )
        import base64

        return base64.b64decode(secret["data"]["token"]).decode()

    def live_version(self) -> str:
        cm = self.kubectl.get("configmap", "modelroute-router-config", self.namespace)
        return str(cm["metadata"]["annotations"]["modelroute.dev/config-version"]) if cm else ""

    def live_config_json(self, schema: int = SCHEMA_VERSION) -> str:
        """The ConfigMap's document for `schema` ("" when there is none)."""
        cm = self.kubectl.get("configmap", "modelroute-router-config", self.namespace)
        return str((cm.get("data") or {}).get(config_key(schema), "")) if cm else ""

    def sidecar(
        self,
        name: str,
        region: str,
        ready: bool = True,
        bootstrap: bool = True,
        extra: list[str] | None = None,
        python: str | None = None,
        schema: int = SCHEMA_VERSION,
    ) -> SidecarProcess:
        """Create the Pod, start the sidecar process at the pod's IP, and (optionally) report it Ready.
        `python` runs a sidecar of another build, which boots from the ConfigMap key of `schema`."""
        ip = next_ip()
        sc = SidecarProcess(
            name=name,
            ip=ip,
            port=free_port(),
            admin_port=free_port(),
            region=region,
            workdir=self.workdir,
            namespace=self.namespace,
            token=self.token(),
            config_json=self.live_config_json(schema) if bootstrap else "",
            extra_args=extra or [],
            python=python or sys.executable,
        )
        create_pod(self.kubectl, self.namespace, name, sc.admin_port)
        sc.start()
        self.sidecars[name] = sc
        if ready:
            set_pod_status(self.kubectl, self.namespace, name, ip, True)
        return sc

    def policy_status(self, name: str) -> dict[str, Any]:
        return (self.kubectl.get("routingpolicy", name, self.namespace) or {}).get("status", {})


@pytest.fixture
def cluster(
    plane: ControlPlane, kubectl: Kubectl, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    ns = new_namespace(kubectl, "e2e-" + request.node.name[5:20].replace("_", "-").strip("-"))
    op = OperatorProcess(plane, tmp_path / "operator.log", namespaces=[ns])
    op.start()
    c = Cluster(plane, kubectl, ns, tmp_path, op, {}, {})
    try:
        yield c
    finally:
        for sc in c.sidecars.values():
            sc.stop()
        for up in c.upstreams.values():
            up.kill()
        c.operator.stop()  # the test may have replaced it (operator restart)


OnFailure = Callable[[], str]
