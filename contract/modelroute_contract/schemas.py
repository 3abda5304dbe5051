"""Schema versions of the RouterConfig: which one the operator writes, which ones a sidecar reads, and how
a config is rendered for a sidecar of an older schema (or why it cannot be).

Sidecars upgrade only when their application pods restart, so an operator meets sidecars of older
schemas for weeks. The rules that keep that safe:

- **A sidecar reads every schema in `ACCEPTED_SCHEMA_VERSIONS` and refuses anything else.** The golden
  fixtures in `tests/contract/fixtures/v<N>/` must load in every later sidecar, so a version is never
  dropped from that tuple. Unknown fields are refused (`extra="forbid"`), never skipped: a field a sidecar
  ignored could be the one that keeps data in the EU. Forward compatibility is the operator's job.
- **The operator sends each sidecar the newest schema it reads** (`GET /config/version` says which, as
  `acceptedSchemaVersions`; a sidecar that does not say reads schema 1), rendered by `render_document`.
  The ConfigMap carries one key per schema the config can be rendered for (`config_key`), so a sidecar
  starting from the mounted file reads the newest key it accepts.
- **A field the older schema lacks is left out only when that changes nothing the older sidecar
  enforces.** When the config needs it (TLS settings, a pattern detector, classification by the
  strictest signal), the config is not rendered for that schema: `SchemaGap` names the object and the
  field, and the operator reports it per pod instead of sending a weaker config. The pod keeps its last
  config until it restarts with a newer sidecar.

Schema 1 is the contract as of commit 7a48ff9, the start of the session that added the fields of schema 2
(`tests/contract/reference/schema1.py` is that contract, kept verbatim as the reference reader).

How to add a field (or a new value of a field, or a new meaning of one):

1. Bump `SCHEMA_VERSION` to N, append N to `ACCEPTED_SCHEMA_VERSIONS` and to the `Literal` of
   `RouterConfig.schema_version` (config.py).
2. Append a `Step(N, ...)` to `STEPS`: every field schema N adds (`Addition`: where, its default on the
   wire, and `needed`: why a sidecar of N-1 must not get a config that uses it, or None when leaving it
   out is harmless, with a comment saying why), every new value of an existing field (`NewValue`), and
   `meanings`: configs whose existing fields a sidecar of N-1 would read more weakly than N does.
   Security-relevant fields (residency, TLS, credentials, limits that protect money) are never droppable.
3. Add fixtures `tests/contract/fixtures/v<N>/*.json` (one per feature N adds, plus the golden configs)
   and leave every older fixture as it is; `tests/contract` loads them all with the sidecar's loader.
4. Regenerate the golden configs (`UPDATE_GOLDEN=1 pytest tests/unit/test_compiler.py`): the schema
   version is part of every content hash.

Pure functions over JSON documents (dicts with camelCase keys), so a step keeps describing its schema
however the models change later. Imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

SCHEMA_VERSION: Final = 3
"""The schema this operator writes and this sidecar runs natively."""
ACCEPTED_SCHEMA_VERSIONS: Final = (1, 2, 3)
"""Every schema a sidecar of this contract reads (oldest first); never shrinks."""
LEGACY_ACCEPTED: Final = (1,)
"""What a sidecar that does not say reads: sidecars of schema 1 predate `acceptedSchemaVersions`."""

Document = dict[str, Any]
"""A RouterConfig document as JSON: camelCase keys, `schemaVersion`, `version` (its content hash)."""

_OWNERS: Final = {"endpoints": "ModelEndpoint", "policies": "RoutingPolicy"}


def config_key(schema: int) -> str:
    """The ConfigMap key holding the document of `schema`: `config.json` for schema 1 (the only key its
    sidecars know), `config.v<N>.json` from schema 2 on."""
    return "config.json" if schema == 1 else f"config.v{schema}.json"


def document_hash(document: Mapping[str, Any]) -> str:
    """Content hash of a document: sha256 of its canonical JSON without `version` (and without
    `sequence` when 0, so configs written before sequences existed keep their hash)."""
    body = {k: v for k, v in document.items() if k != "version" and not (k == "sequence" and not v)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def canonical_json(document: Mapping[str, Any]) -> str:
    """The one serialisation of a document: sorted keys, no spaces (what is stored, pushed and hashed)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------- the steps

