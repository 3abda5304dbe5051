"""Session fixtures shared by the integration and e2e suites: one real kube-apiserver, CRDs installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube_harness import REPO, ControlPlane, Kubectl, running_control_plane, wait_for


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def kubectl(plane: ControlPlane) -> Kubectl:
    kc = Kubectl(plane)
    kc.run("apply", "--server-side", "-f", str(REPO / "crds"))
    kc.run("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    # Discovery of freshly established CRDs can lag a moment behind the condition.
    wait_for(lambda: kc.run("get", "modelroute", "-A", check=False).returncode == 0, "CRD discovery")
    return kc
