"""Data classification: every signal a request carries is evaluated, and the strictest class wins.

The signals, all of them, every time:

- the class the client declares (the policy's residency header, or `x-modelroute-data-class`): it must be
  a class the policy defines, or `public`; anything else is refused (400 `invalid_data_class`) rather
  than guessed at;
- the default class of the request's tenant (metadata `tenant`; matched case-insensitively, and taken
  from the client's API key when client keys are configured);
- every content detector that finds its pattern anywhere in the text the request carries (the built-in
  kinds and the policy's own `pattern` detectors, RE2 expressions compiled once when the config loads);
- the policy's default class (a floor every request carries).

Strictness is the order the policy states (`precedence`, strictest first; by default the order its
`dataClasses` are written in). `public` is always the laxest; a class a signal gives that the policy
does not define is stricter than everything (it has no residency rule, so no replica may take it: fail
closed). The strictest class is reported; on a tie, the first signal in the order above names the source.

A declaration can raise strictness, never lower it: a declared class laxer than another signal is kept
strict and noted (`Classification.notes`, which reach the decision, the audit record and the response
header `x-modelroute-data-class-source`). Safety does not rest on the order alone: the request must go
to a replica that satisfies the residency rule of *every* class a signal gave (`classes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelroute_contract import Residency

from .detectors import DETECTORS, ContentScan, compile_pattern
from .filters import PUBLIC
from .model import DecisionError, RequestFeatures


@dataclass(frozen=True, slots=True)
class Classification:
    """A request's data class and where it came from: `header`, `tenant`, `detector:<kind>`,
    `detector:pattern:<name>`, `default`, or empty for unclassified (public) requests."""

    data_class: str
    source: str
    classes: frozenset[str] = frozenset()
    """Every non-public class a signal gave: the plan must satisfy each one."""
    signals: tuple[tuple[str, str], ...] = ()
    """(source, class) of every signal, in evaluation order."""
    notes: tuple[str, ...] = ()
    """A declaration laxer than the result, kept strict."""


UNCLASSIFIED = Classification(PUBLIC, "")


@dataclass(frozen=True, slots=True)
class Classifier:
    """A policy's residency section, compiled for classifying requests."""

    header: str
    """The policy's declaration header, lower-cased."""
    declarable: Mapping[str, str]
    """Lower-cased class name → class name, for every class a client may declare (`public` included)."""
    tenant_defaults: Mapping[str, str]
    """Case-folded tenant → class."""
    detectors: tuple[tuple[str, str], ...]
    """(kind, data class) of the built-in detectors, in the policy's order."""
    default_class: str
    rank: Mapping[str, int]
    """Class → strictness rank, lower is stricter; `public` is the laxest, unknown classes rank -1."""
    patterns: tuple[tuple[str, str, Any], ...] = ()
    """(name, data class, compiled RE2 pattern) of the policy's `pattern` detectors, in its order; they
    run after the built-in kinds."""

    @classmethod
    def from_config(cls, residency: Residency) -> Classifier:
        """Compile a policy's residency section."""
        declarable = {PUBLIC: PUBLIC}
        declarable.update({c.name.lower(): c.name for c in residency.data_classes})
        unknown = [d.kind for d in residency.detectors if d.kind not in DETECTORS and d.kind != "pattern"]
        if unknown:
            raise ValueError(f"unknown detector kinds: {', '.join(unknown)}")
        order = list(residency.precedence) or [c.name for c in residency.data_classes]
        # A defined class the precedence forgets still ranks above public (the compiler refuses that).
        order += [c.name for c in residency.data_classes if c.name not in order]
        rank = {name: i for i, name in enumerate(order) if name != PUBLIC}
        rank[PUBLIC] = len(order)
        return cls(
            header=residency.header.lower(),
            declarable=declarable,
            tenant_defaults={t.casefold(): c for t, c in residency.tenant_defaults.items()},
            detectors=tuple((d.kind, d.data_class) for d in residency.detectors if d.kind != "pattern"),
            # Compiled here, once per config load (the contract's validation already refused bad ones).
            patterns=tuple(
                (d.name, d.data_class, compile_pattern(d.pattern))
                for d in residency.detectors
                if d.kind == "pattern"
            ),
            default_class=residency.default_class,
            rank=rank,
        )

    def declared(self, features: RequestFeatures) -> str | None:
        """The class the client declared: the policy's header, else what `extract_features` read."""
        value = features.headers.get(self.header)
        if value is not None and value.strip():
            return value.strip()
        return features.declared_data_class

    def strictness(self, data_class: str) -> int:
        """Rank of a class, lower is stricter; a class the policy does not define is the strictest."""
        return self.rank.get(data_class, -1)

    def classify(self, features: RequestFeatures) -> Classification | DecisionError:
        """The request's data class: the strictest of every signal (see the module docstring)."""
        signals: list[tuple[str, str]] = []
        declared = self.declared(features)
        declared_name = None
        if declared is not None:
            declared_name = self.declarable.get(declared.lower())
            if declared_name is None:
                choices = ", ".join(sorted(self.declarable.values()))
                return DecisionError(
                    400,
                    "invalid_data_class",
                    f"data class '{declared}' is not defined by this policy; declare one of: {choices}",
                )
            signals.append(("header", declared_name))
        tenant = features.metadata.get("tenant")
        if tenant is not None and self.tenant_defaults:
            tenant_class = self.tenant_defaults.get(tenant.casefold())
            if tenant_class is not None:
                signals.append(("tenant", tenant_class))
        if self.detectors or self.patterns:
            text = features.scan_text or features.prompt_text
            if text:
                scan = ContentScan(text)
                for kind, data_class in self.detectors:
                    if scan.finds(kind):
                        signals.append((f"detector:{kind}", data_class))
                for name, data_class, regex in self.patterns:
                    if scan.matches(name, regex):
                        signals.append((f"detector:pattern:{name}", data_class))
        if self.default_class:
            signals.append(("default", self.default_class))
        if not signals:
            return UNCLASSIFIED
        source, chosen = min(signals, key=lambda signal: self.strictness(signal[1]))
        if chosen == PUBLIC:
            return Classification(PUBLIC, source, frozenset(), tuple(signals))
        notes: tuple[str, ...] = ()
        if declared_name is not None and self.strictness(declared_name) > self.strictness(chosen):
            notes = (
                f"declared data class '{declared_name}' is laxer than '{chosen}' (from {source}); "
                f"kept '{chosen}'",
            )
        classes = frozenset(c for _, c in signals if c != PUBLIC)
        return Classification(chosen, source, classes, tuple(signals), notes)