Needed = str | Callable[[Mapping[str, Any]], str | None] | None
"""Why a sidecar of the previous schema must not get a config that uses a field: an explanation (always
needed when used), a function of the object holding the field (needed when it returns one), or None (the
field may be left out)."""


@dataclass(frozen=True)
class Addition:
    """A field a schema added."""

    path: str
    """Where: dotted keys, `[]` for every item of a list (`endpoints[].tls`)."""
    default: Any
    """Its value on the wire when a config does not use it; a field at its default is left out freely."""
    needed: Needed
    """See `Needed`."""
    shown_as: str = ""
    """How a reason names the field (default: the path below the endpoint or policy)."""


@dataclass(frozen=True)
class NewValue:
    """A value of an existing field that a schema added."""

    path: str
    value: Any
    explanation: str
    """What a sidecar of the previous schema would do with it (or why it refuses it)."""
    shown_as: str = ""


@dataclass(frozen=True)
class Step:
    """What schema `version` added over `version - 1`."""

    version: int
    additions: tuple[Addition, ...]
    values: tuple[NewValue, ...] = ()
    meanings: Callable[[Document], Iterator[str]] | None = None
    """Reasons a sidecar of the previous schema would enforce a config's existing fields more weakly."""


def _schema_checks(document: Document) -> Iterator[str]:
    # schema 3: structured-output checks. `escalateOn` is a list, which `NewValue` cannot match by
    # element: a schema-2 sidecar would read the value and never check answers (the request's client
    # gets an answer that breaks its schema where the policy promised the strong tier), so not rendered.
    for policy in document.get("policies") or ():
        escalate_on = (policy.get("resilience") or {}).get("escalateOn") or ()
        if "schemaMismatch" in escalate_on:
            yield (
                f"RoutingPolicy {policy.get('name')} uses escalateOn schemaMismatch (schema 3): a schema-2 "
                "sidecar would not check answers against the request's JSON schema"
            )


def _residency_by_strictest(document: Document) -> Iterator[str]:
    # Schema 1 sidecars classify by the first signal (the declared class before tenant defaults before
    # detectors before the default class) and their detectors read less of a request; schema 2 evaluates
    # every signal and the strictest class by `residency.precedence` wins. A policy where the declaration
    # is the only signal classifies the same way under both; any other signal could be talked away.
    for policy in document.get("policies") or ():
        residency = policy.get("residency") or {}
        signals = [
            name
            for name, present in (
                ("detectors", residency.get("detectors")),
                ("tenantDefaults", residency.get("tenantDefaults")),
                ("defaultClass", residency.get("defaultClass")),
            )
            if present
        ]
        if signals:
            yield (
                f"RoutingPolicy {policy.get('name')} uses residency.precedence (schema 2): its data class "
                f"comes from several signals (the declared class, {', '.join(signals)}) and the strictest "
                "must win; a schema-1 sidecar lets the first signal win, so a client's declaration "
                "would override them"
            )


