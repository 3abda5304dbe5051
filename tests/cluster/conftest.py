"""Fixtures of the real-cluster tier (`-m cluster`): the single-node cluster of `scripts/cluster`, the
images of `scripts/images`, fake model servers on the host side of the node's link, and the figures the
tier measures (printed at the end of the run and written to `.local/cluster/figures.json`).

The cluster is brought up once per session (about 16 s cold, 6 s when its state is kept; the first run on
a machine also builds the node binaries and images) and brought down again unless it was up before.
Deselect the tier with `-m "not cluster"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kube_harness import REPO, Kubectl, free_port, wait_for

sys.path.insert(0, str(REPO / "scripts"))
import cluster as node_cluster

FIGURES: dict[str, Any] = {}
"""What the tier measured, by name (seconds, MiB); printed in the terminal summary."""


@dataclass
class NodeCluster:
    """Duck-typed like ControlPlane for tests.kube_harness.Kubectl: kubectl, kubectl_env()."""

    state: Path
    bin_dir: Path

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    def kubectl_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _up_already() -> bool:
    return (node_cluster.STATE / "up").exists() and all(node_cluster.alive(c) for c in node_cluster.COMPONENTS)


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[NodeCluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tier needs root (network namespace, containerd, kubelet); deselect it with "
                    '-m "not cluster"')
    was_up = _up_already()
    t0 = time.monotonic()
    # Images first (rebuilt only when the wheel's content changed), one timed cold start each.
    subprocess.run(["bash", str(REPO / "scripts" / "images"), "--runs", "1"], check=True, cwd=REPO)
    FIGURES["images"] = json.loads((REPO / ".local" / "images.json").read_text())
    t1 = time.monotonic()
    subprocess.run(["bash", str(REPO / "scripts" / "cluster"), "up"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    FIGURES["images_build_or_check_s"] = round(t1 - t0, 1)
    FIGURES["cluster_up_s"] = round(time.monotonic() - t1, 1)
    yield NodeCluster(node_cluster.STATE, node_cluster.CACHE / "k8s" / node_cluster.K8S_VERSION)
    if not was_up:
        subprocess.run(["bash", str(REPO / "scripts" / "cluster"), "down"], check=False, cwd=REPO)


@pytest.fixture(scope="session")
def ckubectl(real_cluster: NodeCluster) -> Kubectl:
    return Kubectl(real_cluster)  # type: ignore[arg-type]


@dataclass
class HostUpstream:
    """A fake model server on the host side of the node link (pods reach it, nothing else does)."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{node_cluster.HOST_IP}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1"

    def start(self) -> HostUpstream:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.upstream", "--host", node_cluster.HOST_IP, "--port",
             str(self.port), "--name", self.name],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
        )
        wait_for(self._listening, f"fake upstream {self.name}", 20)
        return self

    def _listening(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base}/_fake/requests", timeout=5) as r:
            result: list[dict[str, Any]] = json.loads(r.read())
            return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Upstreams:
    workdir: Path
    started: dict[str, HostUpstream] = field(default_factory=dict)

    def __call__(self, name: str) -> HostUpstream:
        if name not in self.started:
            self.started[name] = HostUpstream(name, free_port(), self.workdir / f"upstream-{name}.log").start()
        return self.started[name]


@pytest.fixture(scope="session")
def host_upstreams(real_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    ups = Upstreams(tmp_path_factory.mktemp("upstreams"))
    yield ups
    for up in ups.started.values():
        up.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    out = REPO / ".local" / "cluster" / "figures.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=1) + "\n")
    terminalreporter.section("real-cluster figures")
    for key, value in FIGURES.items():
        if key == "images":
            for _name, entry in value.items():
                cold = entry.get("cold_start_seconds") or ["-"]
                terminalreporter.write_line(
                    f"image {entry['reference']}: archive {entry['archive_bytes'] / 2**20:.1f} MiB, "
                    f"unpacked {entry['unpacked_bytes'] / 2**20:.1f} MiB, cold start {cold[0]} s"
                )
        else:
            terminalreporter.write_line(f"{key}: {value}")
    terminalreporter.write_line(f"(written to {out})")
