"""The complexity score: deterministic, bounded, and higher for prompts with code, math and many steps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelroute_sidecar.engine.complexity import (
    CODE_CAP,
    LENGTH_CAP,
    MATH_CAP,
    NOT_SCORED,
    STEPS_CAP,
    WINDOW,
    LazyComplexity,
    score_code,
    score_complexity,
    score_length,
    score_math,
    score_steps,
)


def cues(text: str) -> frozenset[str]:
    """The cue words of a lower-cased text, as score_complexity computes them."""
    from modelroute_sidecar.engine.complexity import cue_words

    return cue_words().all.intersection(text.split())


@pytest.mark.parametrize(
    ("tokens", "points"),
    [(0, 0), (32, 0), (64, 5), (128, 10), (256, 15), (512, 20), (1024, 25), (100_000, LENGTH_CAP)],
)
def test_length(tokens: int, points: int) -> None:
    assert score_length(tokens) == points


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("what is the capital of france?", 0),
        ("```python\nprint(1)\n```", 15),
        ("if (a && b) { x[0] = 1; }", 3),  # 7 code symbols: & & { [ ] ; }
        ("```\nfor (;;) { a[i] = b[i] << 2; if (x || y) {} }\n```", 15 + 7),  # fence, 15 symbols
        ("```\n" + "{};" * 20 + "\n```", CODE_CAP),
    ],
)
def test_code(text: str, points: int) -> None:
    assert score_code(text) == points


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("tell me a story about a cat.", 0),
        ("solve for x: x = 3y", 6 + 3),
        ("compute 2^8", 6 + 4 + 3),
        ("what is \\frac{a}{b}", 4),
        ("is ∑ the same as ∫?", 4),
        ("the theorem on the matrix equation x = 2 and its integral", 6 + 10),  # words capped at 10
        ("the theorem on the matrix equation x^2 = 2 and its integral", MATH_CAP),
    ],
)
def test_math(text: str, points: int) -> None:
    assert score_math(text, cues(text)) == points


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("hello", 0),
        ("think step by step", 10),
        ("explain step-by-step", 10),
        ("one step at a time", 0),
        ("todo:\n1. wash\n2. dry\n", 8),
        ("1. only one item", 0),
        ("first boil water, then add pasta", 6),
        ("why?", 4),
        ("analyze and compare the trade-offs", 12),
        ("first analyze, then compare, prove and justify it step by step:\n1. a\n2. b", STEPS_CAP),
    ],
)
def test_steps(text: str, points: int) -> None:
    assert score_steps(text, text, cues(text)) == points


def test_ordering_of_typical_prompts() -> None:
    simple = score_complexity("What is the capital of France?", 10)
    code = score_complexity("Fix this:\n```python\ndef f(x):\n    return x[0] == {}\n```", 40)
    proof = score_complexity(
        "Prove step by step that the integral of x^2 from 0 to 1 equals 1/3. First state the theorem, "
        "then derive it:\n1. setup\n2. compute\n3. conclude",
        60,
    )
    assert simple < code < proof
    assert simple <= 5
    assert proof >= 50


def test_cues_are_read_at_the_end_of_long_prompts() -> None:
    early = "Prove this step by step. " + "filler text. " * 400
    late = "filler text. " * 400 + "Prove this step by step."
    assert score_complexity(late, 1300) > score_complexity(early, 1300)
    assert len(early) > WINDOW


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3000), st.integers(min_value=0, max_value=10**6))
def test_always_between_0_and_100_and_deterministic(text: str, tokens: int) -> None:
    score = score_complexity(text, tokens)
    assert 0 <= score <= 100
    assert score == score_complexity(text, tokens)


def test_lazy_score_is_computed_once_on_first_use() -> None:
    score = LazyComplexity("Prove it step by step", 10)
    assert score.reported == NOT_SCORED
    assert score.value == score_complexity("Prove it step by step", 10)
    assert score.reported == score.value
    assert LazyComplexity.known(42).value == 42
