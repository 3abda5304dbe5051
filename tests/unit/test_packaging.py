"""Each image installs `modelroute[<extra>]` and nothing else, so each extra must bring every distribution
its side imports.

Two checks, both from the installed metadata and the sources (no network, no second venv):
- every import in the side's modules (module level or inside a function, followed through the
  `modelroute_*` modules they import) belongs to a distribution in the requirement closure of
  `modelroute[<extra>]`;
- every module of the side really imports in a fresh interpreter that refuses any distribution outside
  that closure (and the other side's package), so an import-time surprise shows up too.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tests.kube_harness import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SOURCE_ROOTS = [REPO / d for d in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]]
SIDES = {
    # extra -> (the packages whose every module runs on that side, packages that side must never load)
    "sidecar": (["modelroute_sidecar", "modelroute_contract"], ["modelroute_operator"]),
    "operator": (["modelroute_operator", "modelroute_contract"], []),
}
LAZY_ON = {
    # extra -> distributions its side reaches only lazily (in a function, or for type checking), for a
    # feature that needs another extra and says so. The operator's `modelroute router train|eval` run the
    # sidecar's embedder and training (numpy, wordllama's files through safetensors and tokenizers: the
    # sidecar extra) and ask for it when missing;
    # the compiler checks difficulty heads without numpy. The import check below still proves every
    # module of the side imports without them.
    "operator": {"numpy", "wordllama", "safetensors", "tokenizers"},
}


def package_dir(name: str) -> Path:
    for root in SOURCE_ROOTS:
        if (root / name).is_dir():
            return root / name
    raise AssertionError(f"package {name} is not under any of {SOURCE_ROOTS}")


def our_packages() -> set[str]:
    """Top-level packages the wheel ships (namespace packages: no `__init__.py` at the top)."""
    return {p.name for root in SOURCE_ROOTS for p in root.glob("modelroute_*") if any(p.rglob("*.py"))}


def requirements(extra: str | None) -> list[Requirement]:
    """The project's requirements for `modelroute[extra]`, read from pyproject (not a stale install)."""
    project = PYPROJECT["project"]
    specs = list(project["dependencies"])
    if extra:
        specs += project["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


def closure(extra: str) -> set[str]:
    """Distribution names that `pip install modelroute[extra]` installs (markers for this platform)."""
    seen: set[str] = set()
    todo = [(r, extra) for r in requirements(extra)]
    while todo:
        req, via_extra = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in {via_extra, ""}):
            continue
        name = canonicalize_name(req.name)
        if name == "modelroute":  # a self-reference (dev -> modelroute[sidecar,operator])
            for e in req.extras:
                todo += [(r, e) for r in requirements(e)]
            continue
        if name in seen:
            continue
        seen.add(name)
        for spec in md.requires(name) or []:
            sub = Requirement(spec)
            wanted = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((sub, ""))
    return seen


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] not in our_packages():
        return None
    base = package_dir(parts[0]).joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names imported anywhere in the file (relative imports resolved against `module`)."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return names


def third_party_imports(packages: list[str]) -> dict[str, str]:
    """Top-level third-party names imported by these packages and by the modules of ours they reach,
    each with one file that imports it."""
    todo = [
        (".".join(p.relative_to(package_dir(pkg).parent).with_suffix("").parts).removesuffix(".__init__"), p)
        for pkg in packages
        for p in package_dir(pkg).rglob("*.py")
    ]
    seen: set[Path] = set()
    found: dict[str, str] = {}
    while todo:
        module, path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports_of(path, module):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if top in our_packages():
                target = module_file(name)
                if target is not None:
                    todo.append((name, target))
                continue
            found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize("extra", sorted(SIDES))
def test_each_import_is_brought_by_the_extra(extra: str) -> None:
    packages, forbidden = SIDES[extra]
    provided = closure(extra)
    owners = md.packages_distributions()
    imported = third_party_imports(packages)
    assert imported, "the side imports something"
    missing = {
        top: (where, owners.get(top))
        for top, where in imported.items()
        if not {canonicalize_name(d) for d in owners.get(top, [top])} & provided
        and top not in LAZY_ON.get(extra, set())
    }
    assert not missing, f"modelroute[{extra}] does not install what these import: {missing}"
    assert not set(forbidden) & set(imported), f"the {extra} side imports {forbidden}"


def test_the_sidecar_extra_brings_no_control_plane_stack() -> None:
    provided = closure("sidecar")
    assert not {"kopf", "kubernetes"} & provided, "the sidecar image stays free of the operator's stack"
    assert not {"aiohttp", "prometheus-client"} & provided, "the sidecar serves and exposes metrics itself"
    assert {"uvloop", "httptools", "orjson", "pydantic", "google-re2"} <= provided


def test_test_only_distributions_stay_out_of_the_images() -> None:
    for extra in SIDES:
        assert not {"pytest", "openai"} & closure(extra), extra
    # the sidecar checks answers against the client's JSON schema (`structured`); the operator does not
    assert "jsonschema" not in closure("operator")


BLOCKER = r"""
import importlib, importlib.abc, importlib.machinery, importlib.metadata as md, json, pkgutil, sys
allowed, forbidden, ours, packages = json.loads(sys.argv[1])
owners = md.packages_distributions()
norm = lambda d: d.lower().replace("_", "-").replace(".", "-")

def hidden(top):
    dists = owners.get(top)
    return bool(dists) and top not in ours and not {norm(d) for d in dists} & set(allowed)

class Forbidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in forbidden:
            raise ImportError(f"{name}: the other side's package")
        return None

class OnlyTheExtra(importlib.abc.MetaPathFinder):
    # In place of the path finder: a distribution outside the extra is simply not there, so an optional
    # import (find_spec probing, `try: import x`) sees what it would see in the image.
    def find_spec(self, name, path=None, target=None):
        if hidden(name.partition(".")[0]):
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

sys.meta_path[:] = [Forbidden()] + [
    OnlyTheExtra() if f is importlib.machinery.PathFinder else f for f in sys.meta_path
]
for pkg in packages:
    root = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(root.__path__, pkg + "."):
        importlib.import_module(info.name)
print("imported", len(sys.modules))
"""


@pytest.mark.parametrize("extra", sorted(SIDES))
def test_every_module_imports_with_only_the_extra(extra: str) -> None:
    packages, forbidden = SIDES[extra]
    # Our own packages of the same distribution are allowed unless forbidden for this side.
    allowed = sorted(closure(extra) | {"modelroute"})
    ours = sorted(our_packages() - set(forbidden))
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps([allowed, forbidden, ours, packages])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("imported")
