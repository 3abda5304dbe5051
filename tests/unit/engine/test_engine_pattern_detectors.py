"""A policy's `pattern` detectors: named RE2 expressions, run over the same normalised text as the built-in
detectors, once per request, in linear time whatever the pattern; invalid ones never reach the engine."""

from __future__ import annotations

import time
from typing import Any

import pytest
from engine_builders import features
from pydantic import ValidationError

from modelroute_contract import DataClassRule, Detector, PolicyConfig, Residency, RouterConfig
from modelroute_sidecar.engine.classification import Classification, Classifier
from modelroute_sidecar.engine.detectors import (
    ContentScan,
    compile_pattern,
    config_pattern_problem,
    detector_problem,
)
from modelroute_sidecar.engine.features import extract_features

EMPLOYEE_ID = r"(?i)\bemp-\d{6}\b"


def classifier(*patterns: tuple[str, str, str], builtin: tuple[tuple[str, str], ...] = ()) -> Classifier:
    """Classes `hr` (eu-west) and `pci`; `patterns` are (name, pattern, data class)."""
    return Classifier.from_config(
        Residency(
            data_classes=(
                DataClassRule(name="hr", allowed_regions=("eu-west",)),
                DataClassRule(name="pci", required_compliance=("pci",)),
            ),
            detectors=(
                *(Detector(kind=k, data_class=c) for k, c in builtin),
                *(Detector(kind="pattern", name=n, pattern=p, data_class=c) for n, p, c in patterns),
            ),
            precedence=("pci", "hr"),
        )
    )


def classify(result: Classification | object) -> tuple[str, str]:
    assert isinstance(result, Classification), result
    return result.data_class, result.source


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("ticket for EMP-123456 please", True),
        ("ticket for emp-123456 please", True),  # (?i) in the policy's pattern
        ("ticket for \uff25\uff2d\uff30\uff0d\uff11\uff12\uff13\uff14\uff15\uff16", True),  # full-width, NFKC
        ("ticket for EMP\u2011123456", True),  # non-breaking hyphen made ASCII
        ("ticket for EMP-123\u200b456", True),  # zero-width space removed
        ("ticket for EMP%2D123456", True),  # URL-encoded dash decoded
        ("ticket for EMP-12345", False),  # five digits: not an employee id
        ("ticket for XEMP-1234567", False),  # word boundaries hold
        ("", False),
    ],
)
def test_a_pattern_finds_an_employee_id_through_normalisation(prompt: str, found: bool) -> None:
    result = classifier(("employee-id", EMPLOYEE_ID, "hr")).classify(
        features(prompt_text=prompt, declared_data_class="public")
    )
    expected = ("hr", "detector:pattern:employee-id") if found else ("public", "header")
    assert classify(result) == expected


def test_a_pattern_sees_all_text_of_the_request() -> None:
    """Tool-call arguments, tool results, `name` fields, the `user` field: the same text the others see."""
    bodies: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": "hi"}], "user": "EMP-654321"},
        {
            "messages": [
                {"role": "user", "content": "look it up"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "hr", "arguments": '{"id": "EMP-654321"}'}}
                    ],
                },
            ]
        },
        {
            "messages": [
                {"role": "tool", "tool_call_id": "t", "content": [{"type": "text", "text": "EMP-654321"}]}
            ]
        },
    ]
    scanner = classifier(("employee-id", EMPLOYEE_ID, "hr"))
    for body in bodies:
        found = extract_features({"model": "auto", **body}, {}, "req", "chat")
        assert classify(scanner.classify(found)) == ("hr", "detector:pattern:employee-id"), body


def test_the_strictest_signal_wins_between_patterns_and_builtin_detectors() -> None:
    scanner = classifier(
        ("employee-id", EMPLOYEE_ID, "hr"), ("badge", r"BADGE-[0-9]{4}", "pci"), builtin=(("email", "hr"),)
    )
    result = scanner.classify(
        features(prompt_text="a@b.eu EMP-123456 BADGE-0042", declared_data_class="public")
    )
    assert isinstance(result, Classification)
    assert (result.data_class, result.source) == ("pci", "detector:pattern:badge")
    assert result.classes == {"hr", "pci"}
    assert result.signals == (
        ("header", "public"),
        ("detector:email", "hr"),
        ("detector:pattern:employee-id", "hr"),
        ("detector:pattern:badge", "pci"),
    )
    assert result.notes  # the laxer declaration is noted


class CountingRegex:
    def __init__(self, pattern: str) -> None:
        self.regex, self.calls = compile_pattern(pattern), 0

    def search(self, text: str) -> object:
        self.calls += 1
        return self.regex.search(text)


