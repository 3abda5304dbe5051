"""The compiler: one namespace's ModelEndpoints, RoutingPolicies and Canaries in, one sealed RouterConfig out.

Pure and deterministic: no I/O, no clock, no randomness, and the output does not depend on the order the
objects arrive in, so the same inputs always hash to the same `version` and the operator writes nothing.
Every problem in the namespace is collected with the object and field at fault; a single error means no
config at all (never a half config), and the operator keeps serving the last good one.

The API server enforces the CRD schema and its CEL rules, but manifests checked offline (`modelroute
validate`, `render`) never met it, so `parse_object` reports schema errors with field paths and the compiler
repeats the CEL invariants it relies on (unique names, non-zero weights, ...) with the same messages.

The compiler is split by job: `objects` (parsing, indexing, errors), `checks` (every problem), `build` (the
RouterConfig from valid objects); this module runs them in order and seals the result, and re-exports the
names callers use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import modelroute_contract as contract

from .build import build_config, candidate_weight
from .checks import check_namespace
from .objects import (
    CompileError,
    NamespaceIndex,
    NamespaceObjects,
    Object,
    ObjectInvalid,
    contract_class,
    format_path,
    parse_object,
)


@dataclass(frozen=True)
class CompileResult:
    """A sealed config when the namespace is valid, else every error (and no config)."""

    config: contract.RouterConfig | None
    errors: tuple[CompileError, ...]

    def errors_for(self, kind: str, name: str) -> tuple[CompileError, ...]:
        """Errors of one object, for its status condition."""
        return tuple(e for e in self.errors if e.kind == kind and e.name == name)


# ---------------------------------------------------------------------------------------- compiling


@dataclass(frozen=True)
class PreviousConfig:
    """The namespace's stored config as far as ordering goes: the compiler's one input from the past."""

    sequence: int
    """Its sequence (0 for a config stored before sequences existed)."""
    version: str
    """Its content hash; empty when nothing is stored and `sequence` is only a floor to start above."""


def compile_namespace(
    objects: NamespaceObjects,
    previous: PreviousConfig | None = None,
    sidecar_ports: Sequence[int] = contract.SIDECAR_PORTS,
) -> CompileResult:
    """Check every object and cross-reference, then build and seal the RouterConfig if all is well.

    The config keeps `previous.sequence` when its content equals the previous config's (so the same
    inputs still hash to the same version), and takes the next number when it differs; without a
    previous config it is sequence 1. `sidecar_ports` are the ports injected sidecars listen on (replica
    URLs may not point there); the contract's defaults are always included, since a sidecar checks
    against those too.
    """
    ns = NamespaceIndex.index(objects)
    ports = tuple(sorted({*contract.SIDECAR_PORTS, *sidecar_ports}))
    errors = check_namespace(objects, ns, ports)
    if errors:
        return CompileResult(config=None, errors=tuple(errors))
    return CompileResult(config=_sequenced(build_config(ns), previous), errors=())


def _sequenced(config: contract.RouterConfig, previous: PreviousConfig | None) -> contract.RouterConfig:
    if previous is None:
        return config.model_copy(update={"sequence": 1}).seal()
    unchanged = config.model_copy(update={"sequence": previous.sequence}).seal()
    if unchanged.version == previous.version:
        return unchanged
    return config.model_copy(update={"sequence": previous.sequence + 1}).seal()


__all__ = [
    "CompileError",
    "CompileResult",
    "NamespaceObjects",
    "Object",
    "ObjectInvalid",
    "PreviousConfig",
    "candidate_weight",
    "compile_namespace",
    "contract_class",
    "format_path",
    "parse_object",
]
