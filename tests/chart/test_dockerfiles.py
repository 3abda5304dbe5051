"""The Dockerfiles' shape (no Docker engine here, so they are checked, not built).

python:3.11-slim base, a numeric non-root user, the package's console scripts as entry points, a build
context limited to the sources, and a sidecar image that installs every package the sidecar imports.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib

import pytest

from tests.chart.helm import CHART
from tests.kube_harness import REPO

DOCKER = REPO / "docker"
IMAGES = {"operator": "modelroute-operator", "sidecar": "modelroute-sidecar"}
DISTRIBUTION_OF = {
    "yaml": "pyyaml",
    "prometheus_client": "prometheus-client",
    "re2": "google-re2",
    "yarl": "aiohttp",
    "multidict": "aiohttp",
}
"""Import name → the distribution that provides it (yarl and multidict come with aiohttp)."""


def dockerfile(image: str) -> str:
    return (DOCKER / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_shape(image: str) -> None:
    text = dockerfile(image)
    assert "Written, not built here" in text.split("\n\n")[0], "the header says it is not built here"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, re.M), "both stages use the pinned base"
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user == ["65532:65532"], "numeric, so runAsNonRoot can be verified"
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M)
    assert entry and entry.group(1) == IMAGES[image]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert IMAGES[image] in scripts, "the entry point is one of the package's console scripts"
    assert "pip wheel --no-deps" in text


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_context_is_only_the_sources(image: str) -> None:
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*")] == "*", "deny everything, then allow the sources"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "contract", "operator", "sidecar"}
    copied = set(re.findall(r"^COPY (\S+)", dockerfile(image), re.M)) - {"--from=build"}
    assert {c.rstrip("/") for c in copied} <= allowed | {"pyproject.toml README.md ./"}


def third_party_imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package.replace("modelroute_", "") / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and not m.startswith("modelroute_")}


def test_sidecar_image_installs_what_the_sidecar_imports() -> None:
    text = dockerfile("sidecar")
    pip_lines = [line for line in text.splitlines() if "pip install" in line and "--no-deps" not in line]
    specs = [spec for line in pip_lines for spec in re.findall(r'"([^"]+)"', line)]
    installed = {re.split(r"[<>=;\[ ]", spec)[0].lower() for spec in specs}
    imports = third_party_imports("modelroute_sidecar") | third_party_imports("modelroute_contract")
    assert imports, "the sidecar imports something"
    missing = {DISTRIBUTION_OF.get(m, m) for m in imports} - installed
    assert not missing, f"docker/sidecar.Dockerfile does not install {missing}"
    assert not {"kopf", "kubernetes"} & imports, "the data plane stays free of the control-plane stack"
    assert "pip install --no-deps /wheels/*.whl" in text


def test_operator_image_installs_the_package_with_its_dependencies() -> None:
    assert re.search(r"pip install /wheels/\*\.whl", dockerfile("operator"))


def test_chart_images_are_the_ones_the_dockerfiles_build() -> None:
    values = (CHART / "values.yaml").read_text()
    for image in IMAGES:
        repository = f"modelroute/{image}"
        assert f"repository: {repository}" in values
        assert f"-t {repository}:" in dockerfile(image)
