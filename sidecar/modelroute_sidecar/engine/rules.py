"""Rule matching: which of a policy's ordered rules a request falls under (the first whose match holds).

Each rule is compiled once into the checks it actually has (most rules test one or two things), so
evaluating twenty rules costs a handful of set lookups. Every condition given must hold; a rule with no
condition matches every request. Headers match on the lower-cased name and the exact value; metadata on
the key and the exact value; ranges are inclusive and a missing bound is open; `dataClasses` names
`public` for requests with no restricted data.

The conditions on the virtual model and the data class are known before any request: the index keeps,
per (model, data class), only the rules they admit, so a decision evaluates just the request-dependent
checks of those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from modelroute_contract import HEURISTIC_SCORER, RangeMatch, RuleMatch, SemanticMatch

from .complexity import LazyComplexity
from .model import RequestFeatures

Check = Callable[[RequestFeatures, LazyComplexity], bool]
"""A compiled request condition: (features, complexity score computed on demand) → holds."""

_OPEN_LOW, _OPEN_HIGH = -(2**63), 2**63
"""Stand-ins for a missing range bound, so a range check is one chained comparison."""


def static_match(match: RuleMatch, model: str, data_class: str) -> bool:
    """The conditions that depend only on (virtual model, data class), which the index resolves when the
    config loads: `models` and `dataClasses`."""
    models_ok = not match.models or model in match.models
    return models_ok and (not match.data_classes or data_class in match.data_classes)


def header_check(name: str, values: frozenset[str]) -> Check:
    """Header `name` (any case) has exactly one of `values`; a missing header never matches."""
    name = name.lower()
    return lambda features, _complexity: features.headers.get(name) in values


def metadata_check(key: str, values: frozenset[str]) -> Check:
    """Metadata `key` has exactly one of `values`; missing metadata never matches."""
    return lambda features, _complexity: features.metadata.get(key) in values


def bounds_of(bounds: RangeMatch) -> tuple[int, int]:
    """An inclusive range with open bounds made explicit."""
    low = _OPEN_LOW if bounds.min is None else bounds.min
    return low, _OPEN_HIGH if bounds.max is None else bounds.max


def tokens_check(bounds: RangeMatch) -> Check:
    """The prompt token estimate is within the inclusive `bounds`."""
    low, high = bounds_of(bounds)
    return lambda features, _complexity: low <= features.prompt_tokens <= high


def complexity_check(bounds: RangeMatch, scorer: str = "") -> Check:
    """The complexity score (the heuristic's, or the learned model `scorer`'s) is within `bounds`."""
    low, high = bounds_of(bounds)
    if scorer in ("", HEURISTIC_SCORER):
        return lambda _features, complexity: low <= complexity.value <= high
    return lambda _features, complexity: low <= complexity.learned(scorer) <= high


def semantic_check(match: SemanticMatch) -> Check:
    """The request's best semantic route is `match.route`, at least `match.min_similarity` similar."""
    route, least = match.route, match.min_similarity

    def check(_features: RequestFeatures, complexity: LazyComplexity) -> bool:
        best, similarity = complexity.semantic()
        return best == route and similarity >= least

    return check


def compile_match(match: RuleMatch) -> tuple[Check, ...]:
    """The request-dependent checks of a rule match (`static_match` covers the rest), cheapest first: the
    complexity score last, so it is computed only for requests every other condition admits."""
    checks: list[Check] = []
    checks.extend(metadata_check(key, frozenset(values)) for key, values in match.metadata.items())
    checks.extend(header_check(h.name, frozenset(h.values)) for h in match.headers)
    if match.prompt_tokens is not None:
        checks.append(tokens_check(match.prompt_tokens))
    if match.complexity is not None and match.complexity_scorer in ("", HEURISTIC_SCORER):
        checks.append(complexity_check(match.complexity))
    # Learned conditions last: they embed the prompt (tens of µs); both share one embedding.
    if match.semantic is not None:
        checks.append(semantic_check(match.semantic))
    if match.complexity is not None and match.complexity_scorer not in ("", HEURISTIC_SCORER):
        checks.append(complexity_check(match.complexity, match.complexity_scorer))
    return tuple(checks)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule's position in its policy, name and request-dependent checks."""

    index: int
    name: str
    checks: tuple[Check, ...]

    def matches(self, features: RequestFeatures, complexity: LazyComplexity) -> bool:
        """Whether every check holds."""
        # A plain loop: `all()` over a generator costs a frame per rule on the hot path.
        for check in self.checks:  # noqa: SIM110
            if not check(features, complexity):
                return False
        return True


def first_match(
    rules: tuple[CompiledRule, ...], features: RequestFeatures, complexity: LazyComplexity
) -> int:
    """Policy index of the first rule that matches, or -1. `rules` are those `static_match` admits for the
    request's model and data class, in policy order."""
    # `CompiledRule.matches` inlined: a typical request walks past most of a policy's rules, and a call
    # frame per rule was a tenth of the decision.
    for rule in rules:
        for check in rule.checks:
            if not check(features, complexity):
                break
        else:
            return rule.index
    return -1


def describe_request(features: RequestFeatures, complexity: int, data_class: str) -> str:
    """What rule matching saw, for the `no_matching_rule` message (no prompt text, no header values)."""
    keys = ", ".join(f"{k}={v}" for k, v in sorted(features.metadata.items())) or "none"
    return (
        f"model '{features.model}', data class '{data_class}', ~{features.prompt_tokens} prompt tokens, "
        f"complexity {complexity}, metadata: {keys}"
    )
