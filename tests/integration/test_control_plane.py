"""The local control plane is the pinned Kubernetes release, and a second start reuses the cached build."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.kube_harness import REPO, Kubectl

pytestmark = pytest.mark.integration

PINNED = "v1.34.4"


def test_kubectl_version_reports_the_pinned_release(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == PINNED
    assert versions["clientVersion"]["gitVersion"] == PINNED


def test_a_second_build_is_a_cache_hit() -> None:
    started = time.monotonic()
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "k8s-bins" / "build.sh"), "k8s"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "K8S_VERSION": PINNED},
    )
    assert out.stdout.strip().endswith(f"/k8s/{PINNED}")
    assert "building" not in out.stderr, out.stderr
    assert time.monotonic() - started < 10
