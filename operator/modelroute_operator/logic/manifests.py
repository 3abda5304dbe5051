"""Manifests: our objects read from YAML or JSON files, for offline work (CLI `render`/`validate`, tests).

A file may hold several documents (`---`) and a `kind: List`; documents of other kinds (Namespaces,
Secrets, Deployments, ...) are skipped, so an example folder can be both `kubectl apply -f`-ed and
compiled. A document that claims our API group or one of our kinds but does not parse is an error, never
skipped: a typo must not silently drop an object. Objects without `metadata.namespace` land in the
namespace the caller names, as `kubectl apply -n` would put them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelroute_operator.logic.compiler import (
    CompileError,
    NamespaceObjects,
    Object,
    ObjectInvalid,
    parse_object,
)
from modelroute_operator.logic.resources import GROUP, KIND_BY_NAME, Canary, ModelEndpoint, RoutingPolicy

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
"""File names read from a directory, as kubectl does."""


@dataclass(frozen=True)
class ManifestError:
    """A problem in a manifest file: unreadable YAML, or an object of ours that does not parse."""

    source: str
    """File, and the document in it when it holds several, e.g. `policy.yaml (document 2)`."""
    kind: str
    """Our kind, when known."""
    name: str
    """Object name, when known."""
    field: str
    """Field path at fault, when there is one."""
    message: str
    """Why."""

    @classmethod
    def of(cls, source: str, error: CompileError) -> ManifestError:
        """The error of an object, located in its file."""
        return cls(source, error.kind, error.name, error.field, error.message)

    @classmethod
    def in_file(cls, source: str, message: str) -> ManifestError:
        """An error of the file or document itself, before any object is known."""
        return cls(source, "", "", "", message)

    def __str__(self) -> str:
        subject = f"{self.kind}/{self.name}" if self.kind else self.name
        where = " ".join(part for part in (subject, self.field) if part)
        return f"{self.source}: {where}: {self.message}" if where else f"{self.source}: {self.message}"


@dataclass(frozen=True)
class Skipped:
    """A document that is not ours (e.g. a Secret next to the endpoints that use it)."""

    source: str
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Manifests:
    """What a set of files holds: our objects, the documents skipped, and every error."""

    objects: tuple[Object, ...]
    skipped: tuple[Skipped, ...]
    errors: tuple[ManifestError, ...]

    def namespaces(self) -> tuple[str, ...]:
        """Namespaces the objects live in, sorted."""
        return tuple(sorted({o.metadata.namespace for o in self.objects}))

    def for_namespace(self, namespace: str) -> NamespaceObjects:
        """The compiler's input for one namespace (empty when no object lives there)."""
        mine = [o for o in self.objects if o.metadata.namespace == namespace]
        return NamespaceObjects(
            namespace=namespace,
            endpoints=[o for o in mine if isinstance(o, ModelEndpoint)],
            policies=[o for o in mine if isinstance(o, RoutingPolicy)],
            canaries=[o for o in mine if isinstance(o, Canary)],
        )


def load_manifests(
    paths: str | Path | Iterable[str | Path], namespace: str = "default", recursive: bool = False
) -> Manifests:
    """Read files and directories (their manifest files in name order, subdirectories if `recursive`)."""
    objects: dict[tuple[str, str, str], tuple[str, Object]] = {}
    skipped: list[Skipped] = []
    errors: list[ManifestError] = []
    for source, body in _documents(paths, recursive, errors):
        if not _is_ours(body):
            skipped.append(_skip(source, body))
            continue
        try:
            obj = parse_object(_with_namespace(body, namespace))
        except ObjectInvalid as exc:
            errors.extend(ManifestError.of(source, e) for e in exc.errors)
            continue
        key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
        if key in objects:
            first = objects[key][0]
            errors.append(
                ManifestError(
                    source, obj.kind, obj.metadata.name, "metadata.name", f"also defined in {first}"
                )
            )
            continue
        objects[key] = (source, obj)
    return Manifests(tuple(obj for _, obj in objects.values()), tuple(skipped), tuple(errors))


def manifest_files(path: Path, recursive: bool = False) -> list[Path]:
    """The manifest files a path stands for: itself, or a directory's files in name order."""
    if not path.is_dir():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def _documents(
    paths: str | Path | Iterable[str | Path], recursive: bool, errors: list[ManifestError]
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            errors.append(ManifestError.in_file(str(root), "no such file or directory"))
            continue
        for file in manifest_files(root, recursive):
            yield from _file_documents(file, errors)


def _file_documents(file: Path, errors: list[ManifestError]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    try:
        documents = [d for d in yaml.safe_load_all(file.read_text(encoding="utf-8")) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        errors.append(ManifestError.in_file(str(file), f"cannot be read as YAML: {exc}"))
        return
    for n, document in enumerate(documents, start=1):
        source = f"{file} (document {n})" if len(documents) > 1 else str(file)
        if not isinstance(document, Mapping):
            errors.append(
                ManifestError.in_file(source, "a document must be an object with apiVersion and kind")
            )
        elif document.get("kind") == "List" and isinstance(document.get("items"), list):
            # `kubectl get -o yaml` output: a List wrapping the objects.
            for i, item in enumerate(document["items"]):
                if isinstance(item, Mapping):
                    yield f"{source} items[{i}]", item
                else:
                    errors.append(ManifestError.in_file(f"{source} items[{i}]", "an item must be an object"))
        else:
            yield source, document


def _is_ours(body: Mapping[str, Any]) -> bool:
    api_version = body.get("apiVersion")
    group = api_version.split("/")[0] if isinstance(api_version, str) else ""
    return group == GROUP or body.get("kind") in KIND_BY_NAME


def _skip(source: str, body: Mapping[str, Any]) -> Skipped:
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return Skipped(source, str(body.get("apiVersion", "")), str(body.get("kind", "")), str(name or ""))


def _with_namespace(body: Mapping[str, Any], namespace: str) -> Mapping[str, Any]:
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("namespace"):
        return body
    return {**body, "metadata": {**metadata, "namespace": namespace}}
