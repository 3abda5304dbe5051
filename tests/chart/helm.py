"""Helm driven from the chart tests: lint, render to parsed documents (cached), and look documents up.

No `--kube-version`: the helm that scripts/k8s-bins/build.sh builds carries helm's release ldflags, so it
assumes the Kubernetes its client-go implements (1.34), as a downloaded helm does, and the chart's
`kubeVersion: >=1.28` holds without help.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.kube_harness import REPO

CHART = REPO / "charts" / "modelroute"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"
RELEASE = "mr"
NAMESPACE = "modelroute-system"
PROMETHEUS_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)

Doc = dict[str, Any]


@functools.cache
def helm_binary() -> Path:
    """The cached helm build (scripts/k8s-bins/build.sh builds it on a machine's first run)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "k8s-bins" / "build.sh"), "helm"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(out.strip().splitlines()[-1]) / "helm"


def run_helm(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


@dataclass(frozen=True)
class Rendered:
    """The documents of one `helm template`, with lookups by kind and name."""

    docs: tuple[Doc, ...]
    text: str

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> Doc:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.docs}

    def container(self) -> Doc:
        spec = self.one("Deployment")["spec"]["template"]["spec"]
        containers: list[Doc] = spec["containers"]
        assert [c["name"] for c in containers] == ["operator"]
        return containers[0]


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""


def _template_args(
    values: Iterable[Path], sets: Iterable[str], api_versions: Iterable[str], namespace: str, release: str
) -> list[str]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


@functools.cache
def _render(
    values: tuple[Path, ...],
    sets: tuple[str, ...],
    api_versions: tuple[str, ...],
    namespace: str,
    release: str,
) -> Rendered:
    proc = run_helm(*_template_args(values, sets, api_versions, namespace, release))
    if proc.returncode != 0:
        raise HelmError(proc.stderr)
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return Rendered(docs, proc.stdout)


def render(
    *values: Path,
    sets: Iterable[str] = (),
    api_versions: Iterable[str] = (),
    namespace: str = NAMESPACE,
    release: str = RELEASE,
) -> Rendered:
    """`helm template` of the chart (cached per argument set: renders generate RSA keys, which is slow)."""
    return _render(tuple(values), tuple(sets), tuple(api_versions), namespace, release)


def render_error(*values: Path, sets: Iterable[str] = ()) -> str:
    """stderr of a `helm template` that must fail (schema or template `fail`)."""
    proc = run_helm(*_template_args(values, sets, (), NAMESPACE, RELEASE))
    assert proc.returncode != 0, f"helm template accepted {list(sets)}"
    return proc.stderr


def env_of(container: Doc) -> dict[str, Any]:
    """Container env as name → value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def walk(node: Any) -> Iterator[Any]:
    """Every mapping, list and scalar inside a document."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)