STEPS: Final = (
    Step(
        2,
        additions=(
            # A schema-1 sidecar does not order configs: it applies what it is sent, and the operator
            # sends in order. Rollback protection is a property of the newer sidecar, not of the config.
            Addition("sequence", 0, None),
            Addition(
                "endpoints[].tls",
                None,
                "a schema-1 sidecar would connect with the system trust store, without the CA bundle, "
                "client certificate and server name it names",
            ),
            # Replica URLs were checked against the flag by the compiler already; a schema-1 sidecar
            # does not check them itself, so the flag has nothing left to say to it.
            Addition("endpoints[].allowPrivateTargets", False, None),
            # Counting only: a schema-1 sidecar counts streamed tokens when the client asks for usage.
            Addition("endpoints[].capabilities.streamUsage", True, None),
            # Needed exactly when classification has more than one signal: see `_residency_by_strictest`.
            Addition("policies[].residency.precedence", [], None),
            Addition(
                "policies[].residency.detectors[].name",
                "",
                "a schema-1 sidecar has no pattern detectors",
                shown_as="a residency detector of kind pattern",
            ),
            Addition(
                "policies[].residency.detectors[].pattern",
                "",
                "a schema-1 sidecar has no pattern detectors",
                shown_as="a residency detector of kind pattern",
            ),
        ),
        values=(
            NewValue(
                "policies[].residency.detectors[].kind",
                "pattern",
                "a schema-1 sidecar has no pattern detectors",
                shown_as="a residency detector of kind pattern",
            ),
        ),
        meanings=_residency_by_strictest,
    ),
    Step(
        3,
        additions=(
            # schema 3: fleet limits
            Addition(
                "policies[].fleetLimits",
                None,
                "a schema-2 sidecar would count fleet-wide limits and spend budgets per pod or not at "
                "all, so the fleet would admit many times the limit and over-spend the budget",
                shown_as="fleetLimits (fleet-wide limits and spend budgets)",
            ),
            # schema 3: learned routing (a learned difficulty scorer, semantic routes)
            Addition("policies[].difficultyModels", [], "a schema-2 sidecar has no difficulty models"),
            Addition("policies[].semanticRoutes", [], "a schema-2 sidecar has no semantic routes"),
            Addition(
                "policies[].rules[].match.complexityScorer",
                "",
                "a schema-2 sidecar would score the rule's complexity with the heuristic",
                shown_as="a rule's complexityScorer",
            ),
            Addition(
                "policies[].rules[].match.semantic",
                None,
                "a schema-2 sidecar has no semantic routes (the rule would match every request)",
                shown_as="a rule's semantic match",
            ),
            # schema 3: native providers
            Addition(
                "endpoints[].providerSettings",
                None,
                "a schema-2 sidecar speaks only the OpenAI API, without the provider's auth and version",
            ),
            # schema 3: session affinity. Left out for a schema-2 sidecar: it routes each turn by weight, so a
            # conversation's provider cache is colder, but nothing it enforces changes.
            Addition("policies[].rules[].affinity", None, None),
            # schema 3: shadow traffic. Left out for a schema-2 sidecar: it does not mirror, so the rule's
            # shadow comparison gets no figures from that pod, but the client's answers do not change (a
            # copy's answer is never returned) and nothing it enforces is weakened.
            Addition("policies[].rules[].shadow", None, None),
            # schema 3: the bandit strategy. Left out for a schema-2 sidecar: it picks the rule's first
            # target by the targets' weights instead of by feedback; every filter it enforces (residency,
            # health, ejection, budgets, limits) is the same, the bandit only chooses among what they keep.
            Addition("policies[].rules[].strategy", "weighted", None),
            Addition("policies[].rules[].bandit", None, None),
        ),
        values=tuple(
            # schema 3: native providers
            NewValue(
                "endpoints[].provider",
                provider,
                f"a schema-2 sidecar speaks only the OpenAI API: it would send OpenAI requests, with the key "
                f"as a bearer token, to the {provider} upstream",
                shown_as=f"provider {provider}",
            )
            for provider in ("azure-openai", "anthropic", "bedrock", "gemini")
        ),
        # schema 3: structured-output checks (a new value of a list field: see `_schema_checks`)
        meanings=_schema_checks,
    ),
)
"""Schema 2 over 1, and so on: `STEPS[i].version == i + 2`."""


# ----------------------------------------------------------------------------------- path walking


