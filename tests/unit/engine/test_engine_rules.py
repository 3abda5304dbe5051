"""Rule matching: static conditions (model, data class) and request checks (headers, metadata, ranges)."""

from __future__ import annotations

from typing import Any

import pytest
from engine_builders import features

from modelroute_contract import HeaderMatch, RangeMatch, RuleMatch
from modelroute_sidecar.engine.complexity import NOT_SCORED, LazyComplexity
from modelroute_sidecar.engine.rules import (
    CompiledRule,
    compile_match,
    complexity_check,
    first_match,
    header_check,
    metadata_check,
    static_match,
    tokens_check,
)


@pytest.mark.parametrize(
    ("match", "model", "data_class", "expected"),
    [
        (RuleMatch(), "auto", "public", True),
        (RuleMatch(models=("auto",)), "auto", "public", True),
        (RuleMatch(models=("support",)), "auto", "public", False),
        (RuleMatch(data_classes=("pci",)), "auto", "pci", True),
        (RuleMatch(data_classes=("pci",)), "auto", "public", False),
        (RuleMatch(data_classes=("public",)), "auto", "public", True),
        (RuleMatch(models=("auto",), data_classes=("pci",)), "auto", "eu", False),
    ],
)
def test_static_match(match: RuleMatch, model: str, data_class: str, expected: bool) -> None:
    assert static_match(match, model, data_class) is expected


@pytest.mark.parametrize(
    ("name", "values", "headers", "expected"),
    [
        ("x-team", {"a"}, {"x-team": "a"}, True),
        ("X-Team", {"a"}, {"x-team": "a"}, True),  # names are case-insensitive
        ("x-team", {"a"}, {"x-team": "A"}, False),  # values are exact
        ("x-team", {"a", "b"}, {"x-team": "b"}, True),
        ("x-team", {"a"}, {}, False),
        ("x-team", {"a"}, {"x-team": "a "}, False),
    ],
)
def test_header_check(name: str, values: set[str], headers: dict[str, str], expected: bool) -> None:
    assert (
        header_check(name, frozenset(values))(features(headers=headers), LazyComplexity.known(0)) is expected
    )


@pytest.mark.parametrize(
    ("key", "values", "metadata", "expected"),
    [
        ("tier", {"gold"}, {"tier": "gold"}, True),
        ("tier", {"gold"}, {"tier": "silver"}, False),
        ("tier", {"gold"}, {}, False),
        ("tier", {"gold"}, {"Tier": "gold"}, False),
    ],
)
def test_metadata_check(key: str, values: set[str], metadata: dict[str, str], expected: bool) -> None:
    assert (
        metadata_check(key, frozenset(values))(features(metadata=metadata), LazyComplexity.known(0))
        is expected
    )


@pytest.mark.parametrize(
    ("low", "high", "value", "expected"),
    [
        (None, None, 0, True),
        (100, None, 100, True),  # inclusive
        (100, None, 99, False),
        (None, 100, 100, True),
        (None, 100, 101, False),
        (10, 20, 15, True),
        (10, 20, 21, False),
    ],
)
def test_range_checks(low: int | None, high: int | None, value: int, expected: bool) -> None:
    bounds = RangeMatch(min=low, max=high)
    assert tokens_check(bounds)(features(prompt_tokens=value), LazyComplexity.known(0)) is expected
    assert complexity_check(bounds)(features(), LazyComplexity.known(value)) is expected


def compiled(index: int, **match: Any) -> CompiledRule:
    return CompiledRule(index, f"rule-{index}", compile_match(RuleMatch(**match)))


@pytest.mark.parametrize(
    ("request_fields", "complexity", "expected"),
    [
        ({"metadata": {"tier": "gold"}}, 0, 0),
        ({"metadata": {"tier": "gold"}, "headers": {"x-beta": "1"}}, 0, 0),  # order decides
        ({"headers": {"x-beta": "1"}}, 0, 1),
        ({"prompt_tokens": 5000}, 0, 2),
        ({}, 80, 3),
        ({}, 10, 4),
    ],
)
def test_first_match_in_policy_order(request_fields: dict[str, Any], complexity: int, expected: int) -> None:
    rules = (
        compiled(0, metadata={"tier": ("gold",)}),
        compiled(1, headers=(HeaderMatch(name="x-beta", values=("1",)),)),
        compiled(2, prompt_tokens=RangeMatch(min=4000)),
        compiled(3, complexity=RangeMatch(min=70)),
        compiled(4),
    )
    assert first_match(rules, features(**request_fields), LazyComplexity.known(complexity)) == expected


def test_all_conditions_of_a_rule_must_hold() -> None:
    rules = (compiled(0, metadata={"tier": ("gold",), "task": ("code",)}),)
    assert first_match(rules, features(metadata={"tier": "gold"}), LazyComplexity.known(0)) == -1
    assert (
        first_match(rules, features(metadata={"tier": "gold", "task": "code"}), LazyComplexity.known(0)) == 0
    )


def test_no_rule_matches() -> None:
    assert (
        first_match((compiled(0, metadata={"tier": ("gold",)}),), features(), LazyComplexity.known(0)) == -1
    )
    assert first_match((), features(), LazyComplexity.known(0)) == -1


def test_the_complexity_score_is_computed_only_when_a_rule_reaches_a_complexity_condition() -> None:
    rules = (
        compiled(0, metadata={"tier": ("gold",)}),
        compiled(1, metadata={"tier": ("free",)}, complexity=RangeMatch(min=50)),
        compiled(2),
    )
    gold = LazyComplexity("Prove it step by step", 10)
    assert first_match(rules, features(metadata={"tier": "gold"}), gold) == 0
    assert gold.reported == NOT_SCORED
    # the metadata condition fails first: the score is still not needed
    silver = LazyComplexity("Prove it step by step", 10)
    assert first_match(rules, features(metadata={"tier": "silver"}), silver) == 2
    assert silver.reported == NOT_SCORED
    free = LazyComplexity("Prove it step by step", 10)
    assert first_match(rules, features(metadata={"tier": "free"}), free) == 2
    assert free.reported == free.value >= 0