def test_a_pattern_runs_once_per_scan_over_the_normalised_text() -> None:
    regex = CountingRegex(r"@")
    scan = ContentScan("jane\uff20example.com")  # full-width at sign: NFKC makes it '@'
    assert scan.matches("at", regex) and scan.matches("at", regex)
    assert regex.calls == 1


def test_patterns_are_compiled_once_when_the_config_loads() -> None:
    scanner = classifier(("employee-id", EMPLOYEE_ID, "hr"))
    ((_, _, compiled),) = scanner.patterns
    assert compiled is compile_pattern(EMPLOYEE_ID)  # the compiled object is kept, not the text


def test_a_catastrophic_backtracking_pattern_costs_linear_time() -> None:
    """`(a+)+$` over a run of 'a' ending in '!' takes exponential time with a backtracking engine (Python's
    `re` does not finish); RE2 takes time proportional to the text."""
    scanner = classifier(("evil", r"(a+)+$", "hr"))

    def cost(length: int) -> float:
        prompt = "a" * length + "!"
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            assert classify(scanner.classify(features(prompt_text=prompt))) == ("public", "")
            best = min(best, time.perf_counter() - started)
        return best

    short, long = cost(5_000), cost(50_000)
    # 10x the text: linear is ~10x; allow 10x more for noise and a fixed floor for timer resolution.
    assert long <= 100 * short + 0.01, (short, long)


SYNTAX_PROBLEMS = [
    ({"kind": "pattern", "name": "bad", "pattern": "(unclosed"}, "missing )"),
    ({"kind": "pattern", "name": "bad", "pattern": r"(?<=x)y"}, "invalid perl operator"),
    ({"kind": "pattern", "name": "bad", "pattern": r"(a)\1"}, "invalid escape sequence"),
]
SHAPE_PROBLEMS = [
    ({"kind": "pattern", "name": "bad", "pattern": "a" * 1025}, "at most 1024"),
    ({"kind": "pattern", "name": "bad", "pattern": ""}, "must not be empty"),
    ({"kind": "pattern", "pattern": "a"}, "name is required"),
    ({"kind": "pattern", "name": "Bad Name", "pattern": "a"}, "not a DNS label"),
    ({"kind": "email", "pattern": "a"}, "only allowed with kind 'pattern'"),
    ({"kind": "email", "name": "a"}, "only allowed with kind 'pattern'"),
]


@pytest.mark.parametrize(("fields", "words"), SHAPE_PROBLEMS)
def test_the_contract_refuses_a_detector_the_engine_could_not_run(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Detector(data_class="hr", **fields)


@pytest.mark.parametrize(("fields", "words"), SYNTAX_PROBLEMS + SHAPE_PROBLEMS)
def test_the_engine_refuses_a_detector_it_could_not_run(fields: dict[str, Any], words: str) -> None:
    """The contract has no RE2 (pydantic and the standard library only): the engine's `detector_problem`
    adds the syntax check, and is what the operator's compiler and admission call."""
    problem = detector_problem(fields["kind"], fields.get("name"), fields.get("pattern"))
    assert problem is not None and words in f"{problem[0]} {problem[1]}", problem


@pytest.mark.parametrize(("fields", "words"), SYNTAX_PROBLEMS)
def test_a_loaded_config_with_a_pattern_that_is_not_re2_is_refused(fields: dict[str, Any], words: str) -> None:
    detector = Detector(data_class="hr", **fields)  # the shape is fine: the contract accepts it
    config = RouterConfig(
        namespace="team-a",
        policies=(
            PolicyConfig(name="p", virtual_models=("auto",), rules=(), residency=Residency(detectors=(detector,))),
        ),
    )
    problem = config_pattern_problem(config)
    assert problem is not None and problem.startswith("policies.0.residency.detectors.0.pattern: pattern is")
    assert words in problem


def test_the_contract_bounds_pattern_detectors_per_policy() -> None:
    def many(count: int, names: tuple[str, ...] | None = None) -> Residency:
        names = names or tuple(f"p{i}" for i in range(count))
        return Residency(
            detectors=tuple(Detector(kind="pattern", name=n, pattern="x", data_class="hr") for n in names)
        )

    assert len(many(32).detectors) == 32
    with pytest.raises(ValidationError, match="33 of kind 'pattern', at most 32"):
        many(33)
    with pytest.raises(ValidationError, match=r"names must be unique \(twin\)"):
        many(2, ("twin", "twin"))
