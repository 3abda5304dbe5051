"""The layer contracts of pyproject.toml's [tool.importlinter] hold, and `lint-imports` (run by scripts/test
after mypy) fails on an import that breaks one: each case copies the sources, adds one violating import and
expects the named contract to be reported broken with a non-zero exit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "operator", "sidecar")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

FLOORS = "Operator floors: runtime -> clients -> logic -> contract"
CONTRACT = "The contract imports only pydantic and the standard library"
PURE_LOGIC = "The operator's logic does no I/O"
ENGINE = "The sidecar engine is pure: no sidecar I/O modules, no aiohttp"
OPERATOR_SIDECAR = "The operator imports no sidecar module but the engine"


def copy_sources(target: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, so grimp reads it and not the editable install.
    path = os.pathsep.join(str(root / package) for package in PACKAGES)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    copy_sources(root)
    return root


def test_the_sources_keep_every_contract(sources: Path) -> None:
    result = lint_imports(sources)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (FLOORS, CONTRACT, PURE_LOGIC, ENGINE, OPERATOR_SIDECAR):
        assert f"{name} KEPT" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("operator/modelroute_operator/logic/status.py", "from modelroute_operator.clients import kube", FLOORS),
        ("operator/modelroute_operator/clients/kube.py", "from modelroute_operator.runtime import cli", FLOORS),
        ("contract/modelroute_contract/config.py", "from modelroute_operator.logic import status", FLOORS),
        ("contract/modelroute_contract/config.py", "import re2", CONTRACT),
        ("contract/modelroute_contract/stats.py", "from modelroute_sidecar import stats", CONTRACT),
        ("operator/modelroute_operator/logic/progress.py", "import aiohttp", PURE_LOGIC),
        ("sidecar/modelroute_sidecar/engine/router.py", "from modelroute_sidecar import admin", ENGINE),
        ("sidecar/modelroute_sidecar/engine/filters.py", "import aiohttp", ENGINE),
        ("operator/modelroute_operator/clients/sync.py", "from modelroute_sidecar import stats", OPERATOR_SIDECAR),
    ],
    ids=["logic-imports-clients", "clients-import-runtime", "contract-imports-operator", "contract-imports-re2",
         "contract-imports-sidecar", "logic-imports-aiohttp", "engine-imports-admin", "engine-imports-aiohttp",
         "operator-imports-sidecar-io"],
)
def test_lint_imports_fails_on_an_import_that_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    copy_sources(tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, "scripts/test would pass: " + result.stdout
    assert f"{broken} BROKEN" in result.stdout, result.stdout
