"""The README's first command works: the demo starts everything, routes requests and shows failover.

Here on the local plane (`--local`: kube-apiserver + etcd, the operator and a sidecar as processes);
`tests/cluster/test_demo.py` runs the same story on the real single-node cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.kube_harness import REPO

pytestmark = pytest.mark.e2e


def assert_the_demo_story(out: str) -> None:
    """What every run of the demo must show, wherever it runs."""
    assert "200  llama-70b  eu-west-1" in out, out
    assert "200  llama-70b  eu-central-1" in out, "failover to the next EU region"
    assert "200  llama-70b  us-east-1     default      public" in out, "public traffic may leave the EU"
    assert "llama-70b  us-east-1     eu-personal" not in out, "EU personal data must never reach the US"
    assert "allowed for data class 'eu-personal' are unhealthy" in out, "fail closed with the reason"
    assert "ReplicaUnhealthy" in out, "the operator's Events"


def test_demo_routes_requests_and_fails_over() -> None:
    # scripts/demo only bootstraps and then runs this; the bootstrap is what .ci/run already did.
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--local"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_the_demo_story(proc.stdout)
