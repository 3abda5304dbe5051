"""Sidecars of earlier commits, for version-skew tests: each built once per machine into a virtualenv under
`$MODELROUTE_CACHE/sidecars/` (default ~/.cache/modelroute), keyed by commit and Python version.

A build is `git archive <commit>` of this repository installed with pip into a fresh venv (that commit's
own pyproject names its dependencies), so a fresh machine needs the commit in its clone (not a shallow
one) and a reachable package index once. Concurrent test runs take a file lock; a build is moved into
place only when complete, so an interrupted one is started again rather than half used.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCHEMA_1_COMMIT = "7a48ff9f28d5460ab3456310f146b4eb0f9be509"
"""The last commit whose sidecar speaks schema 1 only (see `modelroute_contract.schemas`)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MODELROUTE_CACHE") or Path.home() / ".cache" / "modelroute") / "sidecars"


def ensure_sidecar_build(commit: str) -> Path:
    """The Python interpreter of a venv holding the sidecar of `commit`, built on first use."""
    key = f"{commit[:12]}-py{sys.version_info.major}.{sys.version_info.minor}"
    root = cache_dir()
    target = root / key
    done = target / "BUILT"
    if done.exists():
        return target / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same commit: wait for it
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)  # an interrupted build starts again
            _build(commit, target)
            done.write_text(f"{commit}\n")
    return target / "bin" / "python"


def _build(commit: str, target: Path) -> None:
    found = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True, check=False
    )
    if found.returncode != 0:
        raise RuntimeError(
            f"commit {commit} is not in this clone (a shallow clone?): `git fetch --unshallow` "
            "so the version-skew tests can build the sidecar of the previous schema"
        )
    print(f"building the sidecar of {commit[:12]} into {target} (once per machine)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="modelroute-build-") as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")
        # from the base interpreter, not this venv: the build must not see the project's own install
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(target)], check=True)
        subprocess.run(
            [
                str(target / "bin" / "python"),
                *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                str(source),
            ],
            check=True,
        )
