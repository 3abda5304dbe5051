"""The Dockerfiles' shape (no Docker engine here, so they are checked, not built), and their agreement
with `scripts/images`, which builds the images the cluster tests run.

A Python base of the same minor version as the built images, a numeric non-root user, the package's
console scripts as entry points, a build context limited to the sources, and each image installing our
wheel with its own extra, never a hand-written dependency list (tests/unit/test_packaging.py checks
that each extra brings what its side imports).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib

import pytest

from tests.chart.helm import CHART
from tests.kube_harness import REPO

DOCKER = REPO / "docker"
IMAGES = {"operator": "modelroute-operator", "sidecar": "modelroute-sidecar"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SOURCE_DIRS = set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"])


def images_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("modelroute_images", REPO / "scripts" / "images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dockerfile(image: str) -> str:
    return (DOCKER / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_shape(image: str) -> None:
    text = dockerfile(image)
    assert "not built here" in text.split("\n\n")[0], "the header says it is not built here"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim$", text, re.M)
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M), "both stages use the pinned base"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user == ["65532:65532"], "numeric, so runAsNonRoot can be verified"
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M)
    assert entry and entry.group(1) == IMAGES[image]
    scripts = PYPROJECT["project"]["scripts"]
    assert IMAGES[image] in scripts, "the entry point is one of the package's console scripts"
    assert "pip wheel --no-deps" in text


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_is_only_the_sources(image: str) -> None:
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*", "deny everything, then allow the sources"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md"} | SOURCE_DIRS, "every source dir the wheel packs"
    copied = set(re.findall(r"^COPY (\S+)", dockerfile(image), re.M)) - {"--from=build"}
    assert {c.rstrip("/") for c in copied} <= allowed | {"pyproject.toml README.md ./"}
    assert {c.rstrip("/") for c in copied} >= SOURCE_DIRS, "the wheel needs every source dir"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_installs_the_wheel_with_its_extra(image: str) -> None:
    text = dockerfile(image)
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines == [f'    pip install "$(echo /wheels/modelroute-*.whl)[{image}]" \\'], pip_lines
    assert image in PYPROJECT["project"]["optional-dependencies"], f"pyproject has the {image} extra"
    # No version specifier anywhere: the dependency list lives in pyproject alone.
    assert not re.search(r"[a-z0-9-]+(>=|==|~=)[0-9]", text), "a hand-listed dependency"


def test_scripts_images_builds_the_same_images() -> None:
    images = images_script()
    assert set(images.DEFAULT_IMAGES) == set(IMAGES)
    # The one other image is the demo's application (not ours: the openai SDK, no wheel), never built
    # by default and never in the chart.
    assert set(images.SPECS) - set(IMAGES) == {"demo-app"}
    demo = images.SPECS["demo-app"]
    assert not demo.default and not demo.extra and demo.requirements[0].startswith("openai==")
    scripts = PYPROJECT["project"]["scripts"]
    assert images.UID == 65532, "the chart's runAsUser"
    for name, spec in images.SPECS.items():
        if name not in IMAGES:
            continue
        assert spec.extra == name and spec.entrypoint == IMAGES[name]
        assert set(spec.scripts) <= set(scripts)
        assert spec.reference == f"docker.io/modelroute/{name}:{PYPROJECT['project']['version']}"
    python = re.search(r"PYTHON_IMAGE=python:(3\.\d+)-slim", dockerfile("sidecar"))
    assert python and images.SUITE_PYTHON[images.SUITE] == python.group(1), (
        "the Dockerfiles' Python is the one scripts/images's Debian suite ships"
    )


def test_chart_images_are_the_ones_the_dockerfiles_build() -> None:
    values = (CHART / "values.yaml").read_text()
    for image in IMAGES:
        repository = f"modelroute/{image}"
        assert f"repository: {repository}" in values
        assert f"-t {repository}:" in dockerfile(image)
