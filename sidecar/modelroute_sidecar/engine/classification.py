"""Data classification: which data class a request carries, and where that answer came from.

In order, the first that gives an answer wins:

1. a class the client declares in the policy's residency header (or `x-modelroute-data-class`); it must
   be a class the policy defines, or `public` — anything else is refused (400 `invalid_data_class`)
   rather than guessed at;
2. the default class of the request's tenant (metadata `tenant`);
3. the content detectors, in the order the policy lists them: the first whose pattern is in the prompt
   gives its class (policies list the strictest first);
4. the policy's default class;
5. `public`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelroute_sidecar.contract import Residency

from .detectors import DETECTORS, ContentScan
from .filters import PUBLIC
from .model import DecisionError, RequestFeatures


@dataclass(frozen=True, slots=True)
class Classification:
    """A request's data class and where it came from: `header`, `tenant`, `detector:<kind>`, `default`,
    or empty for unclassified (public) requests."""

    data_class: str
    source: str


UNCLASSIFIED = Classification(PUBLIC, "")


@dataclass(frozen=True, slots=True)
class Classifier:
    """A policy's residency section, compiled for classifying requests."""

    header: str
    """The policy's declaration header, lower-cased."""
    declarable: Mapping[str, str]
    """Lower-cased class name → class name, for every class a client may declare (`public` included)."""
    tenant_defaults: Mapping[str, str]
    detectors: tuple[tuple[str, str], ...]
    """(kind, data class) in the policy's order."""
    default_class: str

    @classmethod
    def from_config(cls, residency: Residency) -> Classifier:
        """Compile a policy's residency section."""
        declarable = {PUBLIC: PUBLIC}
        declarable.update({c.name.lower(): c.name for c in residency.data_classes})
        unknown = [d.kind for d in residency.detectors if d.kind not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector kinds: {', '.join(unknown)}")
        return cls(
            header=residency.header.lower(),
            declarable=declarable,
            tenant_defaults=dict(residency.tenant_defaults),
            detectors=tuple((d.kind, d.data_class) for d in residency.detectors),
            default_class=residency.default_class,
        )

    def declared(self, features: RequestFeatures) -> str | None:
        """The class the client declared: the policy's header, else what `extract_features` read."""
        value = features.headers.get(self.header)
        if value is not None and value.strip():
            return value.strip()
        return features.declared_data_class

    def classify(self, features: RequestFeatures) -> Classification | DecisionError:
        """The request's data class (see the module docstring for the order)."""
        declared = self.declared(features)
        if declared is not None:
            name = self.declarable.get(declared.lower())
            if name is None:
                choices = ", ".join(sorted(self.declarable.values()))
                return DecisionError(
                    400,
                    "invalid_data_class",
                    f"data class '{declared}' is not defined by this policy; declare one of: {choices}",
                )
            return Classification(name, "header")
        tenant = features.metadata.get("tenant")
        if tenant is not None and tenant in self.tenant_defaults:
            return Classification(self.tenant_defaults[tenant], "tenant")
        if self.detectors and features.prompt_text:
            scan = ContentScan(features.prompt_text)
            for kind, data_class in self.detectors:
                if scan.finds(kind):
                    return Classification(data_class, f"detector:{kind}")
        if self.default_class:
            return Classification(self.default_class, "default")
        return UNCLASSIFIED