@dataclass(frozen=True)
class _Place:
    owner: str
    """`ModelEndpoint <name>`, `RoutingPolicy <name>` or `the config`."""
    where: str
    """The path with list indexes, e.g. `endpoints[0].tls`."""
    below: str
    """The path below the owner, e.g. `tls`."""
    parent: dict[str, Any]
    key: str


def _places(document: Document, path: str) -> Iterator[_Place]:
    """Every place `path` names in `document` (the field itself may be absent there)."""
    parts = path.split(".")

    def walk(node: Any, i: int, owner: str, where: str, below: list[str]) -> Iterator[_Place]:
        part = parts[i]
        name = part.removesuffix("[]")
        if i == len(parts) - 1:
            if isinstance(node, dict):
                yield _Place(owner, f"{where}{name}", ".".join([*below, name]), node, name)
            return
        child = node.get(name) if isinstance(node, dict) else None
        if part.endswith("[]"):
            for n, item in enumerate(child or ()):
                item_owner = owner
                item_below = [*below, f"{name}[{n}]"]
                if i == 0 and name in _OWNERS and isinstance(item, dict):
                    item_owner, item_below = f"{_OWNERS[name]} {item.get('name')}", []
                yield from walk(item, i + 1, item_owner, f"{where}{name}[{n}].", item_below)
        elif child is not None:
            yield from walk(child, i + 1, owner, f"{where}{name}.", [*below, name])

    yield from walk(document, 0, "the config", "", [])


def _need(needed: Needed, parent: Mapping[str, Any]) -> str | None:
    if needed is None or isinstance(needed, str):
        return needed
    return needed(parent)


# ------------------------------------------------------------------------------ rendering and fitting


@dataclass(frozen=True)
class Rendering:
    """A config as a document of one schema, ready to store or push."""

    schema: int
    text: str
    """Canonical JSON."""
    version: str
    """Its content hash: what a sidecar running it reports."""
    dropped: tuple[str, ...] = ()
    """Fields left out on the way down (harmless ones; see each `Addition`)."""


@dataclass(frozen=True)
class SchemaGap:
    """Why a config cannot be given to a sidecar that reads only `reads`."""

    reads: tuple[int, ...]
    needs: int
    """The oldest schema the config can be rendered for (or the schema it is in)."""
    reasons: tuple[str, ...]

    def message(self) -> str:
        reads = ", ".join(str(s) for s in self.reads) or "none"
        return f"reads schema {reads}; the config needs schema {self.needs}: " + "; ".join(self.reasons)


def _step(version: int) -> Step:
    return STEPS[version - 2]


def _down_one(document: Document, step: Step) -> tuple[Document, list[str], list[str]]:
    """(the document of `step.version - 1`, reasons it is not faithful, fields left out)."""
    reasons: dict[str, None] = {}  # ordered, without repeats (a pattern detector has three tells)
    dropped: list[str] = []
    out = json.loads(json.dumps(document))  # a deep copy: the caller's document stays as it was
    for value in step.values:
        for place in _places(out, value.path):
            if place.parent.get(place.key) == value.value:
                what = value.shown_as or place.below
                reasons[f"{place.owner} uses {what} (schema {step.version}): {value.explanation}"] = None
    if step.meanings is not None:
        for reason in step.meanings(out):
            reasons[reason] = None
    for addition in step.additions:
        for place in _places(out, addition.path):
            if place.key not in place.parent:
                continue
            value = place.parent.pop(place.key)
            if value == addition.default:
                continue
            why = _need(addition.needed, place.parent)
            if why is None:
                dropped.append(place.where)
                continue
            what = addition.shown_as or place.below
            reasons[f"{place.owner} uses {what} (schema {step.version}): {why}"] = None
    out["schemaVersion"] = step.version - 1
    return out, list(reasons), dropped


