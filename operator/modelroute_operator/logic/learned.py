"""A policy's learned routing, resolved: its difficulty models (the builtin one, or heads read from
ConfigMaps and pinned by version and sha256) and its semantic routes, as the contract carries them.

Pure: the ConfigMaps' data is gathered with the namespace (`NamespaceObjects.config_maps`, only the
ConfigMaps policies name). A head that is missing, malformed, too large, of another version or with
another sha256 is an error on the policy's field (`spec.difficultyModels[i]...`), so the admission
webhook refuses the policy and the operator keeps the last good config. The head's format is checked
by the engine's `learned.head_problem`, the same check a sidecar makes when it loads the config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

import modelroute_contract as contract
from modelroute_operator.logic.resources import DifficultyModelSpec, RoutingPolicy
from modelroute_sidecar.engine.learned import head_problem

from .objects import CompileError, reporter

ConfigMaps = Mapping[str, Mapping[str, str]]
"""ConfigMap name -> its data, for the ConfigMaps the namespace's policies name."""
FORBIDDEN_KEY = "modelroute.dev/forbidden"
"""The only key of a ConfigMap the operator may not read (no real key has a `/`)."""


def referenced_config_maps(policy_bodies: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the ConfigMaps raw RoutingPolicy bodies name in `spec.difficultyModels[].configMap`
    (what the gatherer reads; bodies that do not parse are skipped, they fail elsewhere)."""
    names = set()
    for body in policy_bodies:
        spec = body.get("spec")
        models = spec.get("difficultyModels") if isinstance(spec, dict) else None
        for model in models if isinstance(models, list) else ():
            ref = model.get("configMap") if isinstance(model, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                names.add(ref["name"])
    return names


def resolve_model(
    spec: DifficultyModelSpec, config_maps: ConfigMaps
) -> contract.DifficultyModel | tuple[str, str]:
    """The contract's model for one `difficultyModels` entry, or (field below the entry, reason)."""
    if spec.builtin:
        version = spec.version or contract.BUILTIN_DIFFICULTY_VERSION
        sha256 = contract.BUILTIN_DIFFICULTY_HEADS.get(version)
        if sha256 is None:
            return "version", (
                f"builtin model version {version!r} is not one this operator ships "
                f"({', '.join(map(repr, contract.BUILTIN_DIFFICULTY_HEADS))})"
            )
        return contract.DifficultyModel(name=spec.name, version=version, sha256=sha256)
    ref = spec.config_map
    assert ref is not None and spec.sha256 is not None  # the CEL rule and the model validator
    data = config_maps.get(ref.name)
    if data is None:
        return "configMap.name", f"ConfigMap {ref.name!r} does not exist in this namespace"
    if FORBIDDEN_KEY in data:
        return "configMap.name", (
            f"the operator may not read ConfigMap {ref.name!r}: add it to the chart's "
            "rbac.difficultyHeads.configMapNames"
        )
    text = data.get(ref.key)
    if text is None:
        return "configMap.key", f"ConfigMap {ref.name!r} has no key {ref.key!r}"
    if len(text.encode()) > contract.DIFFICULTY_HEAD_MAX_BYTES:
        return "configMap", (
            f"head in ConfigMap {ref.name!r} key {ref.key!r} is {len(text.encode())} bytes, "
            f"at most {contract.DIFFICULTY_HEAD_MAX_BYTES}"
        )
    try:
        head = json.loads(text)
    except json.JSONDecodeError as exc:
        return "configMap", f"ConfigMap {ref.name!r} key {ref.key!r} is not JSON ({exc.msg})"
    if not isinstance(head, dict):
        return "configMap", f"ConfigMap {ref.name!r} key {ref.key!r} is not a head document"
    problem = head_problem(head)
    if problem:
        return "configMap", f"ConfigMap {ref.name!r} key {ref.key!r}: {problem}"
    version = spec.version or str(head.get("version"))
    try:
        return contract.DifficultyModel(name=spec.name, version=version, sha256=spec.sha256, head=head)
    except ValidationError as exc:
        reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        return ("sha256" if "sha256" in reason else "version"), reason


def check_learned(policy: RoutingPolicy, config_maps: ConfigMaps) -> Iterator[CompileError]:
    """Errors of a policy's difficulty models, semantic routes and the rules that name them."""
    spec, error = policy.spec, reporter(policy)
    models = set()
    for i, model in enumerate(spec.difficulty_models):
        if model.name in models:
            yield error(f"spec.difficultyModels[{i}].name", f"name {model.name!r} is used twice")
        models.add(model.name)
        resolved = resolve_model(model, config_maps)
        if isinstance(resolved, tuple):
            yield error(f"spec.difficultyModels[{i}].{resolved[0]}", resolved[1])
    routes = set()
    for i, route in enumerate(spec.semantic_routes):
        if route.name in routes:
            yield error(f"spec.semanticRoutes[{i}].name", f"name {route.name!r} is used twice")
        routes.add(route.name)
    for i, rule in enumerate(spec.rules):
        complexity, semantic = rule.match.complexity, rule.match.semantic
        scorer = complexity.scorer if complexity is not None else None
        if scorer and scorer != contract.HEURISTIC_SCORER and scorer not in models:
            yield error(
                f"spec.rules[{i}].match.complexity.scorer",
                f"{scorer!r} is neither `heuristic` nor one of spec.difficultyModels",
            )
        if semantic is not None and semantic.route not in routes:
            yield error(
                f"spec.rules[{i}].match.semantic.route",
                f"{semantic.route!r} is not one of spec.semanticRoutes",
            )


def build_models(policy: RoutingPolicy, config_maps: ConfigMaps) -> tuple[contract.DifficultyModel, ...]:
    """The policy's difficulty models (checked by `check_learned` first), sorted by name."""
    resolved = [resolve_model(model, config_maps) for model in policy.spec.difficulty_models]
    return tuple(
        sorted((m for m in resolved if isinstance(m, contract.DifficultyModel)), key=lambda m: m.name)
    )


def build_semantic_routes(policy: RoutingPolicy) -> tuple[contract.SemanticRoute, ...]:
    """The policy's semantic routes, sorted by name (examples keep their order: it is not meaningful,
    but sorting would hide a user's edit in the diff of the rendered config)."""
    return tuple(
        contract.SemanticRoute(name=route.name, examples=tuple(route.examples))
        for route in sorted(policy.spec.semantic_routes, key=lambda r: r.name)
    )
