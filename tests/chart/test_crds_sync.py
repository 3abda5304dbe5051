"""The chart ships byte-identical copies of crds/*.yaml (scripts/sync-chart-crds keeps them in step)."""

from __future__ import annotations

import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

from tests.chart.helm import CHART
from tests.kube_harness import REPO

SCRIPT = REPO / "scripts" / "sync-chart-crds"


def load_script() -> ModuleType:
    """The script as a module (it has no .py suffix, so it needs an explicit loader)."""
    loader = SourceFileLoader("sync_chart_crds", str(SCRIPT))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_chart_crds_are_exact_copies_of_the_generated_ones() -> None:
    source = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert source == ["modelcanaries.yaml", "modelendpoints.yaml", "routingpolicies.yaml"]
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/modelroute/crds/{name} drifted from crds/{name}: run scripts/sync-chart-crds"
        )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == source


def test_check_mode_passes_on_the_repository() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_drift_is_found_and_sync_repairs_it(tmp_path: Path) -> None:
    script = load_script()
    source, target = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "a.yaml").write_text("kind: A\n")
    (source / "b.yaml").write_text("kind: B\n")
    target.mkdir()
    (target / "a.yaml").write_text("kind: A-edited\n")
    (target / "old.yaml").write_text("kind: Old\n")
    problems = script.drift(source, target)
    assert any("missing" in p and "b.yaml" in p for p in problems)
    assert any("stale" in p and "old.yaml" in p for p in problems)
    assert any("differs" in p and "a.yaml" in p for p in problems)
    script.sync(source, target)
    assert script.drift(source, target) == []
    assert sorted(p.name for p in target.iterdir()) == ["a.yaml", "b.yaml"]