def render_document(document: Document, schema: int) -> Rendering | SchemaGap:
    """The document of another config `document` rendered for `schema` (older or the same), or why it
    cannot be: a field the older schema lacks that the config needs, or a meaning it would weaken."""
    own = int(document.get("schemaVersion", SCHEMA_VERSION))
    if schema > own or schema not in ACCEPTED_SCHEMA_VERSIONS:
        return SchemaGap((schema,), own, (f"this contract cannot render schema {own} as schema {schema}",))
    out = {k: v for k, v in document.items() if k != "version"}
    reasons: list[str] = []
    dropped: list[str] = []
    for version in range(own, schema, -1):
        out, step_reasons, step_dropped = _down_one(out, _step(version))
        reasons += step_reasons
        dropped += step_dropped
        if step_reasons:
            return SchemaGap((schema,), version, tuple(reasons))
    version_hash = document_hash(out)
    return Rendering(schema, canonical_json({**out, "version": version_hash}), version_hash, tuple(dropped))


def render_for(document: Document, reads: Iterable[int]) -> Rendering | SchemaGap:
    """The document for a sidecar that reads the schemas `reads`: the newest of them this contract can
    render the config as (a sidecar newer than the operator still reads the operator's schema)."""
    reads = tuple(sorted(set(reads)))
    own = int(document.get("schemaVersion", SCHEMA_VERSION))
    usable = [s for s in reads if s <= own and s in ACCEPTED_SCHEMA_VERSIONS]
    if not usable:
        return SchemaGap(reads, own, (f"this operator writes schemas {_listed(ACCEPTED_SCHEMA_VERSIONS)}",))
    # Renderings are downward-closed (each step derives N-1 from N), so if the newest usable schema
    # cannot carry the config, no older one can.
    result = render_document(document, usable[-1])
    return SchemaGap(reads, result.needs, result.reasons) if isinstance(result, SchemaGap) else result


def stored_documents(document: Document) -> dict[str, str]:
    """The ConfigMap keys of a config: its document under its schema's key, and each older schema's
    rendering that is faithful under that schema's key (an unfaithful one is left out, so a sidecar
    reading the mounted directory never falls back to it)."""
    own = int(document.get("schemaVersion", SCHEMA_VERSION))
    out: dict[str, str] = {}
    for schema in ACCEPTED_SCHEMA_VERSIONS:
        if schema > own:
            continue
        rendering = render_document(document, schema)
        if isinstance(rendering, Rendering):
            out[config_key(schema)] = rendering.text
    return out


def strip_to(document: Document, schema: int) -> Document:
    """`document` without the fields schemas after `schema` added, as `schema` writes it. For a config
    that fits `schema` (see `schema_problems`); it does not check."""
    out: Document = json.loads(json.dumps(document))
    for version in range(SCHEMA_VERSION, schema, -1):
        for addition in _step(version).additions:
            for place in _places(out, addition.path):
                place.parent.pop(place.key, None)
    out["schemaVersion"] = schema
    return out


def schema_problems(document: Document, schema: int) -> list[str]:
    """Why a config does not fit `schema` exactly: fields or values that schemas after it added, set to
    something else than their default (a document of `schema` cannot carry them)."""
    problems: list[str] = []
    for version in range(SCHEMA_VERSION, schema, -1):
        step = _step(version)
        for addition in step.additions:
            for place in _places(document, addition.path):
                if place.key in place.parent and place.parent[place.key] != addition.default:
                    problems.append(f"{place.where} is not part of schema {schema} (added in {version})")
        for value in step.values:
            for place in _places(document, value.path):
                if place.parent.get(place.key) == value.value:
                    problems.append(
                        f"{place.where} {value.value!r} is not part of schema {schema} (added in {version})"
                    )
    return problems


def accepted_schemas(version_document: Mapping[str, Any]) -> tuple[int, ...]:
    """The schemas a sidecar reads, from its `GET /config/version` answer (schema 1 when it does not say,
    or says something that is not a list of versions)."""
    value = version_document.get("acceptedSchemaVersions")
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return tuple(sorted(set(value)))
    return LEGACY_ACCEPTED


def _listed(schemas: Iterable[int]) -> str:
    return ", ".join(str(s) for s in schemas)
