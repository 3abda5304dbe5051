"""Fixtures of the GitOps suite: one operator watching `gitops-*` namespaces (`idem-*` stay unwatched)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube_harness import ControlPlane, Kubectl, OperatorProcess


@pytest.fixture(scope="package")
def gitops_operator(
    plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator for this suite; namespaces named `idem-*` stay unwatched (objects without status).
    Stopped after the suite, so its probes and canary steps do not load the suites that follow."""
    op = OperatorProcess(plane, tmp_path_factory.mktemp("operator") / "operator.log", namespaces=["gitops-*"])
    op.start()
    yield op
    op.stop()
