"""The one residency predicate: may a replica process data of the classes a request carries?

The sidecar's engine (candidate filtering) and the operator's admission webhook (a Canary or a policy
that would route restricted data to a replica that may not hold it) both call `residency_violation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import DataClassRule


def residency_violation(
    region: str,
    compliance: Iterable[str],
    rules: Sequence[DataClassRule],
    undefined: Sequence[str] = (),
) -> tuple[str, str] | None:
    """The one residency predicate: may a replica in `region` carrying `compliance` labels process data
    of every class in `rules` (and of the classes named in `undefined`, which have no rule)?

    None when it may; else (`region` or `compliance`, the reason). Every class must hold: the allowed
    regions are intersected, the required labels united. A class without a rule allows nowhere."""
    if undefined:
        return "compliance", f"data class '{undefined[0]}' has no residency rule"
    labels = frozenset(compliance)
    for rule in rules:
        if rule.allowed_regions and region not in rule.allowed_regions:
            return (
                "region",
                f"region '{region}' not allowed for data class '{rule.name}' "
                f"(allowed: {', '.join(sorted(rule.allowed_regions))})",
            )
    for rule in rules:
        missing = set(rule.required_compliance) - labels
        if missing:
            return (
                "compliance",
                f"missing compliance {', '.join(sorted(missing))} required for data class '{rule.name}'",
            )
    return None
