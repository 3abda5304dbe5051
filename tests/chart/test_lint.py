"""`helm lint --strict` passes with the defaults and with every example values file under ci/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import CHART, CI_VALUES, run_helm


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_helm_lint_strict(values: Path) -> None:
    proc = run_helm("lint", "--strict", str(CHART), "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_ci_values_cover_the_main_switches() -> None:
    names = {p.name.removesuffix("-values.yaml") for p in CI_VALUES}
    assert {"default", "namespaced-rbac", "cert-manager", "monitoring-on", "minimal"} <= names
