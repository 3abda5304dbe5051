"""The compiler's inputs and errors, pure: a namespace's objects parsed from their bodies (schema errors with
field paths), indexed by name, and `CompileError`, one problem pinned to the object and field at fault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError
from pydantic_core import ErrorDetails

import modelroute_contract as contract
from modelroute_operator.logic.resources import (
    API_VERSION,
    DNS_LABEL,
    DURATION,
    KIND_BY_NAME,
    Canary,
    DataClass,
    ModelEndpoint,
    RoutingPolicy,
    Rule,
)

Object = ModelEndpoint | RoutingPolicy | Canary


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class CompileError:
    """One problem, pinned to the object and field at fault."""

    kind: str
    """`ModelEndpoint`, `RoutingPolicy` or `Canary` (empty when the kind itself is unknown)."""
    name: str
    """Object name."""
    field: str
    """Path of the field at fault, e.g. `spec.rules[2].targets[0].endpoint`."""
    message: str
    """Why, in words a platform engineer acts on."""

    def __str__(self) -> str:
        subject = f"{self.kind}/{self.name}" if self.kind else self.name or "object"
        return f"{subject} {self.field}: {self.message}" if self.field else f"{subject}: {self.message}"


class ObjectInvalid(ValueError):  # noqa: N818 - the name the operator and CLI use
    """A body that does not parse into one of our kinds; `errors` names every field at fault."""

    def __init__(self, errors: Sequence[CompileError]):
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class NamespaceObjects:
    """Everything the compiler needs about one namespace (health is in the endpoints' status)."""

    namespace: str
    endpoints: Sequence[ModelEndpoint]
    policies: Sequence[RoutingPolicy]
    canaries: Sequence[Canary]
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Data of the ConfigMaps the policies name (difficulty model heads), by ConfigMap name."""


# ------------------------------------------------------------------------------------------ parsing


def parse_object(body: Mapping[str, Any]) -> Object:
    """Turn a raw object (API server body or manifest document) into its model, or raise ObjectInvalid."""
    kind = body.get("kind")
    name = _body_name(body)
    if not isinstance(kind, str) or kind not in KIND_BY_NAME:
        known = ", ".join(KIND_BY_NAME)
        raise ObjectInvalid([CompileError("", name, "kind", f"kind must be one of {known} (got {kind!r})")])
    api_version = body.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        raise ObjectInvalid(
            [CompileError(kind, name, "apiVersion", f"must be {API_VERSION} (got {api_version!r})")]
        )
    try:
        return cast(Object, KIND_BY_NAME[kind].model_validate(body))
    except ValidationError as exc:
        raise ObjectInvalid([_schema_error(kind, name, d) for d in exc.errors()]) from None


def _body_name(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else ""


def _schema_error(kind: str, name: str, detail: ErrorDetails) -> CompileError:
    return CompileError(kind, name, format_path(detail["loc"]), _schema_message(detail))


def format_path(loc: Iterable[int | str]) -> str:
    """`("spec", "replicas", 0, "url")` -> `spec.replicas[0].url`, the way kubectl prints field paths."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


_PATTERN_HINTS = {
    DURATION: "is not a duration such as 500ms, 10s or 1m30s",
    DNS_LABEL: "is not a valid name (lower-case letters, digits and '-', starting and ending alphanumeric)",
}


def _schema_message(detail: ErrorDetails) -> str:
    # pydantic's wording is made for Python programmers; the few errors users hit most get plain words.
    kind, given = detail["type"], _short_repr(detail.get("input"))
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = str((detail.get("ctx") or {}).get("pattern", ""))
        if pattern in _PATTERN_HINTS:
            return f"{given} {_PATTERN_HINTS[pattern]}"
        if pattern.startswith("^https?://"):
            return f"{given} is not an http(s) URL"
    return f"{detail['msg']} (got {given})"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class NamespaceIndex:
    """The namespace's objects by name, each kind in name order (input order must not matter)."""

    name: str
    endpoints: dict[str, ModelEndpoint]
    policies: dict[str, RoutingPolicy]
    canaries: dict[str, Canary]
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def index(cls, objects: NamespaceObjects) -> NamespaceIndex:
        return cls(
            objects.namespace,
            _by_name(objects.endpoints),
            _by_name(objects.policies),
            _by_name(objects.canaries),
            objects.config_maps,
        )


def _by_name[O: (ModelEndpoint, RoutingPolicy, Canary)](items: Iterable[O]) -> dict[str, O]:
    # A duplicated name is already an error; keeping the first keeps the rest of the checks meaningful.
    by_name: dict[str, O] = {}
    for item in sorted(items, key=lambda o: o.metadata.name):
        by_name.setdefault(item.metadata.name, item)
    return by_name


def all_objects(objects: NamespaceObjects) -> Iterator[Object]:
    yield from objects.endpoints
    yield from objects.policies
    yield from objects.canaries


def contract_class(data_class: DataClass) -> contract.DataClassRule:
    """A policy's data class as the contract rule the residency predicate reads."""
    return contract.DataClassRule(
        name=data_class.name,
        allowed_regions=tuple(sorted(set(data_class.allowed_regions))),
        required_compliance=tuple(sorted(set(data_class.required_compliance))),
    )


# ---------------------------------------------------------------------------------------- policies


LINKS = {"fallbackTo": "fallback_to", "escalateTo": "escalate_to"}
"""Rule-to-rule links, by API field name: each is followed as a chain."""


def follow(policy: RoutingPolicy, start: Rule, link: str) -> tuple[list[Rule], list[str]]:
    """Rules reached from `start` along `link`, in chain order, and the cycle met on the way (if any)."""
    rules = {r.name: r for r in policy.spec.rules}
    path, rule = [start.name], start
    reached: list[Rule] = []
    while (nxt := getattr(rule, LINKS[link])) is not None and nxt in rules:
        if nxt in path:
            return reached, path[path.index(nxt) :]
        rule = rules[nxt]
        path.append(rule.name)
        reached.append(rule)
    return reached, []


def chain_endpoints(policy: RoutingPolicy, rule: Rule, link: str) -> tuple[str, ...]:
    """Endpoints of the rules down the chain: chain order, then weight desc and name; each once, none of
    the rule's own targets."""
    seen = {t.endpoint for t in rule.targets}
    names: list[str] = []
    for linked in follow(policy, rule, link)[0]:
        for target in sorted(linked.targets, key=lambda t: (-t.weight, t.endpoint)):
            if target.endpoint not in seen:
                seen.add(target.endpoint)
                names.append(target.endpoint)
    return tuple(names)


Reporter = Callable[[str, str], CompileError]


def reporter(obj: Object) -> Reporter:
    """A function making errors about one object, so checks only say the field and the reason."""

    def report(field: str, message: str) -> CompileError:
        return CompileError(obj.kind, obj.metadata.name, field, message)

    return report
