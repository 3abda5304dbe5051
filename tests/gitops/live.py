"""Helpers of the GitOps suite's live tests: reading the live config, real sidecars on simulated pods,
and keeping captured objects as fixtures for the offline health-check tests."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from tests.e2e.conftest import next_ip
from tests.kube_harness import Kubectl, SidecarProcess, create_pod, free_port, set_pod_status, wait_for

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_FIXTURES") == "1"


def capture(name: str, obj: dict[str, Any]) -> None:
    """With UPDATE_FIXTURES=1, keep a real object as `fixtures/<name>.json` (without managedFields,
    which no health check reads) for the offline tests. Review the diff."""
    if not UPDATE:
        return
    kept = json.loads(json.dumps(obj))
    kept.get("metadata", {}).pop("managedFields", None)
    FIXTURES.mkdir(exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


def live_version(kubectl: Kubectl, ns: str) -> str:
    cm = kubectl.get("configmap", "modelroute-router-config", ns)
    version = (cm or {}).get("metadata", {}).get("annotations", {}).get("modelroute.dev/config-version", "")
    return str(version).removeprefix("sha256:")


def sidecar_token(kubectl: Kubectl, ns: str) -> str:
    secret = wait_for(lambda: kubectl.get("secret", "modelroute-sidecar-admin", ns), "the sidecar token")
    return base64.b64decode(secret["data"]["token"]).decode()


def start_sidecar(kubectl: Kubectl, ns: str, name: str, workdir: Path) -> SidecarProcess:
    """A real sidecar process at a fresh loopback IP, with its Pod reported Ready at that IP."""
    ip = next_ip()
    sidecar = SidecarProcess(
        name=name,
        ip=ip,
        port=free_port(),
        admin_port=free_port(),
        region="eu-west-1",
        workdir=workdir,
        namespace=ns,
        token=sidecar_token(kubectl, ns),
    )
    create_pod(kubectl, ns, name, sidecar.admin_port)
    sidecar.start()
    set_pod_status(kubectl, ns, name, ip, True)
    return sidecar
